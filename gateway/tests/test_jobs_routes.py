"""Seed 004 "Jobs / Scheduler" at the gateway: `/readyz`'s jobs check follows the runner heartbeat
(fresh → 200, runner killed → 503 once the TTL passes, jobs service unreachable → 503), and
`GET /v1/admin/jobs/status` for platform operators (the installation's Basic Auth owner or admin
pairs), refused to every org's signed-in users, owners included (issue 9).

Runners are real `python -m services.jobs.run` processes."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from typing import Any

import httpx

from conftest import jobs_env
from tools.devstack import ROOT, free_port
from tools.processes import Proc
from tools.testkit import assert_clean, assert_problem, eventually, owner, sql, staff

HEALTH_FIELDS = {
    "name",
    "interval_seconds",
    "last_success_at",
    "last_finished_at",
    "consecutive_failures",
    "last_outcome",
}
STATUS_FIELDS = {
    "name",
    "interval_seconds",
    "last_started_at",
    "last_finished_at",
    "last_success_at",
    "consecutive_failures",
    "last_error",
    "last_runner_id",
    "runs_total",
    "failures_total",
    "last_outcome",
}
ADMIN_PASSWORD = "Strong-admin-pass-" + "jobs-4f2a9c"


async def forget_heartbeats(stack: Any, prefix: str) -> None:
    await sql(stack.admin_url, "DELETE FROM jobs.job_heartbeats WHERE runner_id LIKE %s", (prefix + "%",))


async def readyz(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"{url}/readyz")


async def test_readyz_is_ready_while_the_runner_beats_and_503_once_it_is_killed(
    gateways: Any, stack: Any, iam: Any, booking: Any, notify: Any, media: Any
) -> None:
    runner_id = f"test-readyz-{uuid.uuid4().hex[:8]}"
    gw = gateways.get(JOBS_ENABLED="true", JOB_HEARTBEAT_TTL_SECONDS="3")
    # The CLI's own scheduler loop (run.py without --once): a runner that opens no ports.
    runner = Proc(
        runner_id,
        ["-m", "services.jobs.run", "--job", "storage-janitor"],
        {
            **jobs_env(stack, iam, booking, notify, media=media),
            "JOB_RUNNER_ID": runner_id,
            "JOB_LOOP_SECONDS": "0.3",
        },
        stack.work_dir / "logs" / f"{runner_id}.log",
    )
    try:
        runner.start()

        async def ready_on_this_runner() -> bool:
            response = await readyz(gw.url)
            return response.status_code == 200 and response.json()["jobs"]["runner_id"] == runner_id

        await eventually(ready_on_this_runner, timeout=20, message="/readyz ready on this runner's heartbeat")
        jobs = (await readyz(gw.url)).json()["jobs"]
        assert jobs["ok"] is True and jobs["enabled"] is True, jobs
        assert jobs["ttl_seconds"] == 3 and 0 <= jobs["age_seconds"] < 3, jobs
        assert jobs["last_heartbeat"].endswith("Z") and "T" in jobs["last_heartbeat"], jobs
        assert jobs["message"] == "job runner heartbeat fresh"

        runner.kill()  # SIGKILL mid-loop: no goodbye, the heartbeat simply stops

        async def not_ready() -> bool:
            return (await readyz(gw.url)).status_code == 503

        await eventually(not_ready, timeout=20, message="/readyz to turn 503")
        response = await readyz(gw.url)
        assert_clean(response)
        body = response.json()
        assert body["ok"] is False and body["status"] == "error"
        jobs = body["jobs"]
        assert jobs["ok"] is False and jobs["enabled"] is True and jobs["runner_id"] == runner_id, jobs
        assert jobs["age_seconds"] >= 3 and jobs["message"].startswith("job runner heartbeat stale"), jobs
        # Only the heartbeat is wrong: the services (the jobs status API included) are all fine.
        checks = {c["name"]: c for c in body["checks"]}
        assert checks["jobs"]["ok"] is False
        assert all(c["ok"] for name, c in checks.items() if name != "jobs"), checks
    finally:
        await asyncio.to_thread(runner.stop)
        await forget_heartbeats(stack, runner_id)


async def test_readyz_503_when_the_jobs_service_is_unreachable(gateways: Any) -> None:
    # JOB_HEARTBEAT_REQUIRED alone turns the check on, as JOBS_ENABLED does.
    gw = gateways.get(JOB_HEARTBEAT_REQUIRED="true", JOBS_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    response = await readyz(gw.url)
    assert_clean(response)
    assert response.status_code == 503, response.text
    jobs = response.json()["jobs"]
    assert jobs["ok"] is False and jobs["enabled"] is True, jobs
    assert jobs["message"] == "jobs service unreachable: UNAVAILABLE", jobs
    assert jobs["last_heartbeat"] is None and jobs["age_seconds"] is None and jobs["ttl_seconds"] == 180


async def test_jobs_status_for_platform_operators_only(
    gateways: Any,
    gateway: Any,
    http: httpx.AsyncClient,
    make_org: Any,
    stack: Any,
    iam: Any,
    booking: Any,
    notify: Any,
    media: Any,
) -> None:
    runner_id = f"test-status-{uuid.uuid4().hex[:8]}"
    once = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.jobs.run",
        "--job",
        "storage-janitor",
        "--once",
        cwd=ROOT,
        env={**os.environ, **jobs_env(stack, iam, booking, notify, media=media), "JOB_RUNNER_ID": runner_id},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(once.communicate(), timeout=60)
    assert once.returncode == 0, output.decode()
    try:
        org = await make_org()
        owner_headers = await owner(http, gateway.url, org)
        url = f"{gateway.url}/v1/admin/jobs/status"

        # Suite-wide internals (every org's job runs, their errors, the runners' hosts) are for
        # platform operators: an org's OWNER and ADMIN are refused (issue 9), staff below too, and
        # everyone signed out.
        admin = await staff(http, gateway.url, owner_headers, "ADMIN")
        for headers in (owner_headers, admin):
            assert_problem(await http.get(url, headers=headers), 403, "platform_operator_required")
        viewer = await staff(http, gateway.url, owner_headers, "VIEWER")
        assert_problem(await http.get(url, headers=viewer), 403)
        assert_problem(await http.get(url), 401)

        # Seed 004's operator view: `curl -u "$ADMIN_BASIC_USERNAME:$ADMIN_BASIC_PASSWORD" .../jobs/status`.
        basic_gw = gateways.get(
            ADMIN_BASIC_USERNAME="admin",
            ADMIN_BASIC_PASSWORD=ADMIN_PASSWORD,
            LEGACY_BASIC_AUTH_ENABLED="true",
            DEFAULT_ORG_ID=org.org_id,
        )
        basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()}
        response = await http.get(f"{basic_gw.url}/v1/admin/jobs/status", headers=basic)
        assert_clean(response)
        assert response.status_code == 200, response.text
        body = response.json()
        # Beside the jobs: every org's Google Calendar / QuickBooks sync state (issue 17,
        # gateway/tests/test_integrations_routes.py), asked of the integrations service.
        assert set(body) == {"jobs", "heartbeats", "integration_syncs", "integration_syncs_unavailable"}
        assert body["integration_syncs_unavailable"] is None, body
        names = [job["name"] for job in body["jobs"]]
        assert {"cleanup", "email-scan", "outbox-delivery", "email-dlq", "retention-cleanup"} <= set(names)
        assert {"notifications-digest-daily", "notifications-digest-weekly", "storage-janitor"} <= set(names)
        assert all(set(job) == STATUS_FIELDS for job in body["jobs"]), body["jobs"]
        janitor = next(job for job in body["jobs"] if job["name"] == "storage-janitor")
        assert janitor["last_outcome"] == "ok" and janitor["runs_total"] >= 1, janitor
        assert janitor["last_finished_at"].endswith("Z") and janitor["interval_seconds"] == 3600
        # An org's owner and admin see whether each job runs well (the console's today page), and
        # nothing of the installation: no error text, runner, run counts or heartbeats.
        health_url = f"{gateway.url}/v1/admin/jobs/health"
        for headers in (owner_headers, admin):
            health = await http.get(health_url, headers=headers)
            assert_clean(health)
            assert health.status_code == 200, health.text
            assert set(health.json()) == {"jobs"}
            by_name = {job["name"]: job for job in health.json()["jobs"]}
            assert set(by_name) == set(names)
            assert all(set(job) == HEALTH_FIELDS for job in by_name.values()), by_name
            assert by_name["storage-janitor"]["last_outcome"] == "ok"
        assert_problem(await http.get(health_url, headers=viewer), 403)
        assert_problem(await http.get(health_url), 401)
        beat = next(b for b in body["heartbeats"] if b["runner_id"] == runner_id)
        assert (
            beat["name"] == "jobs-runner"
            and beat["last_heartbeat"].endswith("Z")
            and beat["age_seconds"] >= 0
        )
    finally:
        await forget_heartbeats(stack, runner_id)
