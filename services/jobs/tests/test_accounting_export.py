"""The accounting-export job (`python -m services.jobs.run --job accounting-export --once`) against the
session's real billing and notify (EXPORT_MODE off, so each month's CSV is kept in notify for review):
invoices are issued through billing's gRPC API as finance staff, their issue times moved behind
billing's back to either side of a month's end in the org's zone, and the job's one call per org
exports the previous month once."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.notify.v1 import notify_pb2, notify_pb2_grpc

from services.jobs.tests.conftest import JobsEnv, reset_jobs
from tools.testkit import as_role, signing_channel, sql

JOB = "accounting-export"
ZONE = "America/Toronto"
LINE = billing_pb2.LineItem(description="Deep clean", quantity="2", unit_price_cents=5000, tax_rate="13")


async def issued_at(stub: Any, stack: Any, org_id: str, when: datetime, client: str = "Ada Client") -> str:
    """An issued invoice whose issue time is `when`; its number."""
    finance = as_role(org_id, "FINANCE")
    created = await stub.CreateInvoice(
        billing_pb2.CreateInvoiceRequest(client_name=client, client_email="ada@example.com", items=[LINE]),
        metadata=finance,
    )
    issued = await stub.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(invoice_id=created.invoice.id), metadata=finance
    )
    await sql(
        stack.admin_url,
        "UPDATE billing.invoices SET issued_at = %s WHERE id = %s",
        (when, uuid.UUID(created.invoice.id)),
    )
    return str(issued.invoice.number)


def local(day: date, hour: int, minute: int) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


async def stored(notify_stub: Any, org_id: str) -> list[tuple[Any, str]]:
    """The org's kept exports, each with its CSV."""
    finance = as_role(org_id, "FINANCE")
    listed = await notify_stub.ListStoredExports(notify_pb2.ListStoredExportsRequest(), metadata=finance)
    found = []
    for export in listed.exports:
        got = await notify_stub.GetStoredExport(
            notify_pb2.GetStoredExportRequest(id=export.id), metadata=finance
        )
        found.append((export, got.content))
    return found


async def test_the_job_keeps_last_month_s_csv_once_per_org(
    billing_jobs_setup: JobsEnv, billing: Any, notify: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org("Toronto Cleaners", time_zone=ZONE)
    quiet = await make_org("Quiet Cleaners")  # no invoices at all
    this_month = datetime.now(ZoneInfo(ZONE)).date().replace(day=1)
    last_day = this_month - timedelta(days=1)
    period = f"{last_day:%Y-%m}"
    async with signing_channel(billing.target) as channel, signing_channel(notify.target) as notify_channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        notify_stub = notify_pb2_grpc.NotifyServiceStub(notify_channel)
        # 23:30 on the month's last day in Toronto is the next day in UTC, and still last month.
        late = await issued_at(stub, stack, org.org_id, local(last_day, 23, 30), client="=HYPERLINK(x)")
        mid = await issued_at(stub, stack, org.org_id, local(last_day.replace(day=15), 12, 0))
        await issued_at(stub, stack, org.org_id, local(this_month, 0, 30))  # this month: not over yet
        await stub.CreateInvoice(  # a draft: never exported
            billing_pb2.CreateInvoiceRequest(client_name="Draft", client_email="d@example.com", items=[LINE]),
            metadata=as_role(org.org_id, "FINANCE"),
        )
        await reset_jobs(stack, JOB)

        run = await billing_jobs_setup.cli("--job", JOB, "--once")

        assert run.returncode == 0, run.output
        done = run.event("job_complete", JOB)
        assert done["outcome"] == "ok" and done["detail"]["orgs_failed"] == 0, done
        assert done["detail"]["exported"] >= 2, done
        [(export, content)] = await stored(notify_stub, org.org_id)
        assert (export.period, export.filename, export.rows) == (period, f"accounting-{period}.csv", 2)
        assert export.bytes == len(content.encode())
        table = list(csv.DictReader(io.StringIO(content)))
        assert sorted(row["invoice_number"] for row in table) == sorted([late, mid])
        assert {row["client_name"] for row in table} == {"'=HYPERLINK(x)", "Ada Client"}
        by_number = {row["invoice_number"]: row for row in table}
        assert by_number[late]["issue_date"] == last_day.isoformat()  # the org's date, not UTC's
        [(empty, header_only)] = await stored(notify_stub, quiet.org_id)
        assert (empty.period, empty.rows) == (
            f"{datetime.now(UTC).date().replace(day=1) - timedelta(days=1):%Y-%m}",
            0,
        )
        assert header_only.startswith("invoice_id,invoice_number,") and header_only.count("\r\n") == 1
        recorded = await sql(
            stack.admin_url,
            "SELECT period, rows, bytes, delivery FROM billing.accounting_exports WHERE org_id = %s",
            (uuid.UUID(org.org_id),),
        )
        assert recorded == [(period, 2, len(content.encode()), "stored")]

        # Again (the next day's run): every month is exported already; nothing new is kept.
        again = await billing_jobs_setup.cli("--job", JOB, "--once")
        assert again.returncode == 0, again.output
        detail = again.event("job_complete", JOB)["detail"]
        assert detail["exported"] == 0 and detail["already_exported"] == detail["orgs"], detail
        assert len(await stored(notify_stub, org.org_id)) == 1

        # Billing died after notify had the month and before recording it: the next run hands it over
        # again, notify answers with the first export, and billing records it.
        await sql(
            stack.admin_url,
            "DELETE FROM billing.accounting_exports WHERE org_id = %s",
            (uuid.UUID(org.org_id),),
        )
        third = await billing_jobs_setup.cli("--job", JOB, "--once")
        assert third.returncode == 0, third.output
        assert third.event("job_complete", JOB)["detail"]["exported"] == 1
        assert [e.id for e, _ in await stored(notify_stub, org.org_id)] == [export.id]
        assert (
            len(
                await sql(
                    stack.admin_url,
                    "SELECT 1 FROM billing.accounting_exports WHERE org_id = %s",
                    (uuid.UUID(org.org_id),),
                )
            )
            == 1
        )
