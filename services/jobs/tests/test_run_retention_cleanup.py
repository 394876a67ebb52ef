"""JobsService.RunRetentionCleanup (POST /v1/admin/retention/cleanup) on the session's jobs service:
an org's owner or admin runs the retention-cleanup job for their org now; it is recorded as a run of
the job in job_runs and job_status, touches only the caller's org, and waits for a run that holds the
org's lock (the scheduled run working in that org) rather than running beside it, while the scheduled
run's lock over the whole walk does not hold it up."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
from cws.booking.v1 import booking_pb2_grpc
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from libs.common import context as request_context
from services.jobs.execution import lock_key, org_lock_key
from services.jobs.tests.conftest import reset_jobs, status_row
from services.jobs.tests.test_erasure_driver import (
    counted,
    deletion,
    new_lead,
    request_deletion,
    run_cleanup,
    settled,
    steps_of,
)
from tools.testkit import as_role, rpc_error, signed, signing_channel, sql

JOB = "retention-cleanup"
Code = grpc.StatusCode


@pytest.fixture
async def jobs_stub(jobs: Any) -> AsyncIterator[Any]:
    async with signing_channel(jobs.target) as channel:
        yield jobs_pb2_grpc.JobsServiceStub(channel)


@pytest.fixture
async def booking_stub(booking: Any) -> AsyncIterator[Any]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


async def old_sent_email(stack: Any, org_id: str) -> uuid.UUID:
    """A delivered email of the org from long ago: notify's retention deletes it."""
    row_id = uuid.uuid4()
    await sql(
        stack.admin_url,
        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, status, updated_at)"
        " VALUES (%s, %s, 'email', %s, '{}', 'sent', now() - interval '400 days')",
        (row_id, uuid.UUID(org_id), f"test:old:{row_id}"),
    )
    return row_id


async def remaining(stack: Any, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await sql(stack.admin_url, "SELECT id FROM notify.outbox_events WHERE id = ANY(%s)", (ids,))
    return {row[0] for row in rows}


async def test_an_owner_runs_the_org_s_cleanup_now_recorded_as_a_run_of_the_job(
    jobs_stub: Any, booking_stub: Any, make_org: Any, stack: Any
) -> None:
    org, other = await make_org(), await make_org()
    mine, theirs = await old_sent_email(stack, org.org_id), await old_sent_email(stack, other.org_id)
    lead_id = await new_lead(booking_stub, org.org_id, f"owner-run-{uuid.uuid4().hex[:8]}@example.com")
    request_id = await request_deletion(booking_stub, org.org_id, lead_id)
    await settled(stack, org.org_id)
    await reset_jobs(stack, JOB)

    answer = await run_cleanup(jobs_stub, org.org_id)

    assert answer.deleted == 1, answer  # booking keeps leads by default (RETENTION_LEAD_DAYS=0)
    assert counted(answer) == (1, 1, 0), answer
    assert await remaining(stack, [mine, theirs]) == {theirs}
    assert (await deletion(booking_stub, org.org_id, request_id)).status == "completed"
    # Recorded as the runner records a run: one job_runs row, and the job's status.
    runs = await sql(
        stack.admin_url, "SELECT trigger, outcome, error, detail FROM jobs.job_runs WHERE name = %s", (JOB,)
    )
    assert len(runs) == 1, runs
    trigger, outcome, error, detail = runs[0]
    detail = detail if isinstance(detail, dict) else json.loads(detail)
    assert (trigger, outcome, error) == ("once", "ok", None)
    assert detail == {
        "orgs": 1,
        "orgs_failed": 0,
        "booking_deleted": 0,
        "notify_deleted": 1,
        "deletion_requests_processed": 1,
        "deletion_requests_completed": 1,
        "deletion_steps_failed": 0,
    }
    status = await status_row(stack, JOB)
    assert status is not None
    assert (status["last_outcome"], status["runs_total"], status["consecutive_failures"]) == ("ok", 1, 0)
    assert status["last_success_at"] is not None

    # An admin may run it too; nothing is left to do.
    again = await run_cleanup(jobs_stub, org.org_id, role="ADMIN")
    assert (again.deleted, *counted(again)) == (0, 0, 0, 0), again


async def test_only_owners_and_admins_may_run_it(jobs_stub: Any, make_org: Any, stack: Any) -> None:
    org = await make_org()
    row = await old_sent_email(stack, org.org_id)
    for role in ("DISPATCHER", "FINANCE", "VIEWER"):
        await rpc_error(run_cleanup(jobs_stub, org.org_id, role=role), Code.PERMISSION_DENIED)
    unsigned = jobs_stub.RunRetentionCleanup(jobs_pb2.RunRetentionCleanupRequest())
    await rpc_error(unsigned, Code.UNAUTHENTICATED)
    assert await remaining(stack, [row]) == {row}  # nothing ran


async def test_a_caller_without_an_org_is_refused(jobs_stub: Any) -> None:
    orgless = request_context.RequestContext(
        principal_id=str(uuid.uuid4()),
        role="OWNER",
        auth_method=request_context.AuthMethod.Value("AUTH_METHOD_JWT"),  # type: ignore[arg-type]
        request_id=f"test-{uuid.uuid4().hex[:12]}",
        session_id=str(uuid.uuid4()),
    )
    call = jobs_stub.RunRetentionCleanup(jobs_pb2.RunRetentionCleanupRequest(), metadata=signed(orgless))
    error = await rpc_error(call, Code.PERMISSION_DENIED)
    assert error.reason == "org_required", error


async def test_another_org_s_requests_and_rows_are_not_touched(
    jobs_stub: Any, booking_stub: Any, make_org: Any, stack: Any
) -> None:
    org, other = await make_org(), await make_org()
    lead_id = await new_lead(booking_stub, org.org_id, f"not-theirs-{uuid.uuid4().hex[:8]}@example.com")
    request_id = await request_deletion(booking_stub, org.org_id, lead_id)
    row = await old_sent_email(stack, org.org_id)

    answer = await run_cleanup(jobs_stub, other.org_id)

    assert (answer.deleted, *counted(answer)) == (0, 0, 0, 0), answer
    request = await deletion(booking_stub, org.org_id, request_id)
    assert request.status == "pending"
    assert all(step.attempts == 0 for step in steps_of(request).values()), request
    assert await remaining(stack, [row]) == {row}
    # The org's own run, by contrast, does it (so the request does not linger for other tests).
    await settled(stack, org.org_id)
    assert counted(await run_cleanup(jobs_stub, org.org_id))[:2] == (1, 1)


async def test_a_run_holding_the_org_s_lock_is_waited_for_then_answered_unavailable(
    jobs_stub: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    key = org_lock_key(JOB, org.org_id)
    async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as conn:
        # What a scheduled run holds while it works in this org (execution.JobRunner._org_share).
        cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
        assert (await cursor.fetchone()) == (True,)
        started = time.monotonic()
        call = jobs_stub.RunRetentionCleanup(
            jobs_pb2.RunRetentionCleanupRequest(), metadata=as_role(org.org_id, "OWNER"), timeout=3
        )
        error = await rpc_error(call, Code.UNAVAILABLE)
        assert error.reason == "retention_cleanup_running", error
        assert 1.5 <= time.monotonic() - started < 3, "waited within the caller's deadline"

        # Released while a call waits: the call goes ahead.
        waiting = asyncio.create_task(run_cleanup(jobs_stub, org.org_id))
        await asyncio.sleep(1)
        assert not waiting.done()
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        answer = await asyncio.wait_for(waiting, 30)
    assert counted(answer) == (0, 0, 0)


async def test_the_scheduled_walk_over_every_org_does_not_hold_an_org_s_run_up(
    jobs_stub: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as conn:
        # What a scheduled run holds for its whole length, over every org (execution.JobRunner._lock):
        # in make dev it ran at start-up while seed 004's POST timed out waiting for it.
        cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_key(JOB),))
        assert (await cursor.fetchone()) == (True,)
        try:
            answer = await asyncio.wait_for(run_cleanup(jobs_stub, org.org_id), 10)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock_key(JOB),))
    assert counted(answer) == (0, 0, 0)
