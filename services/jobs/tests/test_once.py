"""`python -m services.jobs.run --job NAME [--job NAME ...] --once` (seed 003/004) as a subprocess
against the session's real iam, booking and notify: what it runs, what it records, its exit codes,
and what it refuses."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from cws.common.v1 import ops_pb2, ops_pb2_grpc
from pydantic import ValidationError

from libs.common.settings import explain
from services.jobs.execution import LOCKED_REASON, lock_key
from services.jobs.registry import JOB_NAMES, ScheduleError, all_jobs, scheduled_jobs
from services.jobs.settings import JobsSettings
from services.jobs.tests.conftest import JobsEnv, reset_jobs, status_row
from tools.devstack import ROOT, free_port
from tools.testkit import as_role, as_service, owner, rpc_error, signing_channel, sql


async def pending_booking(http: Any, url: str, headers: dict[str, str]) -> str:
    starts = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()
    response = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": starts,
            "duration_minutes": 60,
            "client_name": "Pat Pending",
            "client_email": "pat@example.com",
            "cleaning_type": "standard",
            "beds": 1,
            "baths": 1,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_once_cleanup_works_in_every_org_and_records_its_run(
    jobs_setup: JobsEnv, gateway: Any, http: Any, make_org: Any, stack: Any
) -> None:
    orgs = [await make_org(), await make_org()]
    stale: dict[str, str] = {}
    for org in orgs:
        headers = await owner(http, gateway.url, org)
        stale[org.org_id] = await pending_booking(http, gateway.url, headers)
    fresh_headers = await owner(http, gateway.url, orgs[0])
    fresh = await pending_booking(http, gateway.url, fresh_headers)
    await sql(
        stack.admin_url,
        "UPDATE booking.bookings SET created_at = now() - interval '3 days' WHERE id = ANY(%s)",
        ([uuid.UUID(i) for i in stale.values()],),
    )
    await reset_jobs(stack, "cleanup")

    run = await jobs_setup.cli("--job", "cleanup", "--once")

    assert run.returncode == 0, run.output
    done = run.event("job_complete", "cleanup")
    assert done["outcome"] == "ok" and done["trigger"] == "once"
    assert done["detail"]["orgs"] >= 2 and done["detail"]["orgs_failed"] == 0, done
    assert done["detail"]["deleted"] >= 2, done
    assert isinstance(done["duration_seconds"], float)
    # Each org's stale pending booking is gone (the call ran in that org); the fresh one stays.
    for org in orgs:
        headers = await owner(http, gateway.url, org)
        gone = await http.get(f"{gateway.url}/v1/admin/bookings/{stale[org.org_id]}", headers=headers)
        assert gone.status_code == 404, gone.text
    kept = await http.get(f"{gateway.url}/v1/admin/bookings/{fresh}", headers=fresh_headers)
    assert kept.status_code == 200, kept.text

    status = await status_row(stack, "cleanup")
    assert status is not None
    assert status["last_outcome"] == "ok" and status["runs_total"] == 1 and status["failures_total"] == 0
    assert status["consecutive_failures"] == 0 and status["last_error"] is None
    assert status["last_runner_id"] == jobs_setup.runner_id()
    assert status["last_started_at"] <= status["last_finished_at"] == status["last_success_at"]
    runs = await sql(
        stack.admin_url,
        "SELECT trigger, outcome, runner_id, detail FROM jobs.job_runs WHERE name = 'cleanup'",
    )
    assert len(runs) == 1
    trigger, outcome, runner_id, detail = runs[0]
    assert (trigger, outcome, runner_id) == ("once", "ok", jobs_setup.runner_id())
    assert detail["deleted"] >= 2
    beats = await sql(
        stack.admin_url,
        "SELECT name, now() - last_heartbeat < interval '1 minute' FROM jobs.job_heartbeats"
        " WHERE runner_id = %s",
        (jobs_setup.runner_id(),),
    )
    assert beats == [("jobs-runner", True)]


async def test_seed_004_command_exits_0_with_job_complete(jobs_setup: JobsEnv, stack: Any) -> None:
    await reset_jobs(stack, "outbox-delivery", "storage-janitor", "email-dlq")

    run = await jobs_setup.cli(
        "--job", "outbox-delivery", "--job", "storage-janitor", "--job", "email-dlq", "--once"
    )

    assert run.returncode == 0, run.output
    for name in ("outbox-delivery", "storage-janitor", "email-dlq"):
        assert run.event("job_complete", name)["outcome"] == "ok"
    assert (await status_row(stack, "storage-janitor"))["last_outcome"] == "ok"  # type: ignore[index]
    assert (await status_row(stack, "outbox-delivery"))["last_success_at"] is not None  # type: ignore[index]
    assert (await status_row(stack, "email-dlq"))["consecutive_failures"] == 0  # type: ignore[index]


async def test_failed_calls_fail_the_job_and_a_success_resets_the_count(
    jobs_setup: JobsEnv, make_org: Any, stack: Any
) -> None:
    await make_org()
    await reset_jobs(stack, "cleanup")
    nowhere = f"127.0.0.1:{free_port()}"  # booking unreachable: every org's call fails

    for attempt in (1, 2):
        run = await jobs_setup.cli("--job", "cleanup", "--once", BOOKING_GRPC_TARGET=nowhere)
        assert run.returncode == 1, run.output
        failed = run.event("job_failed", "cleanup")
        orgs = failed["detail"]["orgs"]
        assert orgs >= 1 and failed["detail"]["orgs_failed"] == orgs, failed
        assert failed["error"] == f"{orgs} of {orgs} orgs failed (UNAVAILABLE x{orgs})", failed
        # The log names each failed org; the recorded error (shown to every org's admins) does not.
        assert any(e.get("event") == "job_org_failed" and e.get("org_id") for e in run.events)
        status = await status_row(stack, "cleanup")
        assert status is not None
        assert status["consecutive_failures"] == attempt and status["failures_total"] == attempt
        assert status["last_outcome"] == "failed" and status["last_success_at"] is None
        assert status["last_error"] == failed["error"]

    recovered = await jobs_setup.cli("--job", "cleanup", "--once")
    assert recovered.returncode == 0, recovered.output
    status = await status_row(stack, "cleanup")
    assert status is not None
    assert status["consecutive_failures"] == 0 and status["failures_total"] == 2 and status["runs_total"] == 3
    assert status["last_error"] is None and status["last_success_at"] is not None
    outcomes = await sql(
        stack.admin_url, "SELECT outcome FROM jobs.job_runs WHERE name = 'cleanup' ORDER BY started_at"
    )
    assert [o for (o,) in outcomes] == ["failed", "failed", "ok"]


async def test_a_job_past_its_timeout_fails(jobs_setup: JobsEnv, stack: Any) -> None:
    # A service that accepts connections and never answers: the org listing hangs.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        await reset_jobs(stack, "email-scan")
        run = await jobs_setup.cli(
            "--job",
            "email-scan",
            "--once",
            IAM_GRPC_TARGET=f"127.0.0.1:{silent.getsockname()[1]}",
            JOB_TIMEOUT_SECONDS="1",
        )
    finally:
        silent.close()
    assert run.returncode == 1, run.output
    assert run.event("job_failed", "email-scan")["error"] == "timed out after 1s (JOB_TIMEOUT_SECONDS)"
    assert (await status_row(stack, "email-scan"))["last_outcome"] == "failed"  # type: ignore[index]


async def test_once_while_another_runner_holds_the_lock_is_skipped(jobs_setup: JobsEnv, stack: Any) -> None:
    await reset_jobs(stack, "cleanup")
    with psycopg.connect(stack.app_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock_key("cleanup"),))
        run = await jobs_setup.cli("--job", "cleanup", "--once")
        # Skipped, not failed: the work it asked for is being done by the lock's holder.
        assert run.returncode == 0, run.output
        assert run.event("job_skipped", "cleanup")["reason"] == LOCKED_REASON
        assert not [e for e in run.events if e.get("event") == "job_complete"]
        assert await status_row(stack, "cleanup") is None  # nothing ran, nothing recorded
    # The holder's connection is gone, and the lock with it.
    again = await jobs_setup.cli("--job", "cleanup", "--once")
    assert again.returncode == 0, again.output
    assert again.event("job_complete", "cleanup")["outcome"] == "ok"


async def test_unknown_job_is_a_usage_error_listing_the_jobs(jobs_setup: JobsEnv) -> None:
    run = await jobs_setup.cli("--job", "outbox-delivery", "--job", "no-such-job", "--once")
    assert run.returncode == 2, run.output
    assert "invalid choice: 'no-such-job'" in run.stderr
    assert all(name in run.stderr for name in JOB_NAMES), run.stderr
    assert "job_complete" not in run.output  # nothing ran


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"job_schedule": "cleanup=0"}, "JOB_SCHEDULE: 'cleanup=0': seconds must be a positive integer"),
        (
            {"job_schedule": "cleanup=soon"},
            "JOB_SCHEDULE: 'cleanup=soon': seconds must be a positive integer",
        ),
        ({"job_schedule": "cleanup"}, "JOB_SCHEDULE: 'cleanup' is not name=seconds"),
        ({"job_schedule": "no-such-job=60"}, "JOB_SCHEDULE: unknown job no-such-job (known jobs: cleanup, "),
        ({"job_names": "cleanup,no-such-job"}, "JOB_NAMES: unknown job no-such-job"),
        ({"job_loop_seconds": "-1"}, "JOB_LOOP_SECONDS: Input should be greater than 0"),
    ],
)
def test_bad_schedule_settings_are_explained(settings: dict[str, str], expected: str) -> None:
    try:
        scheduled_jobs(JobsSettings(**settings))  # type: ignore[arg-type]
    except ValidationError as error:
        assert explain(error).startswith(expected), explain(error)
    except ScheduleError as error:
        assert str(error).startswith(expected), error
    else:
        raise AssertionError(f"{settings} accepted")


def test_schedule_overrides_and_subsets_apply() -> None:
    settings = JobsSettings(job_schedule="cleanup=7, email-dlq=11", job_names="email-dlq,cleanup")  # type: ignore[arg-type]
    assert [(job.name, job.interval_seconds) for job in scheduled_jobs(settings)] == [
        ("cleanup", 7),
        ("email-dlq", 11),
    ]
    # --job wins over JOB_NAMES; every job keeps its registry interval unless overridden.
    assert [(job.name, job.interval_seconds) for job in scheduled_jobs(settings, ["outbox-delivery"])] == [
        ("outbox-delivery", 60)
    ]
    assert [job.name for job in all_jobs(settings)] == list(JOB_NAMES)


async def test_bad_schedule_refuses_to_start(jobs_setup: JobsEnv) -> None:
    run = await jobs_setup.cli("--job", "cleanup", "--once", JOB_SCHEDULE="cleanup=0,no-such-job=5")
    assert run.returncode == 2, run.output
    assert "refusing to start: JOB_SCHEDULE: 'cleanup=0': seconds must be a positive integer" in run.stderr
    assert "job_complete" not in run.output

    # The service refuses the same way, before it serves anything.
    service = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.jobs"],
        cwd=ROOT,
        env={**os.environ, **jobs_setup.base, "JOB_SCHEDULE": "email-scan=300,bogus=5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert service.returncode != 0
    assert "jobs: refusing to start: JOB_SCHEDULE: unknown job bogus (known jobs: cleanup" in service.stderr


async def test_event_retention_prunes_what_each_service_no_longer_needs(
    billing_jobs_setup: JobsEnv, stack: Any
) -> None:
    """Published outbox rows, handled inbox ids and replayed dead letters past EVENT_RETENTION_DAYS
    (14) go, in iam, booking, billing and notify alike; recent ones, and dead letters nobody replayed,
    stay."""
    jobs_setup = billing_jobs_setup
    tag = uuid.uuid4().hex[:12]
    for schema in ("iam", "booking", "billing", "notify"):
        await sql(
            stack.admin_url,
            f"INSERT INTO {schema}.event_outbox (id, subject, payload, created_at, published_at) VALUES "
            f"(gen_random_uuid(), %s, '', now() - interval '40 days', now() - interval '30 days'), "
            f"(gen_random_uuid(), %s, '', now() - interval '2 days', now() - interval '2 days')",
            (f"cws.{schema}.old.{tag}", f"cws.{schema}.recent.{tag}"),
        )
        await sql(
            stack.admin_url,
            f"INSERT INTO {schema}.event_inbox (consumer, event_id, processed_at) VALUES "
            f"(%s, 'old', now() - interval '30 days'), (%s, 'recent', now() - interval '9 days')",
            (f"test-{tag}", f"test-{tag}"),
        )
        await sql(
            stack.admin_url,
            f"INSERT INTO {schema}.event_dead_letters (id, consumer, event_id, subject, payload, error, "
            f"deliveries, created_at, replayed_at) VALUES "
            f"(gen_random_uuid(), %s, 'replayed', 'x', '', 'e', 5, now() - interval '40 days', now() - interval '30 days'), "
            f"(gen_random_uuid(), %s, 'waiting', 'x', '', 'e', 5, now() - interval '40 days', NULL)",
            (f"test-{tag}", f"test-{tag}"),
        )
    await reset_jobs(stack, "event-retention")

    run = await jobs_setup.cli("--job", "event-retention", "--once")

    assert run.returncode == 0, run.output
    done = run.event("job_complete", "event-retention")
    assert done["outcome"] == "ok", done
    for schema in ("iam", "booking", "billing", "notify"):
        assert done["detail"][f"{schema}_outbox_deleted"] >= 1, done
        outbox = await sql(
            stack.admin_url, f"SELECT subject FROM {schema}.event_outbox WHERE subject LIKE %s", (f"%{tag}",)
        )
        assert outbox == [(f"cws.{schema}.recent.{tag}",)]
        inbox = await sql(
            stack.admin_url,
            f"SELECT event_id FROM {schema}.event_inbox WHERE consumer = %s",
            (f"test-{tag}",),
        )
        assert inbox == [("recent",)]
        dead = await sql(
            stack.admin_url,
            f"SELECT event_id FROM {schema}.event_dead_letters WHERE consumer = %s",
            (f"test-{tag}",),
        )
        assert dead == [("waiting",)]


async def test_only_suite_services_prune_and_never_below_the_streams_age(booking: Any) -> None:
    """A staff member cannot prune (service callers only), and a retention shorter than the streams'
    7 days (a redelivered event would not find its inbox row) is refused."""
    org = str(uuid.uuid4())
    async with signing_channel(booking.target) as channel:
        ops = ops_pb2_grpc.OpsServiceStub(channel)
        await rpc_error(
            ops.PruneEventTables(ops_pb2.PruneEventTablesRequest(), metadata=as_role(org, "OWNER")),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        refused = await rpc_error(
            ops.PruneEventTables(ops_pb2.PruneEventTablesRequest(retention_days=7), metadata=as_service(org)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [v.field for v in refused.violations] == ["retention_days"]
