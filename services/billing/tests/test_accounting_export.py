"""RunAccountingExport, the monthly accounting export's call (services/billing/accounting_export.py):
which month it takes, who may call it (the jobs service only), the header-only CSV of an empty month,
once per month, and a month too large for one gRPC message refused with the way to download it. Against
the session's billing and notify (EXPORT_MODE off: the export is kept in notify for review); the job
itself, over every org, is tested in services/jobs/tests/test_accounting_export.py."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import grpc
import pytest
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.notify.v1 import notify_pb2, notify_pb2_grpc

from libs.common.errors import InvalidArgument
from services.billing.accounting import HEADER
from services.billing.accounting_export import MAX_CSV_BYTES, Month, month_to_export
from tools.testkit import as_role, as_service, rpc_error, signing_channel, sql

# --- which month ---------------------------------------------------------------------------------


def test_the_default_month_is_the_one_before_the_org_s_today() -> None:
    assert month_to_export("", date(2027, 1, 1)) == Month(date(2026, 12, 1), date(2026, 12, 31))
    assert month_to_export("", date(2028, 3, 31)) == Month(date(2028, 2, 1), date(2028, 2, 29))
    assert month_to_export("2026-11", date(2026, 12, 2)).period == "2026-11"


@pytest.mark.parametrize(
    "month", ["2026-12", "2027-01", "2026-13", "2026-1", "26-11", "november", " 2026-11"]
)
def test_a_month_not_over_or_not_a_month_is_refused(month: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        month_to_export(month, date(2026, 12, 2))
    assert [v.field for v in refused.value.violations] == ["month"]


# --- the call ------------------------------------------------------------------------------------


def run(month: str = "") -> billing_pb2.RunAccountingExportRequest:
    return billing_pb2.RunAccountingExportRequest(month=month)


async def test_only_the_jobs_service_runs_the_export(billing: Any) -> None:
    org = str(uuid.uuid4())
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        for role in ("OWNER", "FINANCE"):
            await rpc_error(
                stub.RunAccountingExport(run(), metadata=as_role(org, role)),
                grpc.StatusCode.PERMISSION_DENIED,
            )
        # The gateway may not even claim a service context (call signing refuses it before billing
        # looks); RunAccountingExport would refuse any service but jobs all the same.
        await rpc_error(
            stub.RunAccountingExport(run(), metadata=as_service(org, "gateway")),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        bad = await rpc_error(
            stub.RunAccountingExport(run("2026-13"), metadata=as_service(org)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [v.field for v in bad.violations] == ["month"]


async def test_an_empty_month_exports_its_header_once(billing: Any, notify: Any) -> None:
    org = str(uuid.uuid4())  # unknown to IAM: UTC
    async with signing_channel(billing.target) as channel, signing_channel(notify.target) as notify_channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        first = await stub.RunAccountingExport(run("2020-02"), metadata=as_service(org))
        assert (
            first.period,
            first.exported,
            first.already_exported,
            first.rows,
            first.bytes,
            first.delivery,
        ) == (
            "2020-02",
            1,
            0,
            0,
            len(HEADER.encode()),
            "stored",
        )
        again = await stub.RunAccountingExport(run("2020-02"), metadata=as_service(org))
        assert (again.exported, again.already_exported, again.rows, again.delivery) == (0, 1, 0, "stored")

        kept = notify_pb2_grpc.NotifyServiceStub(notify_channel)
        [stored] = (
            await kept.ListStoredExports(
                notify_pb2.ListStoredExportsRequest(), metadata=as_role(org, "FINANCE")
            )
        ).exports
        assert (stored.period, stored.filename, stored.rows) == ("2020-02", "accounting-2020-02.csv", 0)
        got = await kept.GetStoredExport(
            notify_pb2.GetStoredExportRequest(id=stored.id), metadata=as_role(org, "FINANCE")
        )
        assert got.content == HEADER


async def test_a_month_too_large_for_one_message_is_refused_pointing_at_the_download(
    billing: Any, stack: Any
) -> None:
    """About 600 bytes a row: 9,000 invoices make a CSV over the 4 MiB a gRPC message to notify may
    carry. They are written behind billing's back (as the superuser), which is quicker than issuing them."""
    org = str(uuid.uuid4())
    await sql(
        stack.admin_url,
        "INSERT INTO billing.invoices (id, org_id, number, status, currency, client_name, client_email,"
        " issued_at, due_date, subtotal_cents, taxable_subtotal_cents, tax_cents, total_cents)"
        " SELECT gen_random_uuid(), %s, 'INV-' || lpad(g::text, 6, '0'), 'SENT', 'CAD', repeat('n', 200),"
        " 'client' || g || '@' || repeat('e', 240) || '.example', timestamptz '2020-01-10 12:00Z', date '2020-02-10',"
        " 10000, 10000, 500, 10500 FROM generate_series(1, 9000) AS g",
        (uuid.UUID(org),),
    )
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        refused = await rpc_error(
            stub.RunAccountingExport(run("2020-01"), metadata=as_service(org)),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    assert refused.reason == "accounting_export_too_large"
    assert f"over {MAX_CSV_BYTES:,} bytes" in refused.detail
    assert "GET /v1/admin/exports/accounting.csv?from=2020-01-01&to=2020-01-31" in refused.detail
    # Nothing recorded: the next run tries again (and fails the same way until the month is smaller).
    assert (
        await sql(
            stack.admin_url, "SELECT 1 FROM billing.accounting_exports WHERE org_id = %s", (uuid.UUID(org),)
        )
        == []
    )
