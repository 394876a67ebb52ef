"""Runs deploy/scripts/smoke.sh (seed 004's GO/NO-GO checks) against the suite's real gateway and
services: GO with every check passing when the Basic Auth pairs are given, SKIPs with their reasons
when they are not (or captcha is on), NO-GO when the base URL does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tools.devstack import free_port
from tools.testkit import eventually, ready

SMOKE = Path(__file__).resolve().parents[2] / "deploy" / "scripts" / "smoke.sh"
ADMIN_PASSWORD = "Strong-admin-pass-" + "smoke-7e21"
DISPATCHER_PASSWORD = "Strong-dispatch-pass-" + "smoke-3b90"


def smoke(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_BASIC_USERNAME", "_BASIC_PASSWORD"))}
    clean = {k: v for k, v in clean.items() if not k.startswith(("SMOKE_", "API_BASE"))}
    return subprocess.run(
        [str(SMOKE), *args], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@contextlib.asynccontextmanager
async def ready_gateway(gateways: Any, **config: str) -> AsyncIterator[Any]:
    """A gateway of its own for one test: ready before smoke.sh judges it (a gateway just started may
    still be opening its revocation feed, which /readyz reports), stopped afterwards so the session's
    later tests (the NATS outage waits for every running gateway) do not carry it."""
    gw = gateways.get(**config)
    try:
        await eventually(lambda: ready(gw.readyz_url), timeout=30, message="the smoke test's gateway ready")
        yield gw
    finally:
        await asyncio.to_thread(gw.stop)


def lines(result: subprocess.CompletedProcess[str], verdict: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(verdict)]


async def test_go_when_every_check_passes_with_the_basic_auth_pairs(gateways: Any, make_org: Any) -> None:
    org = await make_org()
    async with ready_gateway(
        gateways,
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=ADMIN_PASSWORD,
        DISPATCHER_BASIC_USERNAME="dispatch",
        DISPATCHER_BASIC_PASSWORD=DISPATCHER_PASSWORD,
        LEGACY_BASIC_AUTH_ENABLED="true",
        DEFAULT_ORG_ID=org.org_id,
    ) as gw:
        result = await asyncio.to_thread(
            smoke,
            gw.url,
            ADMIN_BASIC_USERNAME="admin",
            ADMIN_BASIC_PASSWORD=ADMIN_PASSWORD,
            DISPATCHER_BASIC_USERNAME="dispatch",
            DISPATCHER_BASIC_PASSWORD=DISPATCHER_PASSWORD,
        )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "GO"
    assert not lines(result, "FAIL") and not lines(result, "SKIP"), result.stdout
    passed = "\n".join(lines(result, "PASS"))
    for check in (
        "GET /healthz",
        "GET /readyz",
        "readyz database",
        "readyz migrations",
        "readyz jobs",
        "POST /v1/estimate",
        "POST /v1/leads: expected 201 with lead_id; got 201 lead_id=",
        "GET /v1/admin/metrics?format=csv",
        "GET /v1/admin/queue/photos?status=pending&limit=1",
        "GET /v1/admin/jobs/status",
        "GET /v1/admin/outbox/dead-letter?limit=1",
        "GET /v1/admin/export-dead-letter?limit=1",
        "GET /v1/admin/queue/dlq?kind=all&limit=1: expected 200 with both counts; got outbox_dead_count=",
    ):
        assert check in passed, f"{check!r} did not pass:\n{result.stdout}"


async def test_missing_credentials_and_captcha_are_skipped_and_wrong_ones_fail(
    gateways: Any, make_org: Any
) -> None:
    org = await make_org()
    async with ready_gateway(
        gateways, CAPTCHA_MODE="turnstile", TURNSTILE_SECRET_KEY="x" * 32, DEFAULT_ORG_ID=org.org_id
    ) as gw:
        result = await asyncio.to_thread(smoke, API_BASE=gw.url)

        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1] == "GO"
        skipped = "\n".join(lines(result, "SKIP"))
        assert "POST /v1/leads: captcha is on at the gateway (400 captcha_required)" in skipped
        assert "SMOKE_CAPTCHA_TOKEN is not set" in skipped
        assert "metrics?format=csv: ADMIN_BASIC_USERNAME/ADMIN_BASIC_PASSWORD not set" in skipped
        assert (
            "queue/photos?status=pending&limit=1: DISPATCHER_BASIC_USERNAME/DISPATCHER_BASIC_PASSWORD not set"
            in skipped
        )
        assert "summary: 6 passed, 0 failed, 4 skipped" in result.stdout

        # Wrong credentials are a failure, not a skip, and the password shows nowhere.
        wrong = await asyncio.to_thread(
            smoke,
            gw.url,
            ADMIN_BASIC_USERNAME="admin",
            ADMIN_BASIC_PASSWORD="not-the-password",
            SMOKE_SKIP_LEAD="1",
        )
        assert wrong.returncode == 1
        assert wrong.stdout.splitlines()[-1] == "NO-GO"
        failed = "\n".join(lines(wrong, "FAIL"))
        assert (
            "GET /v1/admin/metrics?format=csv: expected 200 with header metric,from,to,value; got 401"
            in failed
        )
        assert "not-the-password" not in wrong.stdout + wrong.stderr
        assert "SKIP  POST /v1/leads: SMOKE_SKIP_LEAD=1" in wrong.stdout


def test_no_go_when_nothing_answers_and_usage_errors_exit_2() -> None:
    result = smoke(f"http://127.0.0.1:{free_port()}", SMOKE_TIMEOUT="2")

    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "NO-GO"
    assert 'FAIL  GET /healthz: expected 200 {"status":"ok"}; got no answer' in result.stdout
    assert "FAIL  POST /v1/estimate" in result.stdout

    missing = smoke()
    assert missing.returncode == 2 and "no base URL" in missing.stderr
    bad = smoke("api.example.com")
    assert bad.returncode == 2 and "must start with http:// or https://" in bad.stderr
