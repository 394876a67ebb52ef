"""Finding and repairing invoices whose stored status disagrees with their money (seed 002, "How to
detect invoice mismatches" and "How to reconcile an invoice safely").

A mismatch appears when a status was written without its payments (a payment row removed by hand, a
crash between systems, an old bug). `list_invoices` finds them in SQL: the expected status is
status.status_after_payments written as a CASE over the same sums `payments.settle` makes
(payments.invoice_money), so filtering and paging happen in the database however many invoices an org
has. `reconcile` repairs one invoice through `payments.settle`: it locks the row, recomputes from the
succeeded payments, never inserts or alters a payment (no Stripe record is invented), and a second
call finds nothing to change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import and_, case, func, literal, select

from libs.common.convert import page
from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition, FieldViolation, invalid
from services.billing import payments
from services.billing.models import invoices
from services.billing.status import UNTOUCHED, InvoiceStatus, Settlement

ListFilter = Literal["mismatch", "all"]
LIST_FILTERS = ("mismatch", "all")


@dataclass(frozen=True)
class InvoiceCheck:
    """One row of the reconcile list: the stored status next to the one the payments give."""

    id: uuid.UUID
    number: str | None
    status: InvoiceStatus  # as stored
    expected_status: InvoiceStatus  # status_after_payments of the succeeded payments
    mismatch: bool
    currency: str
    total_cents: int
    paid_cents: int
    outstanding_cents: int
    succeeded_payments: int
    manual_payments: int
    stripe_payments: int
    last_payment_at: datetime | None
    due_date: date | None
    issued_at: datetime | None


@dataclass(frozen=True)
class ReconcileResult:
    before: Settlement
    after: Settlement
    changed: bool
    invoice_row: Any  # the invoice as stored after the repair


async def list_invoices(
    uow: UnitOfWork, status: ListFilter | str, limit: int, offset: int, today: date
) -> tuple[list[InvoiceCheck], int]:
    """Issued invoices (every status but DRAFT), newest issued first, with their payment counts, money
    and expected status; `status` "mismatch" keeps those whose stored status differs. Returns the page
    and the total matching (two queries, whatever the page size)."""
    if status not in LIST_FILTERS:
        raise invalid("status", f"must be one of {', '.join(LIST_FILTERS)}")
    limit, offset = page(limit, offset)
    money = payments.invoice_money().where(invoices.c.status != InvoiceStatus.DRAFT.value).subquery()
    expected = _expected_status(money, today).label("expected_status")
    checked = select(money, expected).subquery()
    mismatch = checked.c.status != checked.c.expected_status
    rows_query = select(checked, mismatch.label("mismatch"))
    count_query = select(func.count()).select_from(checked)
    if status == "mismatch":
        rows_query = rows_query.where(mismatch)
        count_query = count_query.where(mismatch)
    rows = await uow.session.execute(
        rows_query.order_by(
            func.coalesce(checked.c.issued_at, checked.c.created_at).desc(), checked.c.id.desc()
        )
        .limit(limit)
        .offset(offset)
    )
    total = int((await uow.session.execute(count_query)).scalar_one())
    return [
        InvoiceCheck(
            id=r.id,
            number=r.number,
            status=InvoiceStatus(r.status),
            expected_status=InvoiceStatus(r.expected_status),
            mismatch=bool(r.mismatch),
            currency=r.currency,
            total_cents=int(r.total_cents),
            paid_cents=int(r.paid_cents),
            outstanding_cents=int(r.outstanding_cents),
            succeeded_payments=int(r.succeeded_payments),
            manual_payments=int(r.manual_payments),
            stripe_payments=int(r.stripe_payments),
            last_payment_at=r.last_payment_at,
            due_date=r.due_date,
            issued_at=r.issued_at,
        )
        for r in rows
    ], total


async def reconcile(uow: UnitOfWork, invoice_id: uuid.UUID | str, today: date) -> ReconcileResult:
    """Store the status the invoice's succeeded payments give (payments.settle, under the row lock).
    Idempotent; never writes a payment. DRAFT and VOID are refused (409 invoice_not_reconcilable): the
    seed's rules are for issued invoices."""
    row = await payments.invoice_row(uow, invoice_id, for_update=True)
    if InvoiceStatus(row.status) in UNTOUCHED:
        raise FailedPrecondition(
            f"cannot reconcile an invoice that is {row.status}; only issued invoices are reconciled",
            code="invoice_not_reconcilable",
            violations=[FieldViolation("status", f"is {row.status}, must be SENT, PARTIAL, PAID or OVERDUE")],
        )
    before, after = await payments.settle(uow, row.id, today)
    stored = await payments.invoice_row(uow, row.id)
    return ReconcileResult(
        before=before, after=after, changed=before.status != after.status, invoice_row=stored
    )


def _expected_status(money: Any, today: date) -> Any:
    """status.status_after_payments as SQL, over payments.invoice_money's columns (the tests hold the
    two to the same answers)."""
    return case(
        (money.c.status.in_([s.value for s in UNTOUCHED]), money.c.status),
        (money.c.paid_cents >= money.c.total_cents, literal(InvoiceStatus.PAID.value)),
        (money.c.paid_cents > 0, literal(InvoiceStatus.PARTIAL.value)),
        (
            and_(money.c.due_date.is_not(None), money.c.due_date < literal(today)),
            literal(InvoiceStatus.OVERDUE.value),
        ),
        else_=literal(InvoiceStatus.SENT.value),
    )
