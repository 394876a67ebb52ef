"""The web's gateway client against a real local HTTP server: what it forwards, and what it never keeps."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from starlette.requests import Request

from web.api import Gateway
from web.app import create_app
from web.session import Session
from web.settings import WebSettings


class Echo(BaseHTTPRequestHandler):
    """Answers with the headers it got, and sets a portal cookie as the gateway's confirm does."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "cookie": self.headers.get("Cookie", ""),
                "forwarded": self.headers.get("X-Forwarded-For", ""),
                "agent": self.headers.get("User-Agent", ""),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "client_session=someone-elses-session; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def browser_request(agent: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"user-agent", agent.encode())],
        "state": {"session": Session(), "client_ip": "203.0.113.9", "read_only": False},
    }
    return Request(scope)


async def test_the_shared_client_keeps_no_cookie_and_forwards_the_person(echo: str) -> None:
    gateway = Gateway(echo, timeout=5)
    try:
        first = await gateway.call(browser_request("Phone/1"), "GET", "/a", auth="none")
        second = await gateway.call(browser_request("Desk/2"), "GET", "/b", auth="none")
    finally:
        await gateway.close()
    assert (
        first["cookie"] == "" and second["cookie"] == ""
    )  # another person's portal cookie never rides along
    assert second["forwarded"] == "203.0.113.9"
    assert second["agent"] == "Desk/2"  # photo links may be bound to the browser that asked


def test_the_web_does_not_log_the_urls_it_calls() -> None:
    # Portal link and NPS tokens travel in some of them; httpx logs every URL at INFO.
    create_app(WebSettings(app_env="test"))
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
