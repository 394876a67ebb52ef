"""The accounting CSV through billing's gRPC API (services/billing/accounting.py), against real Postgres:
rows from the stored snapshots (never recomputed), money per invoice, keyset pages that neither skip
nor repeat, dates and the from/to filter in the org's zone, the status filter, refusals, and another
org's invoices never in the export.

Invoices are written with SQL as the database admin (RLS bypassed on purpose): the tests need issue
times to the second and snapshots that would not come out of today's tax settings."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
from cws.billing.v1 import billing_pb2, billing_pb2_grpc

from services.billing import accounting
from tools.testkit import as_role, rpc_error, signing_channel, sql

TORONTO = "America/Toronto"


async def new_org(stack: Any, time_zone: str = TORONTO) -> str:
    org = str(uuid.uuid4())
    await sql(
        stack.admin_url,
        "INSERT INTO billing.org_settings (org_id, name, time_zone) VALUES (%s, %s, %s)",
        (org, "Books Test Org", time_zone),
    )
    return org


async def add_invoice(
    stack: Any,
    org: str,
    number: int | None,
    issued_at: datetime | None,
    *,
    status: str = "SENT",
    client_name: str = "Ada Client",
    subtotal: int = 10000,
    taxable: int = 10000,
    tax: int = 1300,
    due: date | None = None,
) -> str:
    invoice_id = str(uuid.uuid4())
    await sql(
        stack.admin_url,
        "INSERT INTO billing.invoices (id, org_id, number, status, currency, client_name, client_email,"
        " issued_at, due_date, subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis, total_cents)"
        " VALUES (%s, %s, %s, %s, 'CAD', %s, 'ada@example.com', %s, %s, %s, %s, %s, 13, %s)",
        (
            invoice_id,
            org,
            f"INV-{number:06d}" if number else None,
            status,
            client_name,
            issued_at,
            due,
            subtotal,
            taxable,
            tax,
            subtotal + tax,
        ),
    )
    return invoice_id


async def add_payment(
    stack: Any, org: str, invoice_id: str, cents: int, *, status: str = "succeeded", ref: str | None = None
) -> None:
    await sql(
        stack.admin_url,
        "INSERT INTO billing.invoice_payments (id, org_id, invoice_id, provider, method, amount_cents, currency,"
        " status, provider_ref, received_at) VALUES (%s, %s, %s, %s, %s, %s, 'CAD', %s, %s, %s)",
        (
            str(uuid.uuid4()),
            org,
            invoice_id,
            "stripe" if ref else "manual",
            "card" if ref else "cash",
            cents,
            status,
            ref,
            datetime(2026, 11, 21, 3, 0, tzinfo=UTC),  # 20 November in Toronto
        ),
    )


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def export(
    stub: Any, org: str, *, page_size: int = 0, role: str = "FINANCE", **filters: Any
) -> tuple[str, int]:
    """Every page, joined as the gateway streams them; and how many pages it took."""
    text, cursor, pages = "", "", 0
    while True:
        page = await stub.ExportAccountingCsv(
            billing_pb2.ExportAccountingCsvRequest(cursor=cursor, page_size=page_size, **filters),
            metadata=as_role(org, role),
        )
        pages += 1
        assert page.csv.startswith("invoice_id,") == (cursor == ""), page.csv[:80]
        text += page.csv
        cursor = page.next_cursor
        if not cursor:
            return text, pages


async def test_rows_money_and_the_org_zone(billing: Any, stack: Any) -> None:
    org = await new_org(stack)
    other = await new_org(stack)
    # 23:30 in Toronto on 30 November is 04:30 UTC on 1 December: a November invoice.
    late = await add_invoice(
        stack,
        org,
        1,
        datetime(2026, 12, 1, 4, 30, tzinfo=UTC),
        status="PARTIAL",
        client_name='=HYPERLINK("https://evil.example","x")',
        due=date(2026, 12, 14),
    )
    await add_payment(stack, org, late, 5000)
    await add_payment(stack, org, late, 900, status="failed")
    stripe_paid = await add_invoice(stack, org, 2, datetime(2026, 11, 10, 15, tzinfo=UTC), status="PAID")
    await add_payment(stack, org, stripe_paid, 11300, ref="pi_acct_1")
    await sql(
        stack.admin_url,
        "INSERT INTO billing.invoice_refunds (id, org_id, invoice_id, stripe_refund_id, payment_intent_id,"
        " amount_cents, currency, status) VALUES (%s, %s, %s, 're_acct_1', 'pi_acct_1', 2000, 'CAD', 'succeeded')",
        (str(uuid.uuid4()), org, stripe_paid),
    )
    voided = await add_invoice(stack, org, 3, datetime(2026, 11, 12, 15, tzinfo=UTC), status="VOID")
    # Not rows: a draft, a draft that was voided (never numbered), December in Toronto.
    await add_invoice(stack, org, None, None, status="DRAFT")
    await add_invoice(stack, org, None, None, status="VOID")
    december = await add_invoice(stack, org, 4, datetime(2026, 12, 1, 5, 30, tzinfo=UTC))
    # Another org's November invoice: never in this org's export.
    await add_invoice(stack, other, 1, datetime(2026, 11, 15, 15, tzinfo=UTC))

    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        text, _ = await export(stub, org, from_date="2026-11-01", to_date="2026-11-30")
        rows = parse(text)
        assert list(rows[0]) == list(accounting.COLUMNS)
        assert [r["invoice_id"] for r in rows] == [stripe_paid, voided, late]
        by_id = {r["invoice_id"]: r for r in rows}
        first = by_id[late]
        assert first["client_name"] == '\'=HYPERLINK("https://evil.example","x")'
        assert (first["issue_date"], first["due_date"], first["status"]) == (
            "2026-11-30",
            "2026-12-14",
            "PARTIAL",
        )
        assert (
            first["total_cents"],
            first["paid_cents"],
            first["refunded_cents"],
            first["balance_cents"],
        ) == (
            "11300",
            "5000",
            "0",
            "6300",
        )
        assert first["last_payment_date"] == "2026-11-20" and first["booking_id"] == ""
        refunded = by_id[stripe_paid]
        assert (refunded["paid_cents"], refunded["refunded_cents"], refunded["balance_cents"]) == (
            "11300",
            "2000",
            "2000",
        )
        assert (by_id[voided]["invoice_number"], by_id[voided]["balance_cents"]) == ("INV-000003", "0")

        decembers = parse((await export(stub, org, from_date="2026-12-01", to_date="2026-12-31"))[0])
        assert [r["invoice_id"] for r in decembers] == [december]
        everything = parse((await export(stub, org))[0])
        assert len(everything) == 4 and {r["invoice_number"] for r in everything} == {
            f"INV-00000{n}" for n in range(1, 5)
        }
        # Statuses are repeatable and case does not matter; the same status twice is one filter.
        some = parse((await export(stub, org, statuses=["void", "PAID", "PAID"]))[0])
        assert {r["invoice_id"] for r in some} == {voided, stripe_paid}
        # The snapshot is what was stored, not what the items or tax settings would say today.
        await sql(stack.admin_url, "UPDATE billing.org_settings SET tax_rate = 5 WHERE org_id = %s", (org,))
        again = parse((await export(stub, org, from_date="2026-11-30", to_date="2026-11-30"))[0])
        assert [(r["tax_cents"], r["tax_rate_basis"]) for r in again] == [("1300", "13.0000")]


async def test_keyset_pages_neither_skip_nor_repeat(billing: Any, stack: Any) -> None:
    org = await new_org(stack, "UTC")
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    ids = []
    for n in range(1, 12):
        # Pairs issued at the same instant: the id breaks the tie, so no row falls between two pages.
        ids.append(await add_invoice(stack, org, n, start + timedelta(hours=n // 2)))
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        text, pages = await export(stub, org, page_size=2)
        rows = parse(text)
        assert pages == 6 and len(rows) == 11
        # In (issued_at, id) order: invoice n was issued n // 2 hours after the start.
        expected = sorted(ids, key=lambda i: ((ids.index(i) + 1) // 2, uuid.UUID(i)))
        assert [r["invoice_id"] for r in rows] == expected
        exact, pages = await export(stub, org, page_size=11)
        assert pages == 1 and parse(exact) == rows
        empty = await stub.ExportAccountingCsv(
            billing_pb2.ExportAccountingCsvRequest(from_date="2030-01-01"), metadata=as_role(org, "OWNER")
        )
        assert (empty.rows, empty.next_cursor, empty.csv) == (0, "", accounting.HEADER)


async def test_refusals(billing: Any, stack: Any) -> None:
    org = await new_org(stack)
    await add_invoice(stack, org, 1, datetime(2026, 3, 1, tzinfo=UTC))
    await add_invoice(stack, org, 2, datetime(2026, 3, 2, tzinfo=UTC))
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)

        def call(role: str = "FINANCE", **fields: Any) -> Any:
            return stub.ExportAccountingCsv(
                billing_pb2.ExportAccountingCsvRequest(**fields), metadata=as_role(org, role)
            )

        for role in ("VIEWER", "DISPATCHER", "WORKER"):
            await rpc_error(call(role), grpc.StatusCode.PERMISSION_DENIED)
        bad = await rpc_error(
            call(from_date="2026-12-01", to_date="2026-11-01", statuses=["DRAFT", "LOST"]),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [v.field for v in bad.violations] == ["from", "status", "status"]
        assert "no number" in bad.violations[1].description
        assert "LOST" in bad.violations[2].description and "OVERDUE" in bad.violations[2].description
        await rpc_error(call(from_date="30/11/2026"), grpc.StatusCode.INVALID_ARGUMENT)
        await rpc_error(call(page_size=10_001), grpc.StatusCode.INVALID_ARGUMENT)
        first = await call(page_size=1)
        assert first.rows == 1 and first.next_cursor
        for forged in ("x", "!!", first.next_cursor[:-3], "YTEuMS4x", "A" * 500, first.next_cursor + "Zm9v"):
            refused = await rpc_error(call(cursor=forged), grpc.StatusCode.INVALID_ARGUMENT)
            assert [v.field for v in refused.violations] == ["cursor"]
        # A cursor is not a key to another org: RLS reads only the caller's rows after it.
        stranger = await new_org(stack)
        theirs = await stub.ExportAccountingCsv(
            billing_pb2.ExportAccountingCsvRequest(cursor=first.next_cursor),
            metadata=as_role(stranger, "OWNER"),
        )
        assert (theirs.rows, theirs.next_cursor) == (0, "")


def test_filters_and_cursors_in_the_domain() -> None:
    assert accounting.check_filters(None, None, []) == accounting.ACCOUNTING_STATUSES
    assert accounting.check_filters(date(2026, 1, 1), date(2026, 1, 1), [" sent "]) == ("SENT",)
    at = datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC)
    key = uuid.uuid4()
    assert accounting.decode_cursor(accounting.encode_cursor(at, key)) == (at, key)
    low, high = accounting.utc_bounds(accounting.zone_of(TORONTO), date(2026, 11, 1), date(2026, 11, 30))
    assert (low, high) == (datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC))
    assert accounting.utc_bounds(accounting.zone_of("Asia/Tokyo"), date.min, date.max) == (None, None)
