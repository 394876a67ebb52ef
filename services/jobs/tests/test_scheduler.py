"""The long-running scheduler (`python -m services.jobs` with JOBS_ENABLED=true) as real processes:
two runners started together, a lock held elsewhere, heartbeats, the Better Stack ping (a local HTTP
server) and the metrics on the process's /metrics."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from libs.common import context as request_context
from services.jobs.execution import lock_key
from services.jobs.tests.conftest import JobsEnv, log_events, reset_jobs, status_row
from tools.devstack import free_port
from tools.processes import Proc, ServiceProc
from tools.testkit import eventually, signed, signing_channel, sql

RUN_EVENTS = ("job_complete", "job_skipped", "job_failed")


class PingServer:
    """Better Stack's heartbeat endpoint, locally: records every GET; paths under /fail answer 500."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        pings = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pings.append(self.path)
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths if p == path)


@pytest.fixture
def pings() -> Iterator[PingServer]:
    server = PingServer()
    yield server
    server.server.shutdown()


async def slots(stack: Any, name: str) -> list[float]:
    rows = await sql(
        stack.admin_url,
        "SELECT extract(epoch FROM slot_at) FROM jobs.job_runs"
        " WHERE name = %s AND trigger = 'schedule' ORDER BY slot_at",
        (name,),
    )
    return [float(epoch) for (epoch,) in rows]


def run_events(proc: Proc, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in log_events(proc.log_path.read_text())
        if e.get("event") in RUN_EVENTS and e.get("name") == name and e.get("trigger") == "schedule"
    ]


async def metrics(proc: ServiceProc) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{proc.http_port}/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def heartbeat_span(stack: Any, runner_id: str) -> float:
    """Seconds between this runner's first and latest heartbeat: how long its loop has been going."""
    rows = await sql(
        stack.admin_url,
        "SELECT extract(epoch FROM last_heartbeat - started_at) FROM jobs.job_heartbeats WHERE runner_id = %s",
        (runner_id,),
    )
    return float(rows[0][0]) if rows else -1.0


async def operator_status(target: str) -> jobs_pb2.GetStatusResponse:
    """The status as a platform operator (an ADMIN Basic Auth pair) asks for it: suite-wide."""
    metadata = signed(
        request_context.RequestContext(
            org_id="00000000-0000-0000-0000-000000000001",
            principal_id="basic:admin",
            role="ADMIN",
            auth_method=request_context.AuthMethod.Value("AUTH_METHOD_BASIC"),  # type: ignore[arg-type]
            request_id="test-operator-status",
        )
    )
    async with signing_channel(target) as channel:
        return await jobs_pb2_grpc.JobsServiceStub(channel).GetStatus(
            jobs_pb2.GetStatusRequest(), metadata=metadata, timeout=5
        )


async def test_two_runners_started_together_run_each_job_once_per_slot(
    jobs_setup: JobsEnv, stopping: list[Proc], stack: Any
) -> None:
    intervals = {"storage-janitor": 1, "cleanup": 2}
    await reset_jobs(stack, *intervals)
    settings = {
        "JOB_NAMES": ",".join(intervals),
        "JOB_SCHEDULE": ",".join(f"{name}={seconds}" for name, seconds in intervals.items()),
        "JOB_LOOP_SECONDS": "0.2",
    }
    runners = [jobs_setup.runner(label, **settings) for label in ("a", "b")]
    stopping.extend(runners)
    for runner in runners:
        runner.start()
    for runner in runners:
        await runner.wait_ready_async()

    async def several_slots() -> bool:
        return len(await slots(stack, "storage-janitor")) >= 5 and len(await slots(stack, "cleanup")) >= 3

    await eventually(several_slots, timeout=30, message="several schedule slots of each job")
    status = await operator_status(runners[0].target)
    assert {job.name: job.interval_seconds for job in status.jobs if job.name in intervals} == intervals
    for runner in runners:
        await asyncio.to_thread(runner.stop)

    for name, interval in intervals.items():
        claimed = await slots(stack, name)
        # Slots sit on the schedule's grid (the database clock's, the same for both runners)...
        assert all(epoch % interval == 0 for epoch in claimed), claimed
        # ...and each one ran exactly once, on one runner or the other: as many runs as slots.
        ran = run_events(runners[0], name) + run_events(runners[1], name)
        assert len(ran) == len(claimed), (name, claimed, ran)
        recorded = await status_row(stack, name)
        assert recorded is not None and recorded["runs_total"] == len(claimed), recorded
        outcomes = await sql(
            stack.admin_url, "SELECT DISTINCT outcome FROM jobs.job_runs WHERE name = %s", (name,)
        )
        assert {o for (o,) in outcomes} <= {"ok", "skipped", "failed"}, outcomes  # none left "running"
    # No slot was missed between the first and the last unless a run was still going at its time (the
    # janitor is a real call to media now, which a loaded machine can stretch past its 1 s interval).
    janitor = await slots(stack, "storage-janitor")
    for a, b in itertools.pairwise(janitor):
        for missed in range(int(a) + 1, int(b)):
            busy = await sql(
                stack.admin_url,
                "SELECT count(*) FROM jobs.job_runs WHERE name = ANY(%s) AND started_at <= to_timestamp(%s)"
                " AND finished_at >= to_timestamp(%s)",
                (list(intervals), missed, missed),
            )
            assert busy[0][0] >= 1, f"slot {missed} of storage-janitor was missed with nothing running"
    assert (await status_row(stack, "storage-janitor"))["last_outcome"] == "ok"  # type: ignore[index]
    beats = await sql(
        stack.admin_url,
        "SELECT runner_id FROM jobs.job_heartbeats WHERE runner_id = ANY(%s) ORDER BY runner_id",
        ([jobs_setup.runner_id("a"), jobs_setup.runner_id("b")],),
    )
    assert [r for (r,) in beats] == [jobs_setup.runner_id("a"), jobs_setup.runner_id("b")]


async def test_the_scheduler_waits_while_another_runner_holds_the_job_lock(
    jobs_setup: JobsEnv, stopping: list[Proc], stack: Any, pings: PingServer
) -> None:
    await reset_jobs(stack, "storage-janitor")
    runner_id = jobs_setup.runner_id("locked")
    with psycopg.connect(stack.app_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_key("storage-janitor"),))
        runner = jobs_setup.cli_loop(
            "locked",
            "storage-janitor",
            JOB_SCHEDULE="storage-janitor=3600",
            JOB_LOOP_SECONDS="0.2",
            # A monitor answering 500: logged, never fatal.
            BETTER_STACK_HEARTBEAT_URL=pings.url("/fail/hb"),
        )
        stopping.append(runner)
        runner.start()

        # A second of heartbeats is five loops, each of which found the lock taken.
        async def a_second_of_loops() -> bool:
            return await heartbeat_span(stack, runner_id) >= 1.0

        await eventually(a_second_of_loops, timeout=20, message="a second of loops")
        assert await slots(stack, "storage-janitor") == []
        assert await status_row(stack, "storage-janitor") is None
        assert runner.alive and pings.count("/fail/hb") >= 2
        assert any(
            e.get("event") == "better_stack_ping_failed" for e in log_events(runner.log_path.read_text())
        )

    # The holder's connection closed: the lock is free, and the waiting slot runs.
    async def one_slot() -> bool:
        return len(await slots(stack, "storage-janitor")) == 1

    async def recorded() -> bool:
        return ((await status_row(stack, "storage-janitor")) or {}).get("last_outcome") == "ok"

    await eventually(one_slot, timeout=10, message="the slot to run")
    await eventually(recorded, timeout=10, message="the run to be recorded")
    assert len(run_events(runner, "storage-janitor")) == 1


async def test_healthy_loops_ping_better_stack_and_metrics_show_the_runner(
    jobs_setup: JobsEnv, stopping: list[Proc], stack: Any, jobs: ServiceProc, pings: PingServer
) -> None:
    await reset_jobs(stack, "cleanup")
    runner = jobs_setup.runner(
        "metrics",
        JOB_NAMES="cleanup",
        JOB_SCHEDULE="cleanup=1800",
        JOB_LOOP_SECONDS="0.3",
        BETTER_STACK_HEARTBEAT_URL=pings.url("/hb/token-1"),
    )
    stopping.append(runner)
    await runner.start().wait_ready_async()

    await eventually(lambda: pings.count("/hb/token-1") >= 2, timeout=20, message="Better Stack pings")
    runner_up = ("job_runner_up", ())
    success = ("job_last_success_timestamp", (("job", "cleanup"),))

    async def runner_metrics() -> bool:
        scraped = await metrics(runner)
        return scraped.get(runner_up) == 1.0 and success in scraped

    await eventually(runner_metrics, timeout=20, message="the runner's metrics")
    scraped = await metrics(runner)
    recorded = await status_row(stack, "cleanup")
    assert recorded is not None and recorded["last_outcome"] == "ok"
    assert scraped[success] == pytest.approx(recorded["last_success_at"].timestamp(), abs=0.01)
    assert scraped[("job_errors_total", (("job", "cleanup"),))] == recorded["failures_total"] == 0
    assert abs(scraped[("job_last_heartbeat_timestamp", ())] - time.time()) < 30
    assert 0 <= scraped[("job_heartbeat_age_seconds", ())] < 5

    # The status-only process (scheduler off) reports its own runner down, and the shared heartbeat.
    async def refreshed() -> bool:
        return ("job_last_heartbeat_timestamp", ()) in await metrics(jobs)

    await eventually(refreshed, timeout=15, message="refresh")
    assert (await metrics(jobs))[runner_up] == 0.0


async def job_run_rows(stack: Any, name: str) -> list[tuple[str, str, str | None]]:
    return [
        (runner, outcome, error)
        for runner, outcome, error in await sql(
            stack.admin_url,
            "SELECT runner_id, outcome, error FROM jobs.job_runs WHERE name = %s ORDER BY started_at",
            (name,),
        )
    ]


async def test_a_runner_dying_mid_job_leaves_nothing_the_next_run_cannot_finish(
    jobs_setup: JobsEnv, stopping: list[Proc], stack: Any
) -> None:
    # IAM that accepts connections and never answers: the job hangs listing orgs, holding its lock.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hanging = {
        "JOB_NAMES": "email-dlq",
        "JOB_SCHEDULE": "email-dlq=3600",
        "JOB_LOOP_SECONDS": "0.2",
        "IAM_GRPC_TARGET": f"127.0.0.1:{silent.getsockname()[1]}",
        "JOB_STOP_GRACE_SECONDS": "0.5",
    }
    try:
        await reset_jobs(stack, "email-dlq")
        killed = jobs_setup.cli_loop("killed", "email-dlq", **hanging)
        stopping.append(killed)
        killed.start()
        await eventually(lambda: job_run_rows(stack, "email-dlq"), timeout=15, message="the job to start")
        killed.kill()  # SIGKILL mid-job: its database connections, and the job's lock, die with it

        # The next scheduler gets the lock at once (it died with its holder), sees the slot's run
        # "running" with no one holding the lock, i.e. dead, takes the slot over and does it all.
        heir = jobs_setup.cli_loop(
            "heir", "email-dlq", **{**hanging, "IAM_GRPC_TARGET": jobs_setup.base["IAM_GRPC_TARGET"]}
        )
        stopping.append(heir)
        heir.start()

        async def heir_finished() -> bool:
            return await job_run_rows(stack, "email-dlq") == [(jobs_setup.runner_id("heir"), "ok", None)]

        await eventually(heir_finished, timeout=20, message="the heir to finish the dead runner's slot")
        await asyncio.to_thread(heir.stop)
        done = [e for e in log_events(heir.log_path.read_text()) if e.get("event") == "job_complete"]
        assert len(done) == 1 and done[0]["detail"]["orgs_failed"] == 0, done
        recorded = await status_row(stack, "email-dlq")
        assert recorded is not None and recorded["last_outcome"] == "ok" and recorded["runs_total"] == 1

        # SIGTERM mid-job, to the CLI's own loop (run.py without --once): the job gets
        # JOB_STOP_GRACE_SECONDS, then is interrupted and says so; the CLI exits 0.
        await reset_jobs(stack, "email-dlq")
        loop = jobs_setup.cli_loop("stopped", "email-dlq", **hanging)
        stopping.append(loop)
        loop.start()
        await eventually(lambda: job_run_rows(stack, "email-dlq"), timeout=15, message="the job to start")
        await asyncio.to_thread(loop.stop)
        assert loop.process is not None and loop.process.returncode == 0, loop.tail()
        interrupted = "interrupted: the runner was stopped mid-job"
        assert await job_run_rows(stack, "email-dlq") == [
            (jobs_setup.runner_id("stopped"), "failed", interrupted)
        ]
        recorded = await status_row(stack, "email-dlq")
        assert recorded is not None and recorded["last_error"] == interrupted
        assert recorded["consecutive_failures"] == 1 and recorded["runs_total"] == 1
        assert "scheduler_stopped" in loop.tail()
    finally:
        silent.close()


async def test_a_failed_slot_is_run_again_after_job_retry_seconds(
    jobs_setup: JobsEnv, stopping: list[Proc], stack: Any
) -> None:
    await reset_jobs(stack, "cleanup")
    loop = jobs_setup.cli_loop(
        "retry",
        "cleanup",
        JOB_SCHEDULE="cleanup=3600",
        JOB_LOOP_SECONDS="0.2",
        JOB_RETRY_SECONDS="0.6",
        IAM_GRPC_TARGET=f"127.0.0.1:{free_port()}",  # the org list cannot be had: every run fails
    )
    stopping.append(loop)
    loop.start()

    async def retried() -> bool:
        return ((await status_row(stack, "cleanup")) or {}).get("runs_total", 0) >= 3

    await eventually(retried, timeout=20, message="retries")
    await asyncio.to_thread(loop.stop)

    # One hourly slot, run again and again within it, on its one row: not once per loop, and not
    # left until the next slot.
    rows = await job_run_rows(stack, "cleanup")
    assert len(rows) == 1 and rows[0][1] == "failed" and rows[0][2].startswith("UNAVAILABLE"), rows
    recorded = await status_row(stack, "cleanup")
    assert recorded is not None
    assert recorded["consecutive_failures"] == recorded["failures_total"] == recorded["runs_total"] >= 3
    failures = [
        datetime.fromisoformat(e["timestamp"]).timestamp()
        for e in log_events(loop.log_path.read_text())
        if e.get("event") == "job_failed" and e.get("name") == "cleanup"
    ]
    assert len(failures) == recorded["runs_total"]
    assert all(later - earlier >= 0.6 for earlier, later in itertools.pairwise(failures)), failures
