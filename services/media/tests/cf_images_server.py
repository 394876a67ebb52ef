"""A local stand-in for Cloudflare Images: the v1 API (upload, details, blob, delete) and signed delivery.

A stdlib HTTP server in a thread (like services/notify/tests/own_notify.py's HttpRecorder). It checks the
Bearer token, answers in Cloudflare's envelope ({success, errors, messages, result}), gives an upload
without a custom id a fresh UUID, refuses a second upload under one custom id (code 5409) and a custom
id together with `requireSignedURLs=true` (Cloudflare: images with a custom id cannot be private; the
code here, 5400, is ours). Delivery, `/{account_hash}/{image_id}/{variant}`: an image uploaded with
`requireSignedURLs=true` is served ONLY when `?exp=&sig=` verify (`sig` the HMAC-SHA256 of the path and
`?exp=...` under the signing key, `exp` in the future), so a test that fetches our URL proves the
signature verifies and one without it proves the image is private; a public image (a legacy custom id)
is served to anyone, though a `sig` that is present must still verify. `fail_with` makes every request
answer that status (500, 429) to test transient failures.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class StoredImage:
    data: bytes
    content_type: str
    filename: str
    require_signed: bool = False
    metadata: str = ""


@dataclass
class CloudflareImagesServer:
    account_id: str = "acct-0123456789"
    account_hash: str = "hash-AbC123"
    api_token: str = "cf-test-token"
    signing_key: str = "cf-signing-key-for-tests"
    fail_with: int | None = None
    images: dict[str, StoredImage] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/client/v4"

    def start(self) -> CloudflareImagesServer:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _envelope(
                self, status: int, result: Any = None, code: int | None = None, message: str = ""
            ) -> None:
                errors = [] if code is None else [{"code": code, "message": message}]
                body = {"success": code is None, "errors": errors, "messages": [], "result": result}
                self._reply(status, json.dumps(body).encode())

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with stand_in.lock:
                    stand_in.requests.append((self.command, self.path))
                if stand_in.fail_with is not None:
                    self._envelope(
                        stand_in.fail_with, code=10000 + stand_in.fail_with, message="failing on purpose"
                    )
                    return
                parts = urlsplit(self.path)
                api_prefix = f"/client/v4/accounts/{stand_in.account_id}/images/v1"
                if parts.path.startswith(api_prefix):
                    if self.headers.get("Authorization") != f"Bearer {stand_in.api_token}":
                        self._envelope(401, code=10000, message="Authentication error")
                        return
                    self._api(parts.path[len(api_prefix) :], body)
                elif parts.path.startswith(f"/{stand_in.account_hash}/") and self.command == "GET":
                    self._deliver(parts.path, parts.query)
                else:
                    self._reply(404, b"not found", "text/plain")

            def _api(self, rest: str, body: bytes) -> None:
                if rest == "" and self.command == "POST":
                    self._upload(body)
                    return
                # The custom id arrives as one percent-encoded segment (its slashes as %2F).
                encoded, _, tail = rest.lstrip("/").partition("/")
                image_id = unquote(encoded)
                with stand_in.lock:
                    image = stand_in.images.get(image_id)
                    if self.command == "DELETE" and image is not None:
                        del stand_in.images[image_id]
                if image is None:
                    self._envelope(404, code=5404, message="Image not found")
                elif self.command == "GET" and tail == "blob":
                    self._reply(200, image.data, image.content_type)
                elif self.command == "GET" and tail == "":
                    self._envelope(200, _details(image_id, image))
                elif self.command == "DELETE" and tail == "":
                    self._envelope(200, {})
                else:
                    self._envelope(405, code=10405, message="method not allowed")

            def _upload(self, body: bytes) -> None:
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode() + body
                )
                fields: dict[str, Any] = {}
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    fields[str(name)] = part
                if "file" not in fields:
                    self._envelope(400, code=5400, message="file is required")
                    return
                upload = fields["file"]
                require_signed = (
                    "requireSignedURLs" in fields
                    and fields["requireSignedURLs"].get_content().strip().lower() == "true"
                )
                if "id" in fields and require_signed:
                    self._envelope(
                        400, code=5400, message="Bad request: custom ids cannot require signed URLs"
                    )
                    return
                image_id = fields["id"].get_content().strip() if "id" in fields else str(uuid.uuid4())
                stored = StoredImage(
                    upload.get_payload(decode=True),
                    upload.get_content_type(),
                    upload.get_filename() or "",
                    require_signed,
                    fields["metadata"].get_content() if "metadata" in fields else "",
                )
                with stand_in.lock:
                    if image_id in stand_in.images:
                        self._envelope(409, code=5409, message="Resource already exists")
                        return
                    stand_in.images[image_id] = stored
                self._envelope(200, _details(image_id, stored))

            def _deliver(self, path: str, query: str) -> None:
                # /{hash}/{image id, slashes and all}/{variant}
                image_id = unquote(path[len(stand_in.account_hash) + 2 :].rsplit("/", 1)[0])
                with stand_in.lock:
                    image = stand_in.images.get(image_id)
                params = parse_qs(query)
                exp, sig = params.get("exp", [""])[0], params.get("sig", [""])[0]
                if sig or (image is not None and image.require_signed):
                    expected = hmac.new(
                        stand_in.signing_key.encode(), f"{path}?exp={exp}".encode(), hashlib.sha256
                    ).hexdigest()
                    if not exp.isdigit() or not hmac.compare_digest(sig, expected):
                        self._reply(403, b"bad signature", "text/plain")
                        return
                    if int(exp) < time.time():
                        self._reply(403, b"expired", "text/plain")
                        return
                if image is None:
                    self._reply(404, b"not found", "text/plain")
                else:
                    self._reply(200, image.data, image.content_type)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _details(image_id: str, image: StoredImage) -> dict[str, Any]:
    """The `result` of an upload or a details request, as Cloudflare shapes it (the fields we read)."""
    meta = json.loads(image.metadata) if image.metadata else {}
    return {
        "id": image_id,
        "filename": image.filename,
        "requireSignedURLs": image.require_signed,
        "meta": meta,
    }


@dataclass
class StatusServer:
    """Answers every request with one status and an S3-style XML error: an R2 that is failing (500) or
    throttling (429)."""

    status: int
    hits: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StatusServer:
        server = self
        codes = {500: "InternalError", 503: "ServiceUnavailable", 429: "SlowDown"}

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                server.hits += 1
                code = codes.get(server.status, "Error")
                body = f"<Error><Code>{code}</Code><Message>failing on purpose</Message></Error>".encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
