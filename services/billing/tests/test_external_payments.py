"""Payments from an outside ledger (integrations' qbo-sync records what an accountant entered in
QuickBooks Online) and the invoices-changed-since read the sync pushes from: against real Postgres as
the runtime role, then through the billing process's gRPC API (a suite service caller, audited).

A provider_ref is recorded once: the same ref again answers created=false and writes nothing, even once
the invoice is paid. An amount above the balance due, a draft or void invoice, a ref of another invoice
are refused (FAILED_PRECONDITION); another currency is invalid; another org's invoice is not found.
Every change moves invoices.updated_at, so "changed since" sees it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.common.v1 import audit_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.billing import invoices, payments
from services.billing.events import INVOICE_PAID
from services.billing.models import SCHEMA, event_tables
from services.billing.status import InvoiceStatus
from tools.bench.billing_bench import seed_invoices
from tools.testkit import as_role, as_service, explained, rpc_error, signing_channel

TODAY = datetime.now(UTC).date()
DUE = TODAY + timedelta(days=14)
CLEANING = {"description": "Deep clean", "quantity": "3", "unit_price_cents": 4500, "tax_rate": "13"}
TOTAL = 13500 + 1755
LINE = billing_pb2.LineItem(description="Deep clean", quantity="3", unit_price_cents=4500, tax_rate="13")


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=8)
    yield database
    await database.dispose()


def admin_rows(stack: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.admin_url) as admin:
        return admin.execute(query, params).fetchall()


async def issued(db: Database, org: uuid.UUID) -> uuid.UUID:
    async with unit_of_work(db, org) as uow:
        created = await invoices.create_draft(uow, "CAD", "Ada Client", "ada@example.com", [CLEANING], DUE)
    async with unit_of_work(db, org) as uow:
        await invoices.issue(uow, created.id, TODAY)
    return created.id


async def external(
    db: Database, org: uuid.UUID, invoice_id: uuid.UUID | str, cents: int, ref: str, **kw: Any
) -> payments.ExternalPayment:
    async with unit_of_work(db, org) as uow:
        return await payments.record_external_payment(
            uow,
            invoice_id=invoice_id,
            amount_cents=cents,
            currency=kw.get("currency", "CAD"),
            provider=kw.get("provider", "quickbooks"),
            provider_ref=ref,
            received_at=kw.get("received_at"),
            recorded_by="service:integrations",
            today=TODAY,
        )


async def updated_at(db: Database, org: uuid.UUID, invoice_id: uuid.UUID) -> datetime:
    async with unit_of_work(db, org) as uow:
        found = await invoices.get(uow, invoice_id)
    assert found.updated_at is not None
    return found.updated_at


def payment_rows(stack: Any, invoice_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return admin_rows(
        stack,
        "SELECT provider, method, amount_cents, status, provider_ref FROM billing.invoice_payments"
        " WHERE invoice_id = %s ORDER BY created_at, id",
        invoice_id,
    )


async def test_an_external_payment_is_recorded_once_per_ref_and_pays_the_invoice(
    db: Database, stack: Any
) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    first = await external(db, org, invoice_id, 5000, f"qbo:1:77:{invoice_id}")
    assert first.created and (first.before.status, first.after.status) == (
        InvoiceStatus.SENT,
        InvoiceStatus.PARTIAL,
    )
    again = await external(db, org, invoice_id, 5000, f"qbo:1:77:{invoice_id}")
    assert not again.created and again.after.paid_cents == 5000
    rest = await external(db, org, invoice_id, TOTAL - 5000, f"qbo:1:78:{invoice_id}")
    assert rest.created and rest.after.status is InvoiceStatus.PAID and rest.after.outstanding_cents == 0
    # The first ref once more, now that the invoice is PAID: still "already recorded", not a refusal.
    replay = await external(db, org, invoice_id, 5000, f"qbo:1:77:{invoice_id}")
    assert not replay.created and replay.after.status is InvoiceStatus.PAID
    assert payment_rows(stack, invoice_id) == [
        ("quickbooks", "other", 5000, "succeeded", f"qbo:1:77:{invoice_id}"),
        ("quickbooks", "other", TOTAL - 5000, "succeeded", f"qbo:1:78:{invoice_id}"),
    ]
    paid_events = admin_rows(
        stack,
        "SELECT count(*) FROM billing.event_outbox WHERE org_id = %s AND subject = %s",
        org,
        INVOICE_PAID.subject,
    )
    assert paid_events == [(1,)]


async def test_refused_external_payments_write_nothing(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    with pytest.raises(FailedPrecondition) as above:
        await external(db, org, invoice_id, TOTAL + 1, "qbo:1:1:a")
    assert above.value.code == "payment_above_balance"
    assert f"balance due of {TOTAL} cents" in str(above.value)
    with pytest.raises(InvalidArgument):
        await external(db, org, invoice_id, 100, "qbo:1:1:b", currency="USD")
    with pytest.raises(InvalidArgument):
        await external(db, org, invoice_id, 100, "qbo:1:1:c", provider="xero")
    with pytest.raises(InvalidArgument):
        await external(db, org, invoice_id, 0, "qbo:1:1:d")
    with pytest.raises(InvalidArgument):
        await external(db, org, invoice_id, 100, "  ")
    with pytest.raises(NotFound):
        await external(db, uuid.uuid4(), invoice_id, 100, "qbo:1:1:e")
    assert payment_rows(stack, invoice_id) == []
    # A ref recorded against one invoice is not taken for another.
    other = await issued(db, org)
    await external(db, org, invoice_id, 100, "qbo:1:2:x")
    with pytest.raises(FailedPrecondition) as moved:
        await external(db, org, other, 100, "qbo:1:2:x")
    assert moved.value.code == "payment_ref_other_invoice"
    # A void invoice takes no payment.
    async with unit_of_work(db, org) as uow:
        await invoices.void(uow, other)
    with pytest.raises(FailedPrecondition) as void:
        await external(db, org, other, 100, "qbo:1:3:y")
    assert void.value.code == "invoice_not_payable"
    assert payment_rows(stack, other) == []


async def test_concurrent_copies_of_one_ref_record_one_payment(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    results = await asyncio.gather(*(external(db, org, invoice_id, 1000, "qbo:1:9:z") for _ in range(5)))
    assert sorted(r.created for r in results) == [False, False, False, False, True]
    assert len(payment_rows(stack, invoice_id)) == 1


async def test_updated_at_moves_on_every_change(db: Database) -> None:
    org = uuid.uuid4()
    async with unit_of_work(db, org) as uow:
        created = await invoices.create_draft(uow, "CAD", "Ada Client", "ada@example.com", [CLEANING], DUE)
    stamps = [await updated_at(db, org, created.id)]
    async with unit_of_work(db, org) as uow:
        await invoices.issue(uow, created.id, TODAY)
    stamps.append(await updated_at(db, org, created.id))
    await external(db, org, created.id, 1000, "qbo:1:a:1")  # SENT -> PARTIAL
    stamps.append(await updated_at(db, org, created.id))
    await external(db, org, created.id, 1000, "qbo:1:a:2")  # PARTIAL stays PARTIAL: still a change
    stamps.append(await updated_at(db, org, created.id))
    async with unit_of_work(db, org) as uow:
        await payments.record_manual_payment(uow, created.id, 500, "cash", "", None, "user:x", TODAY)
    stamps.append(await updated_at(db, org, created.id))
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # Overdue: a SENT invoice whose due date passed.
    other = await issued(db, org)
    before = await updated_at(db, org, other)
    async with unit_of_work(db, org) as uow:
        marked = await invoices.mark_overdue(uow, DUE + timedelta(days=1))
    assert other in [m.id for m in marked]
    assert await updated_at(db, org, other) > before


async def test_changed_since_lists_oldest_change_first_with_items(db: Database) -> None:
    org = uuid.uuid4()
    first, second = await issued(db, org), await issued(db, org)
    since = await updated_at(db, org, first)
    await external(db, org, first, 100, "qbo:1:b:1")  # first changes after second now
    async with unit_of_work(db, org) as uow:
        found, total = await invoices.list_page(uow, limit=10, offset=0, updated_since=since)
    assert [i.id for i in found] == [second, first] and total == 2
    assert [len(i.items) for i in found] == [1, 1] and found[0].items[0].description == "Deep clean"
    async with unit_of_work(db, org) as uow:
        later, _ = await invoices.list_page(
            uow,
            limit=10,
            offset=0,
            updated_since=await updated_at(db, org, first) + timedelta(microseconds=1),
        )
    assert later == []


@pytest.mark.timeout(300)
async def test_the_changed_since_read_touches_only_the_changed_rows_through_its_index(
    db: Database, stack: Any
) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    seed_invoices(stack.admin_url, other, 20_000)  # another org's many invoices: RLS must not read them
    seed_invoices(stack.admin_url, mine, 2_000)
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        # Most of the org's invoices last changed two months ago; 30 changed since yesterday.
        conn.execute(
            "UPDATE billing.invoices SET updated_at = now() - interval '60 days' WHERE org_id = %s", (mine,)
        )
        conn.execute(
            "UPDATE billing.invoices SET updated_at = now() WHERE id IN"
            " (SELECT id FROM billing.invoices WHERE org_id = %s ORDER BY id LIMIT 30)",
            (mine,),
        )
        conn.execute("ANALYZE billing.invoices")
    since = datetime.now(UTC) - timedelta(days=1)
    plans = await explained(
        db, mine, lambda uow: invoices.list_page(uow, limit=200, offset=0, updated_since=since)
    )
    page = next(
        nodes for statement, nodes in plans if "ORDER BY" in statement and "invoice_items" not in statement
    )
    scans = [node for node in page if node.get("Index Name")]
    assert scans and all(node["Index Name"] == "ix_invoices_org_updated" for node in scans), page
    assert all(node.get("Actual Rows", 0) <= 30 for node in page), page
    assert not any(node["Node Type"] == "Seq Scan" for node in page), page


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def test_record_external_payment_through_the_service(billing: Any, stack: Any) -> None:
    org = str(uuid.uuid4())
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        created = await stub.CreateInvoice(
            billing_pb2.CreateInvoiceRequest(client_name="Ada", client_email="ada@example.com", items=[LINE]),
            metadata=as_role(org, "FINANCE"),
        )
        invoice_id = created.invoice.id
        await stub.IssueInvoice(
            billing_pb2.IssueInvoiceRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
        )
        ref = f"qbo:9130:55:{invoice_id}"
        request = billing_pb2.RecordExternalPaymentRequest(
            invoice_id=invoice_id,
            amount_cents=TOTAL,
            currency="CAD",
            provider="quickbooks",
            provider_ref=ref,
            received_at=ts(datetime.now(UTC) - timedelta(hours=1)),
        )
        # Only a suite service records outside payments; staff record theirs by hand.
        await rpc_error(
            stub.RecordExternalPayment(request, metadata=as_role(org, "OWNER")),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        first = await stub.RecordExternalPayment(request, metadata=as_service(org, "integrations"))
        assert first.created and first.invoice.status == "PAID" and first.invoice.outstanding_cents == 0
        assert [(p.provider, p.provider_ref) for p in first.invoice.payments] == [("quickbooks", ref)]
        second = await stub.RecordExternalPayment(request, metadata=as_service(org, "integrations"))
        assert not second.created and len(second.invoice.payments) == 1
        # Another org's invoice does not exist for the caller.
        await rpc_error(
            stub.RecordExternalPayment(request, metadata=as_service(str(uuid.uuid4()), "integrations")),
            grpc.StatusCode.NOT_FOUND,
        )
        # Above the balance due: a clear 409-like refusal.
        other = await stub.CreateInvoice(
            billing_pb2.CreateInvoiceRequest(client_name="Bo", client_email="bo@example.com", items=[LINE]),
            metadata=as_role(org, "FINANCE"),
        )
        await stub.IssueInvoice(
            billing_pb2.IssueInvoiceRequest(invoice_id=other.invoice.id), metadata=as_role(org, "FINANCE")
        )
        too_much = billing_pb2.RecordExternalPaymentRequest(
            invoice_id=other.invoice.id,
            amount_cents=TOTAL + 1,
            currency="CAD",
            provider="quickbooks",
            provider_ref=f"qbo:9130:56:{other.invoice.id}",
        )
        error = await rpc_error(
            stub.RecordExternalPayment(too_much, metadata=as_service(org, "integrations")),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "above the balance due" in error.detail
        # Changed since: oldest change first (the payment came before the second invoice was issued),
        # with items and updated_at.
        listed = await stub.ListInvoices(
            billing_pb2.ListInvoicesRequest(updated_since=first.invoice.created_at),
            metadata=as_service(org, "integrations"),
        )
        assert [i.id for i in listed.invoices] == [invoice_id, other.invoice.id]
        assert all(i.items and i.HasField("updated_at") for i in listed.invoices)
    # The write was audited once, with the settlement before and after (the replay wrote nothing).
    audits = admin_rows(
        stack,
        "SELECT payload FROM billing.event_outbox WHERE org_id = %s AND subject = 'cws.billing.audit.recorded'",
        uuid.UUID(org),
    )
    records = [audit_pb2.AdminAuditRecorded.FromString(bytes(p)) for (p,) in audits]
    external_records = [r for r in records if r.action == "billing.RecordExternalPayment"]
    assert len(external_records) == 1
    record = external_records[0]
    assert record.actor == "service:integrations"
    assert record.before["status"] == "SENT" and record.after["status"] == "PAID"
    assert record.after["provider_ref"] == ref
