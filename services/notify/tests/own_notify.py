"""What the notify delivery tests share.

- `OwnNotify`: a notify process of a test's own configuration, with its own database (notify schema
  only) and its own nats-server. Its delivery loop claims rows across orgs, so on the session's
  database it would take the session notify's rows (and its durable consumers the session's events);
  on its own it sends only what its tests enqueue.
- `HttpRecorder`: a local HTTP server (stdlib, in a thread) that records what it receives and answers
  with a status the test sets: the SendGrid API and webhook receivers of these tests.
- Enqueueing through notify's typed stub (conftest's `notify_at`), and the outbox row as the
  superuser sees it, waited for with tools.testkit.eventually.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx
import jwt
import psycopg
import psycopg.rows
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cws.notify.v1 import notify_pb2
from google.protobuf.struct_pb2 import Struct

from libs.common.migrate import migrate
from tools.devstack import NatsServer, drop_database, ensure_database, with_user
from tools.processes import ServiceProc, service_proc
from tools.testkit import as_role, eventually

if TYPE_CHECKING:
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub

APP_ROLE = "cws_app"


# --- a notify process of one's own -----------------------------------------------------------------


@dataclass
class OwnNotify:
    proc: ServiceProc
    admin_url: str
    db_name: str
    nats: NatsServer
    server_admin_url: str
    # The process's environment, for a second process on the same database and NATS.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.proc.target

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.proc.http_port}/metrics"

    def stop(self) -> None:
        self.proc.stop()
        self.nats.stop()
        drop_database(self.server_admin_url, self.db_name)


def stop_all(owns: list[OwnNotify]) -> None:
    """Signal every process first, so they shut down side by side rather than one after another."""
    for own in owns:
        if own.proc.alive and own.proc.process is not None:
            own.proc.process.send_signal(signal.SIGTERM)
    for own in owns:
        own.stop()


def start_own_notify(stack: Any, label: str, env: dict[str, str]) -> OwnNotify:
    """Started, not yet ready: start several, then `wait_ready` each (they boot in parallel)."""
    db_name = f"{stack.admin_url.rsplit('/', 1)[1]}_{label.replace('-', '_')}_{secrets.token_hex(2)}"
    admin_url = ensure_database(stack.admin_url, db_name)
    migrate(admin_url, APP_ROLE, None, only=["notify"])
    nats = NatsServer(stack.work_dir / f"nats-{label}" / "js").start()
    nats.provision_streams()
    full_env = {
        **stack.env(),
        "DATABASE_URL": with_user(admin_url, APP_ROLE),
        "MIGRATIONS_DATABASE_URL": admin_url,
        "NATS_URL": nats.url,
        **nats.password_env(),
        "EMAIL_FROM": "bookings@cws.test",
        "EMAIL_MODE": "off",
        "OUTBOX_BASE_BACKOFF_SECONDS": "0.2",
        "OUTBOX_MAX_BACKOFF_SECONDS": "1",
        "OUTBOX_POLL_SECONDS": "0.2",
        "CIRCUIT_RESET_SECONDS": "1",
        **env,
    }
    proc = service_proc("notify", full_env, stack.work_dir / "logs", label=label).start()
    return OwnNotify(proc, admin_url, db_name, nats, stack.admin_url, full_env)


# --- a local HTTP server that records requests ------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    """Answers every request with `status` (or `respond(request) -> status`) and an empty JSON object
    (or `answer(request) -> (status, json)`), recording each one."""

    status: int = 200
    respond: Callable[[Recorded], int] | None = None
    answer: Callable[[Recorded], tuple[int, Any]] | None = None
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> HttpRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Recorded(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with recorder.lock:
                    recorder.requests.append(request)
                status = recorder.respond(request) if recorder.respond else recorder.status
                body = b"{}"
                if recorder.answer:
                    status, reply = recorder.answer(request)
                    body = json.dumps(reply).encode()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def at(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


# --- Google (OAuth token endpoint and Sheets API), for EXPORT_MODE=sheets ------------------------------

SPREADSHEET = "1AbC-sheet_id"
CLIENT_EMAIL = "cws-notify@example-project.iam.gserviceaccount.com"
# google-auth addresses the assertion to Google's token endpoint whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


class GoogleStandIn:
    """The token endpoint and the Sheets API, each a recording local HTTP server, and the service
    account whose key the token endpoint checks (the JWT google-auth signs, verified with its public
    half)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sheets_status = 200
        self.tokens_issued = 0
        self.token_server = HttpRecorder(answer=self._token).start()
        self.sheets = HttpRecorder(answer=self._append).start()

    @property
    def token_uri(self) -> str:
        return f"{self.token_server.url}/token"

    def write_key(self, directory: Path) -> Path:
        """The service account's JSON key file, pointing at this token endpoint."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        path = directory / "service-account.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "example-project",
                    "private_key_id": "k1",
                    "private_key": pem,
                    "client_email": CLIENT_EMAIL,
                    "client_id": "1",
                    "token_uri": self.token_uri,
                }
            )
        )
        return path

    def _token(self, request: Recorded) -> tuple[int, Any]:
        form = parse_qs(request.body.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        claims = jwt.decode(
            form["assertion"][0], self.key.public_key(), algorithms=["RS256"], audience=GOOGLE_TOKEN_AUDIENCE
        )
        assert claims["iss"] == CLIENT_EMAIL
        assert claims["scope"] == "https://www.googleapis.com/auth/spreadsheets"
        self.tokens_issued += 1
        return 200, {
            "access_token": f"token-{self.tokens_issued}",
            "expires_in": 3600,
            "token_type": "Bearer",
        }

    def _append(self, request: Recorded) -> tuple[int, Any]:
        if self.sheets_status != 200:
            return self.sheets_status, {
                "error": {"code": self.sheets_status, "message": "refused by the test"}
            }
        return 200, {"spreadsheetId": SPREADSHEET, "updates": {"updatedRows": 1}}

    def stop(self) -> None:
        self.token_server.stop()
        self.sheets.stop()


# --- enqueueing and the outbox ---------------------------------------------------------------------


def struct(value: dict[str, Any]) -> Struct:
    message = Struct()
    message.update(value)
    return message


async def enqueue(
    stub: NotifyServiceAsyncStub, org_id: str, kind: str, payload: dict[str, Any], dedupe_key: str = ""
) -> notify_pb2.EnqueueResponse:
    """Enqueue as the org's owner."""
    request = notify_pb2.EnqueueRequest(
        kind=kind, dedupe_key=dedupe_key or f"test:{uuid.uuid4()}", payload=struct(payload)
    )
    return await stub.Enqueue(request, metadata=as_role(org_id, "OWNER"), timeout=15)


def email_payload(to: str, **extra: Any) -> dict[str, Any]:
    return {
        "to": to,
        "subject": f"Hello {to}",
        "text": "Your booking is confirmed.",
        "email_type": "test",
        **extra,
    }


def mailbox() -> str:
    return f"client-{uuid.uuid4().hex[:12]}@example.com"


async def outbox_row(url: str, outbox_id: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        conn.row_factory = psycopg.rows.dict_row  # type: ignore[assignment]
        cursor = await conn.execute("SELECT * FROM notify.outbox_events WHERE id = %s", (outbox_id,))
        row = await cursor.fetchone()
    assert row is not None, outbox_id
    return dict(row)


async def wait_row(
    url: str, outbox_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The row once `predicate` holds; fails with the row as it last was."""

    async def matching() -> dict[str, Any]:
        row = await outbox_row(url, outbox_id)
        assert predicate(row), row
        return row

    return await eventually(matching, timeout=timeout, message=f"outbox row {outbox_id}")


async def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text exposition, or None when it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None
