"""A gate in front of moto's S3 server that checks presigned URLs as R2 and S3 do.

moto serves presigned GETs without looking at their signature or expiry, so on its own it cannot show
that a link minted with a TTL stops working. This server forwards every request to moto, but a request
carrying `X-Amz-Signature` in its query is first checked: SigV4 query signature recomputed with the
access key's secret (method, path, sorted query without the signature, the signed `host` header,
UNSIGNED-PAYLOAD) and `X-Amz-Date + X-Amz-Expires` not passed. Otherwise 403 with S3's XML error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect", "host"}


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def presign_problem(
    method: str, raw_path: str, host: str, secrets: dict[str, str], now: dt.datetime
) -> str | None:
    """Why this presigned request is refused, or None when it verifies."""
    parts = urlsplit(raw_path)
    params = parse_qsl(parts.query, keep_blank_values=True)
    values = dict(params)
    try:
        access_key, date, region, service, terminal = values["X-Amz-Credential"].split("/")
        amz_date = values["X-Amz-Date"]
        expires = int(values["X-Amz-Expires"])
        signed_headers = values["X-Amz-SignedHeaders"]
        signature = values["X-Amz-Signature"]
    except (KeyError, ValueError):
        return "AuthorizationQueryParametersError"
    secret = secrets.get(access_key)
    if secret is None:
        return "InvalidAccessKeyId"
    signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if now > signed_at + dt.timedelta(seconds=expires):
        return "Request has expired"
    if signed_headers != "host":
        return "unexpected signed headers"
    query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(params)
        if name != "X-Amz-Signature"
    )
    canonical = "\n".join([method, parts.path, query, f"host:{host}\n", signed_headers, "UNSIGNED-PAYLOAD"])
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, terminal):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "SignatureDoesNotMatch"


@dataclass
class PresignGate:
    upstream: str
    secrets: dict[str, str]
    refused: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> PresignGate:
        gate = self
        client = httpx.Client(base_url=self.upstream, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 so botocore's `Expect: 100-continue` is answered at once.
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if "X-Amz-Signature=" in self.path:
                    problem = presign_problem(
                        self.command,
                        self.path,
                        self.headers.get("Host", ""),
                        gate.secrets,
                        dt.datetime.now(dt.UTC),
                    )
                    if problem is not None:
                        gate.refused += 1
                        xml = f"<Error><Code>AccessDenied</Code><Message>{problem}</Message></Error>".encode()
                        self._send(403, [("Content-Type", "application/xml")], xml)
                        return
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
                response = client.request(self.command, self.path, headers=headers, content=body)
                self._send(response.status_code, list(response.headers.multi_items()), response.content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._client = client
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._client.close()
