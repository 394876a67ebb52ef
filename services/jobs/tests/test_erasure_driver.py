"""The erasure driver (services/jobs/erasure.py) against the real services: a person with a lead and an
invoice asks to be erased, and the org's retention cleanup drives the request through every service's
ErasePerson, media, billing, notify, iam, then booking, recording each step in booking.

The module runs its own media, billing and jobs processes beside the session's iam, booking and
notify, so it can stop its billing without disturbing other tests (notify is "down" for one runner by
pointing it at an address nothing listens on). Most runs go through the jobs service's
RunRetentionCleanup (one org, exact counts); the last two through the command line's scheduled job."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from conftest import billing_env, jobs_env, media_env
from services.jobs.erasure import STEPS
from services.jobs.execution import org_lock_key
from services.jobs.tests.conftest import JobsEnv
from tools.processes import ServiceProc, service_proc
from tools.testkit import as_role, signing_channel, sql

SCHEMAS = ("iam", "booking", "billing", "media", "notify")
LINE = billing_pb2.LineItem(description="Deep clean", quantity="1", unit_price_cents=12000, tax_rate="5")


# --- helpers, shared with test_run_retention_cleanup.py --------------------------------------------


async def new_lead(booking: Any, org_id: str, email: str, name: str = "Erin Erasable") -> str:
    created = await booking.CreateLead(
        booking_pb2.CreateLeadRequest(
            name=name,
            phone="780-555-0199",
            email=email,
            postal_code="T5J0N3",
            structured_inputs=booking_pb2.StructuredInputs(beds=2, baths=1, cleaning_type="standard"),
        ),
        metadata=as_role(org_id, "OWNER"),
    )
    return str(created.lead.id)


async def request_deletion(booking: Any, org_id: str, lead_id: str) -> str:
    made = await booking.CreateDeletionRequest(
        booking_pb2.CreateDeletionRequestRequest(lead_id=lead_id), metadata=as_role(org_id, "OWNER")
    )
    return str(made.request.id)


async def deletion(booking: Any, org_id: str, request_id: str) -> booking_pb2.DeletionRequest:
    got = await booking.GetDeletionRequest(
        booking_pb2.GetDeletionRequestRequest(request_id=request_id), metadata=as_role(org_id, "OWNER")
    )
    return got.request


def steps_of(request: booking_pb2.DeletionRequest) -> dict[str, booking_pb2.DeletionStep]:
    """Every step by name; one booking has not listed yet reads as never attempted."""
    listed = {step.name: step for step in request.steps}
    return {name: listed.get(name, booking_pb2.DeletionStep(name=name)) for name in STEPS}


async def settled(stack: Any, org_id: str) -> None:
    """Wait until every service has published the org's events: a service whose events mentioning
    the person are still unpublished answers its step pending (rightly), which is not what the tests
    below are about."""

    async def published() -> bool:
        for schema in SCHEMAS:
            rows = await sql(
                stack.admin_url,
                f"SELECT count(*) FROM {schema}.event_outbox WHERE org_id = %s AND published_at IS NULL",
                (uuid.UUID(org_id),),
            )
            if rows[0][0]:
                return False
        return True

    give_up = time.monotonic() + 15
    while not await published():
        assert time.monotonic() < give_up, "the org's events were not published within 15 s"
        await asyncio.sleep(0.1)


async def run_cleanup(jobs: Any, org_id: str, role: str = "OWNER") -> jobs_pb2.RunRetentionCleanupResponse:
    return await jobs.RunRetentionCleanup(
        jobs_pb2.RunRetentionCleanupRequest(), metadata=as_role(org_id, role), timeout=60
    )


def counted(answer: jobs_pb2.RunRetentionCleanupResponse) -> tuple[int, int, int]:
    return (
        answer.deletion_requests_processed,
        answer.deletion_requests_completed,
        answer.deletion_steps_failed,
    )


# --- the module's own processes ---------------------------------------------------------------------


@dataclass
class Private:
    media: ServiceProc
    billing: ServiceProc
    jobs: ServiceProc


@pytest.fixture(scope="module")
def private(stack: Any, iam: Any, booking: Any, notify: Any, local_stripe: Any) -> Iterator[Private]:
    logs = stack.work_dir / "logs"
    started: list[ServiceProc] = []
    try:
        media = service_proc("media", media_env(stack, booking, notify), logs, label="media-jobs-erasure")
        started.append(media.start().wait_ready())
        billing = service_proc(
            "billing",
            billing_env(stack, iam, booking, notify, local_stripe, media),
            logs,
            label="billing-jobs-erasure",
        )
        started.append(billing.start().wait_ready())
        env = {**jobs_env(stack, iam, booking, notify, billing, media), "JOBS_ENABLED": "false"}
        jobs = service_proc("jobs", env, logs, label="jobs-erasure-driver")
        started.append(jobs.start().wait_ready())
        yield Private(media, billing, jobs)
    finally:
        for proc in reversed(started):
            proc.stop()


@dataclass
class Stubs:
    booking: Any
    billing: Any
    jobs: Any


@pytest.fixture
async def stubs(private: Private, booking: Any) -> AsyncIterator[Stubs]:
    async with (
        signing_channel(booking.target) as booking_channel,
        signing_channel(private.billing.target) as billing_channel,
        signing_channel(private.jobs.target) as jobs_channel,
    ):
        yield Stubs(
            booking_pb2_grpc.BookingServiceStub(booking_channel),
            billing_pb2_grpc.BillingServiceStub(billing_channel),
            jobs_pb2_grpc.JobsServiceStub(jobs_channel),
        )


async def person_to_erase(stubs: Stubs, org_id: str) -> tuple[str, str, str]:
    """A lead and an issued invoice to their email, and a deletion request for them: (email, invoice
    id, request id)."""
    email = f"erin-{uuid.uuid4().hex[:8]}@example.com"
    lead_id = await new_lead(stubs.booking, org_id, email)
    finance = as_role(org_id, "FINANCE")
    invoice = await stubs.billing.CreateInvoice(
        billing_pb2.CreateInvoiceRequest(client_name="Erin Erasable", client_email=email, items=[LINE]),
        metadata=finance,
    )
    await stubs.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(invoice_id=invoice.invoice.id), metadata=finance
    )
    request_id = await request_deletion(stubs.booking, org_id, lead_id)
    return email, str(invoice.invoice.id), request_id


async def holds_email(stack: Any, email: str) -> list[str]:
    """The lead and invoice rows still holding the person's email (superuser: across schemas)."""
    found = []
    for table, column in (("booking.leads", "email"), ("billing.invoices", "client_email")):
        rows = await sql(
            stack.admin_url, f"SELECT count(*) FROM {table} WHERE lower({column}) = %s", (email,)
        )
        if rows[0][0]:
            found.append(table)
    return found


# --- tests ------------------------------------------------------------------------------------------


async def test_steps_run_in_order_are_recorded_and_a_second_run_does_nothing(
    stubs: Stubs, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    email, _, request_id = await person_to_erase(stubs, org.org_id)
    pending = await deletion(stubs.booking, org.org_id, request_id)
    assert pending.status == "pending" and not any(s.done for s in steps_of(pending).values())
    await settled(stack, org.org_id)

    first = await run_cleanup(stubs.jobs, org.org_id)

    assert counted(first) == (1, 1, 0), first
    done = await deletion(stubs.booking, org.org_id, request_id)
    assert done.status == "completed" and done.HasField("completed_at")
    steps = steps_of(done)
    assert all(step.done and step.attempts == 1 and not step.last_error for step in steps.values()), steps
    # In the driver's order, booking's own step last.
    finished = [steps[name].done_at.ToDatetime() for name in STEPS]
    assert finished == sorted(finished), list(zip(STEPS, finished, strict=True))
    assert await holds_email(stack, email) == []

    # Again: the request is no longer pending, so nothing is called or recorded.
    second = await run_cleanup(stubs.jobs, org.org_id)
    assert counted(second) == (0, 0, 0), second
    assert await deletion(stubs.booking, org.org_id, request_id) == done


async def test_a_stopped_service_is_recorded_failed_and_finished_on_the_next_run(
    private: Private, stubs: Stubs, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    email, invoice_id, request_id = await person_to_erase(stubs, org.org_id)
    totals = "SELECT subtotal_cents, tax_cents, total_cents FROM billing.invoices WHERE id = %s"
    before = await sql(stack.admin_url, totals, (uuid.UUID(invoice_id),))
    await settled(stack, org.org_id)

    private.billing.stop()
    try:
        first = await run_cleanup(stubs.jobs, org.org_id)

        # The RPC answers: the counts say a step failed.
        assert counted(first) == (1, 0, 1), first
        request = await deletion(stubs.booking, org.org_id, request_id)
        assert request.status == "pending"
        steps = steps_of(request)
        assert [name for name in STEPS if steps[name].done] == ["media", "notify", "iam"]
        billing = steps["billing"]
        assert billing.attempts == 1, billing
        assert billing.last_error == "UNAVAILABLE: the billing service did not answer", billing
        assert email not in billing.last_error.lower()
        # Booking's own step waits for the other four.
        assert steps["booking"].attempts == 0 and not steps["booking"].done
        assert await holds_email(stack, email) == ["booking.leads", "billing.invoices"]
    finally:
        if not private.billing.alive:
            await private.billing.start().wait_ready_async()

    second = await run_cleanup(stubs.jobs, org.org_id)

    assert counted(second) == (1, 1, 0), second
    request = await deletion(stubs.booking, org.org_id, request_id)
    assert request.status == "completed"
    steps = steps_of(request)
    assert all(step.done for step in steps.values()), steps
    # Only billing's step and booking's ran again; the others stayed as the first run left them.
    assert {name: step.attempts for name, step in steps.items()} == {
        "media": 1,
        "billing": 2,
        "notify": 1,
        "iam": 1,
        "booking": 1,
    }
    assert await holds_email(stack, email) == []
    # The invoice stays, its totals unchanged, for the accounting.
    assert await sql(stack.admin_url, totals, (uuid.UUID(invoice_id),)) == before


async def test_the_scheduled_job_merges_its_counts_and_media_not_deployed_counts_as_done(
    private: Private, stubs: Stubs, make_org: Any, stack: Any, iam: Any, booking: Any, notify: Any
) -> None:
    org, busy = await make_org(), await make_org()
    _, _, request_id = await person_to_erase(stubs, org.org_id)
    _, _, busy_request = await person_to_erase(stubs, busy.org_id)
    await settled(stack, org.org_id)
    await settled(stack, busy.org_id)
    runner = JobsEnv(
        base={**jobs_env(stack, iam, booking, notify, private.billing), "DATABASE_URL": stack.app_url},
        prefix=f"test-{uuid.uuid4().hex[:8]}",
        stack=stack,
        work_dir=stack.work_dir,
    )

    # `busy` is being cleaned by a run for it alone (an admin's POST): the walk passes it over.
    async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as conn:
        key = org_lock_key("retention-cleanup", busy.org_id)
        cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
        assert (await cursor.fetchone()) == (True,)
        run = await runner.cli("--job", "retention-cleanup", "--once", MEDIA_GRPC_TARGET="")

    assert run.returncode == 0, run.output
    detail = run.event("job_complete", "retention-cleanup")["detail"]
    assert {"orgs", "orgs_failed", "booking_deleted", "notify_deleted"} <= set(detail), detail
    assert detail["orgs_busy"] == 1, detail
    untouched = await deletion(stubs.booking, busy.org_id, busy_request)
    assert untouched.status == "pending" and not any(s.attempts for s in untouched.steps), untouched
    assert detail["deletion_requests_processed"] >= 1 and detail["deletion_requests_completed"] >= 1, detail
    assert detail["deletion_steps_failed"] == 0, detail
    request = await deletion(stubs.booking, org.org_id, request_id)
    assert request.status == "completed"
    media = steps_of(request)["media"]
    assert media.done and not media.last_error

    # The job that needs media says it is skipped rather than failing.
    janitor = await runner.cli("--job", "storage-janitor", "--once", MEDIA_GRPC_TARGET="")
    assert janitor.returncode == 0, janitor.output
    skipped = janitor.event("job_skipped", "storage-janitor")
    assert "MEDIA_GRPC_TARGET" in skipped["reason"], skipped


async def test_the_scheduled_job_erases_what_it_can_when_notify_is_down_and_fails_the_org(
    private: Private, stubs: Stubs, make_org: Any, stack: Any, iam: Any, booking: Any, notify: Any
) -> None:
    org = await make_org()
    _, _, request_id = await person_to_erase(stubs, org.org_id)
    await settled(stack, org.org_id)
    runner = JobsEnv(
        base={
            **jobs_env(stack, iam, booking, notify, private.billing, private.media),
            "DATABASE_URL": stack.app_url,
        },
        prefix=f"test-{uuid.uuid4().hex[:8]}",
        stack=stack,
        work_dir=stack.work_dir,
    )

    # Notify is down for this runner (nothing listens there); the session's notify serves on.
    down = await runner.cli("--job", "retention-cleanup", "--once", NOTIFY_GRPC_TARGET="127.0.0.1:9")

    # Notify's retention deletions failed in every org, so the job failed, naming the code only ...
    assert down.returncode == 1, down.output
    failed = down.event("job_failed", "retention-cleanup")
    assert "orgs failed (UNAVAILABLE" in failed["error"] and org.org_id not in failed["error"], failed
    # ... after the rest ran: the person is erased everywhere notify's step does not hold up.
    request = await deletion(stubs.booking, org.org_id, request_id)
    steps = steps_of(request)
    assert [name for name in STEPS if steps[name].done] == ["media", "billing", "iam"], steps
    assert steps["notify"].last_error == "UNAVAILABLE: the notify service did not answer"
    assert steps["booking"].attempts == 0

    again = await runner.cli("--job", "retention-cleanup", "--once")

    assert again.returncode == 0, again.output
    assert (await deletion(stubs.booking, org.org_id, request_id)).status == "completed"
