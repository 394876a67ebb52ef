"""The invoices-overdue job (`python -m services.jobs.run --job invoices-overdue --once`) against the
session's real billing: invoices are made through billing's gRPC API as finance staff, their due dates
moved into the past behind billing's back, and the job's one call per org does the rest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cws.billing.v1 import billing_pb2, billing_pb2_grpc

from services.jobs.tests.conftest import JobsEnv, reset_jobs
from tools.devstack import free_port
from tools.testkit import as_role, signing_channel, sql

JOB = "invoices-overdue"
LINE = billing_pb2.LineItem(description="Deep clean", quantity="3", unit_price_cents=4500, tax_rate="13")


async def issued_invoice(stub: Any, org_id: str, *, paid_cents: int = 0) -> str:
    """A SENT invoice due today (in UTC, the org's zone), PARTIAL once `paid_cents` are recorded."""
    finance = as_role(org_id, "FINANCE")
    created = await stub.CreateInvoice(
        billing_pb2.CreateInvoiceRequest(
            client_name="Ada Client",
            client_email="ada@example.com",
            items=[LINE],
            due_date=datetime.now(UTC).date().isoformat(),
        ),
        metadata=finance,
    )
    invoice_id = str(created.invoice.id)
    issued = await stub.IssueInvoice(billing_pb2.IssueInvoiceRequest(invoice_id=invoice_id), metadata=finance)
    assert issued.invoice.status == "SENT", issued
    if paid_cents:
        paid = await stub.RecordManualPayment(
            billing_pb2.RecordManualPaymentRequest(
                invoice_id=invoice_id, amount_cents=paid_cents, method="cash"
            ),
            metadata=finance,
        )
        assert paid.invoice.status == "PARTIAL", paid
    return invoice_id


async def past_due(stack: Any, *invoice_ids: str) -> None:
    for invoice_id in invoice_ids:
        await sql(
            stack.admin_url,
            "UPDATE billing.invoices SET due_date = due_date - 3 WHERE id = %s",
            (uuid.UUID(invoice_id),),
        )


async def status_of(stub: Any, org_id: str, invoice_id: str) -> str:
    found = await stub.GetInvoice(
        billing_pb2.GetInvoiceRequest(invoice_id=invoice_id), metadata=as_role(org_id, "FINANCE")
    )
    return str(found.invoice.status)


async def overdue_events(stack: Any, org_id: str) -> int:
    [(count,)] = await sql(
        stack.admin_url,
        "SELECT count(*) FROM billing.event_outbox WHERE subject = %s AND org_id = %s",
        ("cws.billing.invoice.overdue", uuid.UUID(org_id)),
    )
    return int(count)


async def test_sent_invoices_past_due_become_overdue_and_partial_ones_stay_partial(
    billing_jobs_setup: JobsEnv, billing: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        late = await issued_invoice(stub, org.org_id)
        partly_paid = await issued_invoice(stub, org.org_id, paid_cents=5000)
        due_today = await issued_invoice(stub, org.org_id)
        await past_due(stack, late, partly_paid)
        await reset_jobs(stack, JOB)

        run = await billing_jobs_setup.cli("--job", JOB, "--once")

        assert run.returncode == 0, run.output
        done = run.event("job_complete", JOB)
        assert done["outcome"] == "ok" and done["trigger"] == "once", done
        assert done["detail"]["orgs_failed"] == 0 and done["detail"]["marked"] >= 1, done
        assert await status_of(stub, org.org_id, late) == "OVERDUE"
        assert await status_of(stub, org.org_id, partly_paid) == "PARTIAL"
        assert await status_of(stub, org.org_id, due_today) == "SENT"  # due today is not late yet
        assert await overdue_events(stack, org.org_id) == 1

        # Again the same day: nothing is marked twice, and no second event is raised.
        again = await billing_jobs_setup.cli("--job", JOB, "--once")
        assert again.returncode == 0, again.output
        assert again.event("job_complete", JOB)["detail"]["marked"] == 0
        assert await status_of(stub, org.org_id, late) == "OVERDUE"
        assert await overdue_events(stack, org.org_id) == 1


async def test_the_job_fails_when_billing_cannot_be_reached(
    jobs_setup: JobsEnv, make_org: Any, stack: Any
) -> None:
    await make_org()  # at least one org to call billing for
    await reset_jobs(stack, JOB)

    run = await jobs_setup.cli("--job", JOB, "--once", BILLING_GRPC_TARGET=f"127.0.0.1:{free_port()}")

    assert run.returncode == 1, run.output
    failed = [e for e in run.events if e.get("name") == JOB and e.get("outcome") == "failed"]
    assert failed and "UNAVAILABLE" in failed[0]["error"], run.output
