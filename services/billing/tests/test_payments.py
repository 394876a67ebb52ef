"""Payments against real Postgres, as the runtime role under forced RLS: manual payments (partial, full,
refused ones writing nothing), Stripe payments and refunds upserted by Stripe's ids with statuses that
only move forward (so out-of-order delivery ends in the same state), the refundable balance, the list
summaries (one query) and tenancy. Outbox rows and writes behind the code's back go through the
superuser connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.billing import invoices, payments
from services.billing.events import INVOICE_PAID, INVOICE_REFUNDED
from services.billing.models import SCHEMA, event_tables
from services.billing.status import InvoiceStatus, Settlement

# The real date: the session's jobs process marks past-due SENT invoices OVERDUE by the clock, so these
# invoices must not be past due in real time (a fixed date would make them so on a later run).
TODAY = datetime.now(UTC).date()
DUE = TODAY + timedelta(days=14)
CLEANING = {"description": "Deep clean", "quantity": "3", "unit_price_cents": 4500, "tax_rate": "13"}
TOTAL = 13500 + 1755  # 3 x 45.00 + 13 %


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=24)
    yield database
    await database.dispose()


async def draft(db: Database, org: uuid.UUID, due: date = DUE) -> uuid.UUID:
    async with unit_of_work(db, org) as uow:
        created = await invoices.create_draft(uow, "CAD", "Ada Client", "ada@example.com", [CLEANING], due)
    return created.id


async def issued(db: Database, org: uuid.UUID, due: date = DUE) -> uuid.UUID:
    """A SENT invoice for TOTAL cents, due in two weeks unless told."""
    invoice_id = await draft(db, org, due)
    async with unit_of_work(db, org) as uow:
        await invoices.issue(uow, invoice_id, min(TODAY, due))
    return invoice_id


async def status_of(db: Database, org: uuid.UUID, invoice_id: uuid.UUID) -> InvoiceStatus:
    async with unit_of_work(db, org) as uow:
        return (await invoices.get(uow, invoice_id)).status


async def manual(db: Database, org: uuid.UUID, invoice_id: uuid.UUID, cents: int, **kw: Any) -> Settlement:
    args: dict[str, Any] = {
        "method": "etransfer",
        "reference": "ref-1",
        "received_at": None,
        "recorded_by": "user:finance",
        **kw,
    }
    async with unit_of_work(db, org) as uow:
        return await payments.record_manual_payment(
            uow,
            invoice_id,
            cents,
            args["method"],
            args["reference"],
            args["received_at"],
            args["recorded_by"],
            TODAY,
        )


async def stripe_payment(
    db: Database,
    org: uuid.UUID,
    invoice_id: uuid.UUID,
    intent: str,
    cents: int,
    status: Any = "succeeded",
    currency: str = "cad",
    today: date = TODAY,
) -> tuple[bool, Settlement]:
    async with unit_of_work(db, org) as uow:
        return await payments.record_stripe_payment(
            uow,
            invoice_id=invoice_id,
            payment_intent_id=intent,
            amount_cents=cents,
            currency=currency,
            status=status,
            today=today,
        )


async def refund(
    db: Database,
    org: uuid.UUID,
    invoice_id: uuid.UUID,
    refund_id: str,
    intent: str,
    cents: int,
    status: str = "succeeded",
    today: date = TODAY,
) -> tuple[bool, Settlement]:
    async with unit_of_work(db, org) as uow:
        return await payments.record_refund(
            uow,
            invoice_id=invoice_id,
            stripe_refund_id=refund_id,
            payment_intent_id=intent,
            amount_cents=cents,
            currency="CAD",
            status=status,
            reason="requested_by_customer",
            requested_by="user:finance",
            today=today,
        )


def admin_rows(stack: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.admin_url) as admin:
        return admin.execute(query, params).fetchall()


def outbox(stack: Any, org: uuid.UUID, subject: str) -> int:
    return int(
        admin_rows(
            stack,
            "SELECT count(*) FROM billing.event_outbox WHERE org_id = %s AND subject = %s",
            org,
            subject,
        )[0][0]
    )


def payment_rows(stack: Any, invoice_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return admin_rows(
        stack,
        "SELECT provider, method, amount_cents, currency, status, provider_ref, reference "
        "FROM billing.invoice_payments WHERE invoice_id = %s ORDER BY created_at, id",
        invoice_id,
    )


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements the engine runs inside the block."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)


async def test_manual_partial_then_full_pays_the_invoice_and_raises_paid_once(
    db: Database, stack: Any
) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    first = await manual(db, org, invoice_id, 5000)
    assert first == Settlement(InvoiceStatus.PARTIAL, 5000, TOTAL - 5000, 1)
    assert await status_of(db, org, invoice_id) is InvoiceStatus.PARTIAL
    assert outbox(stack, org, INVOICE_PAID.subject) == 0

    async with unit_of_work(db, org) as uow:
        second = await payments.record_manual_payment(
            uow, invoice_id, TOTAL - 5000, "cheque", "  cheque 42  ", None, "user:finance", TODAY
        )
        raised = [e for e in uow.events if e.subject == INVOICE_PAID.subject]
    assert second == Settlement(InvoiceStatus.PAID, TOTAL, 0, 2)
    assert len(raised) == 1
    message = raised[0].message
    assert (message.status, message.paid_cents, message.outstanding_cents, message.total_cents) == (
        "PAID",
        TOTAL,
        0,
        TOTAL,
    )
    assert (message.number, message.currency, message.due_date) == ("INV-000001", "CAD", DUE.isoformat())
    assert outbox(stack, org, INVOICE_PAID.subject) == 1
    assert [r[:5] + r[6:] for r in payment_rows(stack, invoice_id)] == [
        ("manual", "etransfer", 5000, "CAD", "succeeded", "ref-1"),
        ("manual", "cheque", TOTAL - 5000, "CAD", "succeeded", "cheque 42"),
    ]
    # Settling again (nothing changed) raises nothing more.
    async with unit_of_work(db, org) as uow:
        before, after = await payments.settle(uow, invoice_id, TODAY)
        assert uow.events == []
    assert before == after == second
    assert outbox(stack, org, INVOICE_PAID.subject) == 1


async def test_refused_manual_payments_write_nothing(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    await manual(db, org, invoice_id, 1000)
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({}, TOTAL - 1000 + 1, "amount_cents"),  # above the outstanding balance
        ({}, 0, "amount_cents"),
        ({}, -5, "amount_cents"),
        ({}, True, "amount_cents"),
        ({"method": "card"}, 100, "method"),
        ({"method": "bitcoin"}, 100, "method"),
        ({"reference": "x" * 201}, 100, "reference"),
        ({"received_at": datetime.now(UTC) + timedelta(days=1)}, 100, "received_at"),
        ({"received_at": datetime(2026, 12, 1, 12, 0)}, 100, "received_at"),  # no time zone
    ]
    for changes, cents, bad_field in refusals:
        with pytest.raises(InvalidArgument) as refused:
            await manual(db, org, invoice_id, cents, **changes)
        assert [v.field for v in refused.value.violations] == [bad_field], changes
    with pytest.raises(InvalidArgument) as above:
        await manual(db, org, invoice_id, TOTAL)
    assert f"{TOTAL - 1000} cents" in str(above.value)  # names the balance
    assert len(payment_rows(stack, invoice_id)) == 1
    assert await status_of(db, org, invoice_id) is InvoiceStatus.PARTIAL

    # A payment received yesterday is fine.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await manual(db, org, invoice_id, 500, method="cash", received_at=yesterday)
    stored = admin_rows(
        stack,
        "SELECT received_at FROM billing.invoice_payments WHERE invoice_id = %s AND method = 'cash'",
        invoice_id,
    )
    assert stored == [(yesterday,)]


async def test_draft_void_and_paid_invoices_take_no_manual_payment(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    a_draft = await draft(db, org)
    voided = await issued(db, org)
    async with unit_of_work(db, org) as uow:
        await invoices.void(uow, voided)
    for invoice_id, status in ((a_draft, "DRAFT"), (voided, "VOID")):
        with pytest.raises(FailedPrecondition) as refused:
            await manual(db, org, invoice_id, 100)
        assert refused.value.code == "invoice_not_payable" and status in refused.value.detail
        assert payment_rows(stack, invoice_id) == []
    paid = await issued(db, org)
    await manual(db, org, paid, TOTAL)
    with pytest.raises(InvalidArgument) as nothing_owed:
        await manual(db, org, paid, 1)
    assert "no outstanding balance" in str(nothing_owed.value)
    assert len(payment_rows(stack, paid)) == 1


async def test_concurrent_manual_payments_of_the_whole_balance_record_one(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    results = await asyncio.gather(
        *(manual(db, org, invoice_id, TOTAL) for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, Settlement) for r in results) == 1
    assert all(isinstance(r, InvalidArgument) for r in results if not isinstance(r, Settlement))
    assert len(payment_rows(stack, invoice_id)) == 1
    assert outbox(stack, org, INVOICE_PAID.subject) == 1


async def test_a_stripe_payment_is_one_row_per_intent_and_succeeded_is_final(
    db: Database, stack: Any
) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    assert await stripe_payment(db, org, invoice_id, "pi_1", TOTAL) == (
        True,
        Settlement(InvoiceStatus.PAID, TOTAL, 0, 1),
    )
    assert await stripe_payment(db, org, invoice_id, "pi_1", TOTAL) == (
        False,
        Settlement(InvoiceStatus.PAID, TOTAL, 0, 1),
    )
    # A 'failed' or 'pending' delivered after 'succeeded' (out of order) leaves it succeeded.
    for late in ("failed", "pending"):
        changed, after = await stripe_payment(db, org, invoice_id, "pi_1", TOTAL, late)
        assert not changed and after.status is InvoiceStatus.PAID
    assert payment_rows(stack, invoice_id) == [("stripe", "card", TOTAL, "CAD", "succeeded", "pi_1", "")]
    assert outbox(stack, org, INVOICE_PAID.subject) == 1

    # failed -> succeeded (the customer retried the intent); pending -> failed; failed never -> pending.
    other = await issued(db, org)
    assert (await stripe_payment(db, org, other, "pi_2", 4000, "pending"))[1].status is InvoiceStatus.SENT
    assert (await stripe_payment(db, org, other, "pi_2", 4000, "failed"))[0] is True
    assert (await stripe_payment(db, org, other, "pi_2", 4000, "pending"))[0] is False
    assert payment_rows(stack, other)[0][4] == "failed"
    changed, after = await stripe_payment(db, org, other, "pi_2", 4000, "succeeded")
    assert changed and after == Settlement(InvoiceStatus.PARTIAL, 4000, TOTAL - 4000, 1)
    assert [r[4] for r in payment_rows(stack, other)] == ["succeeded"]


async def test_a_stripe_payment_in_another_currency_stores_nothing(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    with pytest.raises(InvalidArgument) as refused:
        await stripe_payment(db, org, invoice_id, "pi_usd", TOTAL, currency="usd")
    assert "USD" in str(refused.value) and "CAD" in str(refused.value)
    for bad_cents in (0, -1):
        with pytest.raises(InvalidArgument):
            await stripe_payment(db, org, invoice_id, "pi_zero", bad_cents)
    with pytest.raises(InvalidArgument):
        await stripe_payment(db, org, invoice_id, "pi_odd", 100, status="refunded")
    assert payment_rows(stack, invoice_id) == []
    assert await status_of(db, org, invoice_id) is InvoiceStatus.SENT


async def test_a_refund_before_its_payment_counts_once_the_payment_arrives(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    changed, early = await refund(db, org, invoice_id, "re_1", "pi_1", 5000)
    assert changed and early == Settlement(InvoiceStatus.SENT, 0, TOTAL, 0)  # nothing to refund yet
    assert outbox(stack, org, INVOICE_REFUNDED.subject) == 1
    changed, after = await stripe_payment(db, org, invoice_id, "pi_1", TOTAL)
    assert changed and after == Settlement(InvoiceStatus.PARTIAL, TOTAL - 5000, 5000, 1)
    assert outbox(stack, org, INVOICE_PAID.subject) == 0  # never covered after the refund
    # The rest refunded: nothing is paid any more, so it is SENT again (OVERDUE once past due).
    changed, after = await refund(db, org, invoice_id, "re_2", "pi_1", TOTAL - 5000)
    assert changed and after == Settlement(InvoiceStatus.SENT, 0, TOTAL, 1)
    async with unit_of_work(db, org) as uow:
        _, late = await payments.settle(uow, invoice_id, DUE + timedelta(days=1))
    assert late.status is InvoiceStatus.OVERDUE
    assert outbox(stack, org, INVOICE_REFUNDED.subject) == 2
    # A refund stored twice is one row; the same refund again raises nothing.
    assert (await refund(db, org, invoice_id, "re_2", "pi_1", TOTAL - 5000))[0] is False
    assert outbox(stack, org, INVOICE_REFUNDED.subject) == 2
    assert (
        len(admin_rows(stack, "SELECT 1 FROM billing.invoice_refunds WHERE invoice_id = %s", invoice_id)) == 2
    )


async def test_refunds_above_the_payment_count_at_most_the_payment(db: Database) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    await manual(db, org, invoice_id, 1000)
    await refund(db, org, invoice_id, "re_big", "pi_small", 9000)  # its payment is smaller
    _, after = await stripe_payment(db, org, invoice_id, "pi_small", 2000)
    # The 9000 refund counts 2000 (all of pi_small): the manual 1000 stays paid.
    assert after == Settlement(InvoiceStatus.PARTIAL, 1000, TOTAL - 1000, 2)
    async with unit_of_work(db, org) as uow:
        summary = (await payments.summaries(uow, [invoice_id]))[invoice_id]
    assert (summary.paid_cents, summary.outstanding_cents) == (1000, TOTAL - 1000)


async def test_refund_statuses_only_move_forward(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    await stripe_payment(db, org, invoice_id, "pi_1", TOTAL)
    assert (await refund(db, org, invoice_id, "re_1", "pi_1", 3000, "pending"))[
        1
    ].status is InvoiceStatus.PAID
    assert outbox(stack, org, INVOICE_REFUNDED.subject) == 0  # pending is no refund yet
    changed, after = await refund(db, org, invoice_id, "re_1", "pi_1", 3000, "succeeded")
    assert changed and after.status is InvoiceStatus.PARTIAL
    assert (await refund(db, org, invoice_id, "re_1", "pi_1", 3000, "pending"))[0] is False
    # Stripe can fail a refund it reported succeeded: the money is paid again.
    changed, after = await refund(db, org, invoice_id, "re_1", "pi_1", 3000, "failed")
    assert changed and after.status is InvoiceStatus.PAID
    for late in ("succeeded", "pending", "canceled"):
        assert (await refund(db, org, invoice_id, "re_1", "pi_1", 3000, late))[0] is False
    assert admin_rows(
        stack, "SELECT status FROM billing.invoice_refunds WHERE invoice_id = %s", invoice_id
    ) == [("failed",)]
    assert outbox(stack, org, INVOICE_REFUNDED.subject) == 1
    assert outbox(stack, org, INVOICE_PAID.subject) == 2  # paid, refunded in part, paid again


async def test_refundable_balance_and_refusals(db: Database) -> None:
    org, other_org = uuid.uuid4(), uuid.uuid4()
    invoice_id = await issued(db, org)
    second = await issued(db, org)
    await manual(db, org, invoice_id, 1000)
    await stripe_payment(db, org, invoice_id, "pi_1", 8000)
    await stripe_payment(db, org, invoice_id, "pi_failed", 500, "failed")
    await refund(db, org, invoice_id, "re_1", "pi_1", 1500)
    await refund(db, org, invoice_id, "re_2", "pi_1", 500, "pending")
    await refund(db, org, invoice_id, "re_3", "pi_1", 700, "failed")
    async with unit_of_work(db, org) as uow:
        paid, refunds = await payments.payments_of(uow, invoice_id)
        by_ref = {p.provider_ref: p for p in paid}
        payment, remaining = await payments.refundable(uow, invoice_id, by_ref["pi_1"].id)
    assert [r.stripe_refund_id for r in refunds] == ["re_1", "re_2", "re_3"]
    assert payment.provider_ref == "pi_1" and remaining == 8000 - 1500 - 500
    for payment_id in (by_ref[None].id, by_ref["pi_failed"].id):
        with pytest.raises(FailedPrecondition) as refused:
            async with unit_of_work(db, org) as uow:
                await payments.refundable(uow, invoice_id, payment_id)
        assert refused.value.code == "payment_not_refundable"
    # The payment under another invoice's id, or from another org, is not found.
    for unit_org, target in ((org, second), (other_org, invoice_id)):
        with pytest.raises(NotFound):
            async with unit_of_work(db, unit_org) as uow:
                await payments.refundable(uow, target, by_ref["pi_1"].id)
    with pytest.raises(InvalidArgument):
        async with unit_of_work(db, org) as uow:
            await payments.refundable(uow, invoice_id, "nope")


async def test_another_orgs_invoice_is_not_found_and_nothing_is_written(db: Database, stack: Any) -> None:
    org, other_org = uuid.uuid4(), uuid.uuid4()
    invoice_id = await issued(db, org)
    with pytest.raises(NotFound):
        await manual(db, other_org, invoice_id, 100)
    with pytest.raises(NotFound):
        await stripe_payment(db, other_org, invoice_id, "pi_1", 100)
    with pytest.raises(NotFound):
        await refund(db, other_org, invoice_id, "re_1", "pi_1", 100)
    with pytest.raises(NotFound):
        async with unit_of_work(db, other_org) as uow:
            await payments.settle(uow, invoice_id, TODAY)
    async with unit_of_work(db, other_org) as uow:
        assert await payments.payments_of(uow, invoice_id) == ([], [])
        assert await payments.summaries(uow, [invoice_id]) == {}
    assert payment_rows(stack, invoice_id) == []
    assert admin_rows(
        stack, "SELECT count(*) FROM billing.invoice_refunds WHERE invoice_id = %s", invoice_id
    ) == [(0,)]


async def test_summaries_agree_with_settle_in_one_query(db: Database) -> None:
    org = uuid.uuid4()
    ids = [await issued(db, org) for _ in range(4)]
    await manual(db, org, ids[0], 1000)
    await stripe_payment(db, org, ids[0], "pi_a", 2000)
    await refund(db, org, ids[0], "re_a", "pi_a", 500)
    await stripe_payment(db, org, ids[1], "pi_b", TOTAL)
    await stripe_payment(db, org, ids[2], "pi_c", 3000, "failed")
    await refund(db, org, ids[3], "re_d", "pi_d", 400)  # no payment yet
    a_draft = await draft(db, org)
    async with unit_of_work(db, org) as uow:
        with statements(db) as seen:
            found = await payments.summaries(uow, [*ids, a_draft, uuid.uuid4()])
        assert len(seen) == 1
        for invoice_id in ids:
            _, after = await payments.settle(uow, invoice_id, TODAY)
            summary = found[invoice_id]
            assert (summary.paid_cents, summary.outstanding_cents, summary.succeeded_payments) == (
                after.paid_cents,
                after.outstanding_cents,
                after.succeeded_payment_count,
            )
    assert set(found) == {*ids, a_draft}
    assert (found[ids[0]].manual_payments, found[ids[0]].stripe_payments, found[ids[0]].paid_cents) == (
        1,
        1,
        2500,
    )
    assert found[ids[0]].last_payment_at is not None and found[ids[2]].last_payment_at is None
    assert (found[ids[2]].succeeded_payments, found[ids[2]].outstanding_cents) == (0, TOTAL)
    assert found[a_draft].outstanding_cents == 0
