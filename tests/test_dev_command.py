"""`make dev` (python -m tools.dev) as a newcomer runs it: against given DATABASE_URL / NATS_URL,
twice in a row, with the printed login line working and Ctrl-C stopping everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx

from tools.dev import SERVICES
from tools.devstack import ROOT, free_port


def _run_dev(stack, env_extra: dict[str, str]) -> tuple[int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": stack.app_url,
        "MIGRATIONS_DATABASE_URL": stack.admin_url,
        "NATS_URL": stack.nats.url,
        **env_extra,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    deadline = time.monotonic() + 90
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "Press Ctrl-C to stop." in line or time.monotonic() > deadline:
                break
        text = "".join(output)
        assert "suite is running" in text, text
        base = f"http://127.0.0.1:{env_extra['GATEWAY_PORT']}"
        login = httpx.post(
            f"{base}/v1/auth/login",
            json={"email": env_extra["DEV_OWNER_EMAIL"], "password": env_extra["DEV_OWNER_PASSWORD"]},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        profile = httpx.get(
            f"{base}/v1/admin/profile", auth=("admin", "Demo-admin-basic-password-1"), timeout=10
        )
        assert profile.status_code == 200, profile.text
        assert profile.json()["org_id"] == login.json()["org_id"]
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        output.append(rest or "")
    return proc.returncode, "".join(output)


def test_make_dev_runs_twice_and_stops_cleanly(stack):
    email = f"dev-owner-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(2):
        # Every port on a free one, so a developer's own `make dev` may run beside the tests.
        ports = {"GATEWAY_PORT": str(free_port())}
        for service in SERVICES:
            ports[f"{service.upper()}_GRPC_PORT"] = str(free_port())
            ports[f"{service.upper()}_HTTP_PORT"] = str(free_port())
        code, output = _run_dev(
            stack,
            {
                **ports,
                "DEV_OWNER_EMAIL": email,
                "DEV_OWNER_PASSWORD": "Dev-owner-password-42",
                "DEFAULT_ORG_ID": "",
            },
        )
        assert code == 0, output
        assert "stopping..." in output
        for port in ports.values():
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                raise AssertionError(f"port {port} still answers after Ctrl-C")
            except httpx.TransportError:
                pass
