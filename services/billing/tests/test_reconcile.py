"""Reconcile against real Postgres (seed 002): mismatches made behind the code's back (superuser
connection) are listed with the status the payments give, repaired by reconcile without writing any
payment, idempotently and under concurrent callers; the SQL expected status agrees with
status_after_payments on a varied set of invoices; DRAFT/VOID and other orgs are refused."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from typing import Any

import pytest

from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.billing import invoices, payments, reconcile
from services.billing.events import INVOICE_PAID
from services.billing.status import InvoiceStatus, Settlement
from services.billing.tests.test_payments import (
    DUE,
    TODAY,
    TOTAL,
    admin_rows,
    db,
    draft,
    issued,
    manual,
    outbox,
    payment_rows,
    refund,
    status_of,
    stripe_payment,
)

__all__ = ["db"]  # the fixture, shared with test_payments

LATE = DUE + timedelta(days=1)


def set_status(stack: Any, invoice_id: uuid.UUID, status: str) -> None:
    admin_rows(
        stack, "UPDATE billing.invoices SET status = %s WHERE id = %s RETURNING id", status, invoice_id
    )


async def listed(
    db: Database,
    org: uuid.UUID,
    status: str = "mismatch",
    today: Any = TODAY,
    limit: int = 200,
    offset: int = 0,
) -> tuple[list[reconcile.InvoiceCheck], int]:
    async with unit_of_work(db, org) as uow:
        return await reconcile.list_invoices(uow, status, limit, offset, today)


async def run(
    db: Database, org: uuid.UUID, invoice_id: uuid.UUID, today: Any = TODAY
) -> reconcile.ReconcileResult:
    async with unit_of_work(db, org) as uow:
        return await reconcile.reconcile(uow, invoice_id, today)


async def test_a_paid_invoice_whose_payment_vanished_is_listed_and_reopened(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    clean = await issued(db, org)
    await stripe_payment(db, org, invoice_id, "pi_1", TOTAL)
    assert await status_of(db, org, invoice_id) is InvoiceStatus.PAID
    assert await listed(db, org) == ([], 0)
    admin_rows(stack, "DELETE FROM billing.invoice_payments WHERE invoice_id = %s RETURNING id", invoice_id)

    rows, total = await listed(db, org)
    assert total == 1 and [r.id for r in rows] == [invoice_id]
    row = rows[0]
    assert (row.status, row.expected_status, row.mismatch) == (InvoiceStatus.PAID, InvoiceStatus.SENT, True)
    assert (row.paid_cents, row.outstanding_cents, row.succeeded_payments, row.last_payment_at) == (
        0,
        TOTAL,
        0,
        None,
    )
    late_rows, _ = await listed(db, org, today=LATE)
    assert late_rows[0].expected_status is InvoiceStatus.OVERDUE  # past due
    everything, total_all = await listed(db, org, "all")
    assert total_all == 2 and {r.id: r.mismatch for r in everything} == {invoice_id: True, clean: False}

    first = await run(db, org, invoice_id, LATE)
    assert first.changed
    assert first.before == Settlement(InvoiceStatus.PAID, 0, TOTAL, 0)
    assert first.after == Settlement(InvoiceStatus.OVERDUE, 0, TOTAL, 0)
    assert first.invoice_row.status == "OVERDUE"
    second = await run(db, org, invoice_id, LATE)
    assert not second.changed and second.before == second.after == first.after
    assert payment_rows(stack, invoice_id) == []  # nothing invented
    # Past due, the repaired one is clean; the untouched SENT one is listed too: status_after_payments
    # makes it OVERDUE (the daily overdue job has not run), and reconcile is what would set it.
    assert [r.id for r in (await listed(db, org, today=LATE))[0]] == [clean]


async def test_reconcile_sets_paid_and_partial_from_the_payments(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    paid = await issued(db, org)
    partial = await issued(db, org)
    await manual(db, org, paid, TOTAL)
    await manual(db, org, partial, 700)
    # Behind the code's back: both were set back to SENT.
    set_status(stack, paid, "SENT")
    set_status(stack, partial, "SENT")
    expected = {r.id: r.expected_status for r in (await listed(db, org))[0]}
    assert expected == {paid: InvoiceStatus.PAID, partial: InvoiceStatus.PARTIAL}
    paid_events = outbox(stack, org, INVOICE_PAID.subject)
    result = await run(db, org, paid)
    assert result.changed and result.after == Settlement(InvoiceStatus.PAID, TOTAL, 0, 1)
    assert outbox(stack, org, INVOICE_PAID.subject) == paid_events + 1  # "or set by reconcile"
    assert (await run(db, org, partial)).after == Settlement(InvoiceStatus.PARTIAL, 700, TOTAL - 700, 1)
    assert len(payment_rows(stack, paid)) == len(payment_rows(stack, partial)) == 1


async def test_two_concurrent_reconciles_both_succeed_and_agree(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    targets = [await issued(db, org) for _ in range(3)]
    await stripe_payment(db, org, targets[1], "pi_1", 2000)
    for invoice_id in targets:
        set_status(stack, invoice_id, "PAID")
    results = await asyncio.gather(*(run(db, org, invoice_id) for invoice_id in targets for _ in range(2)))
    for n in range(len(targets)):
        pair = results[2 * n : 2 * n + 2]
        assert sorted(r.changed for r in pair) == [False, True]  # the second waited and found it done
        assert {r.after.status for r in pair} == {InvoiceStatus.PARTIAL if n == 1 else InvoiceStatus.SENT}
    assert [await status_of(db, org, t) for t in targets] == [
        InvoiceStatus.SENT,
        InvoiceStatus.PARTIAL,
        InvoiceStatus.SENT,
    ]
    assert [len(payment_rows(stack, t)) for t in targets] == [0, 1, 0]


async def test_draft_void_and_other_orgs_are_not_reconciled(db: Database) -> None:
    org, other_org = uuid.uuid4(), uuid.uuid4()
    a_draft = await draft(db, org)
    voided = await issued(db, org)
    async with unit_of_work(db, org) as uow:
        await invoices.void(uow, voided)
    for invoice_id in (a_draft, voided):
        with pytest.raises(FailedPrecondition) as refused:
            await run(db, org, invoice_id)
        assert refused.value.code == "invoice_not_reconcilable"
    sent = await issued(db, org)
    with pytest.raises(NotFound):
        await run(db, other_org, sent)
    assert await listed(db, other_org, "all") == ([], 0)
    # The list shows issued invoices only: the VOID one (never a mismatch), not the draft.
    rows, total = await listed(db, org, "all")
    assert total == 2 and {r.id for r in rows} == {voided, sent}
    assert all(not r.mismatch for r in rows)


async def test_list_filters_and_pages_newest_first(db: Database) -> None:
    org = uuid.uuid4()
    ids = [await issued(db, org) for _ in range(5)]
    with pytest.raises(InvalidArgument) as bad:
        await listed(db, org, "broken")
    assert [v.field for v in bad.value.violations] == ["status"]
    with pytest.raises(InvalidArgument) as bad_limit:
        await listed(db, org, "all", limit=10_000)
    assert [v.field for v in bad_limit.value.violations] == ["limit"]
    first, total = await listed(db, org, "all", limit=2)
    second, _ = await listed(db, org, "all", limit=2, offset=2)
    rest, _ = await listed(db, org, "all", limit=2, offset=4)
    assert total == 5
    assert [r.id for r in first + second + rest] == list(reversed(ids))


async def test_sql_expected_status_matches_status_after_payments(db: Database, stack: Any) -> None:
    """A varied set of invoices (payments of every kind and status, refunds before and after their
    payments, dates on both sides of due), stored statuses scrambled: the list's expected status and
    money are what reconcile (status_after_payments) then stores."""
    org = uuid.uuid4()
    rng = random.Random(20261202)
    ids = []
    for n in range(12):
        invoice_id = await issued(db, org)
        ids.append(invoice_id)
        if rng.random() < 0.5:
            await manual(db, org, invoice_id, rng.choice([100, 5000, TOTAL]) if n % 3 else TOTAL // 2)
        for k in range(rng.randint(0, 2)):
            intent = f"pi_{n}_{k}"
            if rng.random() < 0.4:
                await refund(db, org, invoice_id, f"re_{n}_{k}", intent, rng.choice([300, 4000, 20000]))
            try:
                await stripe_payment(
                    db,
                    org,
                    invoice_id,
                    intent,
                    rng.choice([1000, 6000, TOTAL]),
                    rng.choice(["succeeded", "failed"]),
                )
            except InvalidArgument:
                pass
        set_status(stack, invoice_id, rng.choice(["SENT", "PARTIAL", "PAID", "OVERDUE"]))
    for today in (TODAY, DUE, LATE):  # before, on and after the due date
        rows, _ = await listed(db, org, "all", today=today)
        assert len(rows) == len(ids)
        predicted = {r.id: r for r in rows}
        for invoice_id in ids:
            result = await run(db, org, invoice_id, today)
            row = predicted[invoice_id]
            assert row.status is result.before.status
            assert row.expected_status is result.after.status, row
            assert row.mismatch == result.changed
            assert (row.paid_cents, row.outstanding_cents, row.succeeded_payments) == (
                result.after.paid_cents,
                result.after.outstanding_cents,
                result.after.succeeded_payment_count,
            )
        assert await listed(db, org, today=today) == ([], 0)
        for invoice_id in ids:  # scramble again for the other date
            set_status(stack, invoice_id, rng.choice(["SENT", "PARTIAL", "PAID", "OVERDUE"]))
    async with unit_of_work(db, org) as uow:
        summaries = await payments.summaries(uow, ids)
    assert {s.paid_cents for s in summaries.values()} != {0}  # the set did exercise payments
