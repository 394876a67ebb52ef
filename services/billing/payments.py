"""Money against invoices: manual payments finance records, Stripe payments and refunds the webhooks
report, and `settle`, the one place an invoice's status follows its money (status.status_after_payments).

Every change to a payment or refund calls `settle` in the same transaction, with the invoice row locked
(SELECT ... FOR UPDATE): two writers on one invoice (a webhook and finance, two webhooks, two
reconciles) queue on that lock, and each then sums the committed rows, so the stored status is always
what the payments say.

Stripe delivers webhooks at least once and in any order, so the Stripe rows are upserts keyed by
Stripe's ids and their statuses only move forward:
- a payment (one row per PaymentIntent): pending -> succeeded | failed, failed -> succeeded (the
  customer retried the same intent); succeeded is final, so a late 'failed' or 'pending' leaves it;
- a refund (one row per Stripe refund): pending -> succeeded -> failed (Stripe can fail a refund it
  reported succeeded), pending -> canceled; failed and canceled are final, nothing goes back to pending.
Each rule is a lattice (a status is replaced only by a later one), so any delivery order of the same
events ends in the same rows.

A refund may be stored before its payment (its event came first). `settle` counts a succeeded refund
only against a succeeded Stripe payment of the same invoice and PaymentIntent, and at most that
payment's amount: until the payment arrives the refund counts for nothing, and paid never goes below 0
(status_after_payments refuses refunds above the payments). `invoice_money` applies the same rule in
SQL for the list views."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from cws.billing.v1 import events_pb2 as billing_events
from sqlalchemy import Select, and_, case, func, insert, literal, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, invalid
from services.billing import invoices as invoice_domain
from services.billing.events import INVOICE_PAID, INVOICE_REFUNDED
from services.billing.models import (
    PAYMENT_METHODS,
    PAYMENT_STATUSES,
    REFUND_STATUSES,
    invoice_payments,
    invoice_refunds,
    invoices,
)
from services.billing.status import (
    UNTOUCHED,
    InvoiceStatus,
    Settlement,
    check_manual_payment,
    status_after_payments,
)

# Card money only comes through Stripe, keyed by its PaymentIntent; a "card" row typed in by hand
# could not be refunded or reconciled against Stripe.
MANUAL_METHODS = tuple(m for m in PAYMENT_METHODS if m != "card")
MAX_REFERENCE = 200
MAX_RECORDED_BY = 80
MAX_REASON = 200
MAX_STRIPE_ID = 255
# A received_at a little ahead of the server's clock is the caller's clock, not a future payment.
CLOCK_SKEW = timedelta(minutes=5)
# Invoices are not payable in these: a DRAFT was not issued, a VOID one was cancelled.
NOT_PAYABLE = frozenset({InvoiceStatus.DRAFT, InvoiceStatus.VOID})

PaymentStatus = Literal["succeeded", "failed", "pending"]

# Forward order of the statuses (see top): a stored status is replaced only by a higher rank.
_PAYMENT_RANK = {"pending": 0, "failed": 1, "succeeded": 2}
_REFUND_RANK = {"pending": 0, "succeeded": 1, "failed": 2, "canceled": 2}


@dataclass(frozen=True)
class Summary:
    """An invoice's money for list views (computed by `invoice_money`, one query for the page)."""

    paid_cents: int  # succeeded payments minus the refunds counted against them
    outstanding_cents: int  # 0 for DRAFT and VOID, as status_after_payments says
    succeeded_payments: int
    manual_payments: int  # succeeded manual payments
    stripe_payments: int  # succeeded Stripe payments
    last_payment_at: datetime | None  # received_at of the latest succeeded payment


def payment_moves(stored: str, new: str) -> bool:
    """Whether a payment stored as `stored` takes the status `new` from a later-delivered event."""
    return _PAYMENT_RANK[new] > _PAYMENT_RANK[stored]


def refund_moves(stored: str, new: str) -> bool:
    """Whether a refund stored as `stored` takes the status `new` (failed and canceled are final)."""
    return _REFUND_RANK[new] > _REFUND_RANK[stored]


async def settle(uow: UnitOfWork, invoice_id: uuid.UUID | str, today: date) -> tuple[Settlement, Settlement]:
    """Lock the invoice, sum its succeeded payments and counted refunds, and store the status they give.
    Returns (before, after): before is the stored status with paid/outstanding from the same sums.
    INVOICE_PAID is added when the invoice becomes PAID."""
    _, before, after = await _settle(uow, invoice_id, today, refunded=False)
    return before, after


async def record_manual_payment(
    uow: UnitOfWork,
    invoice_id: uuid.UUID | str,
    amount_cents: int,
    method: str,
    reference: str,
    received_at: datetime | None,
    recorded_by: str,
    today: date,
) -> Settlement:
    """Money finance received outside Stripe (cash, e-transfer, cheque, other), at most the outstanding
    balance. Everything is checked before the one INSERT, so a refusal writes nothing."""
    row = await invoice_row(uow, invoice_id, for_update=True)
    _check_payable(row)
    problems: list[FieldViolation] = []
    if method not in MANUAL_METHODS:
        problems.append(FieldViolation("method", f"must be one of {', '.join(MANUAL_METHODS)}"))
    note = reference.strip() if isinstance(reference, str) else None
    if note is None or len(note) > MAX_REFERENCE:
        problems.append(FieldViolation("reference", f"must be text of at most {MAX_REFERENCE} characters"))
    if received_at is not None:
        if not isinstance(received_at, datetime) or received_at.tzinfo is None:
            problems.append(FieldViolation("received_at", "must be a time with a time zone"))
        elif received_at > datetime.now(UTC) + CLOCK_SKEW:
            problems.append(FieldViolation("received_at", "must not be in the future"))
    if not isinstance(recorded_by, str) or len(recorded_by) > MAX_RECORDED_BY:
        problems.append(FieldViolation("recorded_by", f"must be at most {MAX_RECORDED_BY} characters"))
    if problems:
        raise InvalidArgument.of(problems)
    current = await _settlement(uow, row, today)
    check_manual_payment(amount_cents, current.outstanding_cents)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "org_id": uow.org_id,
        "invoice_id": row.id,
        "provider": "manual",
        "method": method,
        "amount_cents": amount_cents,
        "currency": row.currency,
        "status": "succeeded",
        "reference": note,
        "recorded_by": recorded_by,
    }
    if received_at is not None:
        values["received_at"] = received_at
    await uow.session.execute(insert(invoice_payments).values(**values))
    _, _, after = await _settle(uow, row.id, today, refunded=False, touched=True)
    return after


# Outside ledgers whose payments are recorded here (integrations' qbo-sync), each keyed by its own ref.
EXTERNAL_PROVIDERS = ("quickbooks",)
MAX_PROVIDER_REF = 255


@dataclass(frozen=True)
class ExternalPayment:
    """What `record_external_payment` did: whether it wrote the row (False: the ref was recorded
    before, nothing changed), and the settlement before and after (equal when nothing was written)."""

    created: bool
    before: Settlement
    after: Settlement


async def record_external_payment(
    uow: UnitOfWork,
    *,
    invoice_id: uuid.UUID | str,
    amount_cents: int,
    currency: str,
    provider: str,
    provider_ref: str,
    received_at: datetime | None,
    recorded_by: str,
    today: date,
) -> ExternalPayment:
    """A payment entered in an outside ledger (an accountant in QuickBooks Online), applied like a manual
    payment: at most the outstanding balance, status recomputed by `settle`. Keyed by provider_ref,
    once per org: the same ref again answers created=False and writes nothing, whatever the invoice's
    status is by then (a sync that reruns after a crash must not fail on its own earlier work). A ref
    recorded against another invoice, an amount above the balance due, a DRAFT or VOID invoice are
    refused (FailedPrecondition); a currency other than the invoice's is invalid. Nothing is written
    on a refusal."""
    problems: list[FieldViolation] = []
    if provider not in EXTERNAL_PROVIDERS:
        problems.append(FieldViolation("provider", f"must be one of {', '.join(EXTERNAL_PROVIDERS)}"))
    ref = provider_ref.strip() if isinstance(provider_ref, str) else ""
    if not ref or len(ref) > MAX_PROVIDER_REF:
        problems.append(FieldViolation("provider_ref", f"must be text of 1 to {MAX_PROVIDER_REF} characters"))
    _check_cents(amount_cents, problems)
    if received_at is not None:
        if received_at.tzinfo is None:
            problems.append(FieldViolation("received_at", "must be a time with a time zone"))
        elif received_at > datetime.now(UTC) + CLOCK_SKEW:
            problems.append(FieldViolation("received_at", "must not be in the future"))
    if problems:
        raise InvalidArgument.of(problems)
    row = await invoice_row(uow, invoice_id, for_update=True)
    stored = (
        await uow.session.execute(select(invoice_payments).where(invoice_payments.c.provider_ref == ref))
    ).first()
    if stored is not None:
        if stored.invoice_id != row.id:
            raise FailedPrecondition(
                f"payment {ref} is recorded against another invoice",
                code="payment_ref_other_invoice",
                violations=[FieldViolation("provider_ref", "belongs to another invoice")],
            )
        current = await _settlement(uow, row, today)
        return ExternalPayment(False, current, current)
    _check_payable(row)
    _check_currency(currency, row.currency)
    current = await _settlement(uow, row, today)
    if amount_cents > current.outstanding_cents:
        owed = current.outstanding_cents
        raise FailedPrecondition(
            f"the payment of {amount_cents} cents is above the balance due of {owed} cents; nothing was recorded",
            code="payment_above_balance",
            violations=[FieldViolation("amount_cents", f"must not exceed the balance due of {owed} cents")],
        )
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "org_id": uow.org_id,
        "invoice_id": row.id,
        "provider": provider,
        "method": "other",
        "amount_cents": amount_cents,
        "currency": row.currency,
        "status": "succeeded",
        "provider_ref": ref,
        "reference": ref[:MAX_REFERENCE],
        "recorded_by": recorded_by[:MAX_RECORDED_BY],
    }
    if received_at is not None:
        values["received_at"] = received_at
    await uow.session.execute(insert(invoice_payments).values(**values))
    _, before, after = await _settle(uow, row.id, today, refunded=False, touched=True)
    return ExternalPayment(True, before, after)


async def record_stripe_payment(
    uow: UnitOfWork,
    *,
    invoice_id: uuid.UUID | str,
    payment_intent_id: str,
    amount_cents: int,
    currency: str,
    status: PaymentStatus,
    today: date,
) -> tuple[bool, Settlement]:
    """Upsert the invoice's row for a PaymentIntent, as Stripe settled it (amount and currency are not
    checked against the balance: the money moved). The status only moves forward (see top). Returns
    whether the row changed, and the settlement after it."""
    problems: list[FieldViolation] = []
    _check_stripe_id("payment_intent_id", payment_intent_id, problems)
    _check_cents(amount_cents, problems)
    if status not in PAYMENT_STATUSES:
        problems.append(FieldViolation("status", f"must be one of {', '.join(PAYMENT_STATUSES)}"))
    if problems:
        raise InvalidArgument.of(problems)
    row = await invoice_row(uow, invoice_id, for_update=True)
    _check_currency(currency, row.currency)
    stored = (
        await uow.session.execute(
            select(invoice_payments)
            .where(invoice_payments.c.provider_ref == payment_intent_id)
            .with_for_update()
        )
    ).first()
    changed = False
    if stored is None:
        # Under the invoice lock no other writer of this intent's invoice can be between the SELECT and
        # the INSERT; DO NOTHING still keeps a racing writer from failing (it then changes nothing).
        inserted = await uow.session.execute(
            pg_insert(invoice_payments)
            .values(
                id=uuid.uuid4(),
                org_id=uow.org_id,
                invoice_id=row.id,
                provider="stripe",
                method="card",
                amount_cents=amount_cents,
                currency=row.currency,
                status=status,
                provider_ref=payment_intent_id,
                recorded_by="stripe",
            )
            .on_conflict_do_nothing(
                index_elements=[invoice_payments.c.org_id, invoice_payments.c.provider_ref]
            )
            .returning(invoice_payments.c.id)
        )
        changed = inserted.first() is not None
    else:
        if stored.invoice_id != row.id:
            raise FailedPrecondition(
                f"payment intent {payment_intent_id} is recorded against another invoice",
                code="payment_intent_other_invoice",
                violations=[FieldViolation("payment_intent_id", "belongs to another invoice")],
            )
        if payment_moves(stored.status, status):
            await uow.session.execute(
                update(invoice_payments)
                .where(invoice_payments.c.id == stored.id)
                .values(
                    status=status,
                    amount_cents=amount_cents,
                    # The money arrived now, not when the intent was first seen pending or failed.
                    received_at=func.now() if status == "succeeded" else stored.received_at,
                    updated_at=func.now(),
                )
            )
            changed = True
    _, _, after = await _settle(uow, row.id, today, refunded=False, touched=changed)
    return changed, after


async def record_refund(
    uow: UnitOfWork,
    *,
    invoice_id: uuid.UUID | str,
    stripe_refund_id: str,
    payment_intent_id: str,
    amount_cents: int,
    currency: str,
    status: str,
    reason: str,
    requested_by: str,
    today: date,
) -> tuple[bool, Settlement]:
    """Upsert a Stripe refund of the invoice (its payment need not be recorded yet: see top). The status
    only moves forward. INVOICE_REFUNDED is added when the refund newly becomes succeeded."""
    problems: list[FieldViolation] = []
    _check_stripe_id("stripe_refund_id", stripe_refund_id, problems)
    _check_stripe_id("payment_intent_id", payment_intent_id, problems)
    _check_cents(amount_cents, problems)
    if status not in REFUND_STATUSES:
        problems.append(FieldViolation("status", f"must be one of {', '.join(REFUND_STATUSES)}"))
    if not isinstance(requested_by, str) or len(requested_by) > MAX_RECORDED_BY:
        problems.append(FieldViolation("requested_by", f"must be at most {MAX_RECORDED_BY} characters"))
    if problems:
        raise InvalidArgument.of(problems)
    # Stripe's reasons are short codes; anything longer is cut rather than refused (the money moved).
    note = (reason or "").strip()[:MAX_REASON] if isinstance(reason, str) else ""
    row = await invoice_row(uow, invoice_id, for_update=True)
    _check_currency(currency, row.currency)
    stored = (
        await uow.session.execute(
            select(invoice_refunds)
            .where(invoice_refunds.c.stripe_refund_id == stripe_refund_id)
            .with_for_update()
        )
    ).first()
    changed = False
    if stored is None:
        inserted = await uow.session.execute(
            pg_insert(invoice_refunds)
            .values(
                id=uuid.uuid4(),
                org_id=uow.org_id,
                invoice_id=row.id,
                stripe_refund_id=stripe_refund_id,
                payment_intent_id=payment_intent_id,
                amount_cents=amount_cents,
                currency=row.currency,
                status=status,
                reason=note,
                requested_by=requested_by,
            )
            .on_conflict_do_nothing(
                index_elements=[invoice_refunds.c.org_id, invoice_refunds.c.stripe_refund_id]
            )
            .returning(invoice_refunds.c.id)
        )
        changed = inserted.first() is not None
    else:
        if stored.invoice_id != row.id:
            raise FailedPrecondition(
                f"refund {stripe_refund_id} is recorded against another invoice",
                code="refund_other_invoice",
                violations=[FieldViolation("stripe_refund_id", "belongs to another invoice")],
            )
        if refund_moves(stored.status, status):
            await uow.session.execute(
                update(invoice_refunds)
                .where(invoice_refunds.c.id == stored.id)
                .values(status=status, amount_cents=amount_cents, updated_at=func.now())
            )
            changed = True
    newly_succeeded = changed and status == "succeeded"
    _, _, after = await _settle(uow, row.id, today, refunded=newly_succeeded, touched=changed)
    return changed, after


async def refundable(
    uow: UnitOfWork, invoice_id: uuid.UUID | str, payment_id: uuid.UUID | str
) -> tuple[Row[Any], int]:
    """A succeeded Stripe payment of the invoice and how much of it can still be refunded: its amount
    less its succeeded and pending refunds (a pending one may still succeed). NotFound for a payment of
    another invoice or org; 409 payment_not_refundable for a manual or not succeeded payment."""
    invoice_key = _key(invoice_id, "invoice_id")
    payment_key = _key(payment_id, "payment_id")
    payment = (
        await uow.session.execute(
            select(invoice_payments).where(
                invoice_payments.c.id == payment_key, invoice_payments.c.invoice_id == invoice_key
            )
        )
    ).first()
    if payment is None:
        raise NotFound("payment not found", code="payment_not_found")
    if payment.provider != "stripe" or payment.status != "succeeded":
        why = "was recorded by hand" if payment.provider != "stripe" else f"is {payment.status}"
        raise FailedPrecondition(
            f"the payment {why}; only a succeeded Stripe payment is refunded through Stripe",
            code="payment_not_refundable",
            violations=[FieldViolation("payment_id", why)],
        )
    refunded = (
        await uow.session.execute(
            select(func.coalesce(func.sum(invoice_refunds.c.amount_cents), 0)).where(
                invoice_refunds.c.invoice_id == invoice_key,
                invoice_refunds.c.payment_intent_id == payment.provider_ref,
                invoice_refunds.c.status.in_(("succeeded", "pending")),
            )
        )
    ).scalar_one()
    return payment, max(int(payment.amount_cents) - int(refunded), 0)


async def payments_of(uow: UnitOfWork, invoice_id: uuid.UUID | str) -> tuple[list[Row[Any]], list[Row[Any]]]:
    """The invoice's payments (oldest first) and refunds (oldest first), every status, for its view."""
    key = _key(invoice_id, "invoice_id")
    paid = await uow.session.execute(
        select(invoice_payments)
        .where(invoice_payments.c.invoice_id == key)
        .order_by(invoice_payments.c.received_at, invoice_payments.c.created_at, invoice_payments.c.id)
    )
    refunded = await uow.session.execute(
        select(invoice_refunds)
        .where(invoice_refunds.c.invoice_id == key)
        .order_by(invoice_refunds.c.created_at, invoice_refunds.c.id)
    )
    return list(paid), list(refunded)


async def summaries(uow: UnitOfWork, invoice_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Summary]:
    """Each listed invoice's money, in one query for the whole page (no query per invoice). Ids not in
    the org are absent from the answer."""
    ids = list(dict.fromkeys(invoice_ids))
    if not ids:
        return {}
    money = invoice_money().subquery()
    rows = await uow.session.execute(select(money).where(money.c.id.in_(ids)))
    return {
        r.id: Summary(
            paid_cents=int(r.paid_cents),
            outstanding_cents=int(r.outstanding_cents),
            succeeded_payments=int(r.succeeded_payments),
            manual_payments=int(r.manual_payments),
            stripe_payments=int(r.stripe_payments),
            last_payment_at=r.last_payment_at,
        )
        for r in rows
    }


def invoice_money() -> Select[Any]:
    """invoices.* with paid_cents, outstanding_cents, succeeded_payments, manual_payments,
    stripe_payments and last_payment_at: the sums `settle` makes, in SQL (two LATERAL aggregates, each
    on the (org_id, invoice_id) indexes), for list views and reconcile's mismatch list."""
    p = invoice_payments.alias("p")
    succeeded = p.c.status == "succeeded"
    pay = (
        select(
            func.count().filter(succeeded).label("succeeded_payments"),
            func.count().filter(and_(succeeded, p.c.provider == "manual")).label("manual_payments"),
            func.count().filter(and_(succeeded, p.c.provider == "stripe")).label("stripe_payments"),
            func.coalesce(func.sum(p.c.amount_cents).filter(succeeded), 0).label("payments_cents"),
            func.max(p.c.received_at).filter(succeeded).label("last_payment_at"),
        )
        .where(p.c.org_id == invoices.c.org_id, p.c.invoice_id == invoices.c.id)
        .lateral("pay")
    )
    sp = invoice_payments.alias("sp")
    rf = invoice_refunds.alias("rf")
    # Per succeeded Stripe payment: its succeeded refunds, at most its amount (the rule at the top).
    refunded_of_payment = (
        select(func.coalesce(func.sum(rf.c.amount_cents), 0))
        .where(
            rf.c.org_id == sp.c.org_id,
            rf.c.invoice_id == sp.c.invoice_id,
            rf.c.payment_intent_id == sp.c.provider_ref,
            rf.c.status == "succeeded",
        )
        .scalar_subquery()
    )
    ref = (
        select(func.coalesce(func.sum(func.least(sp.c.amount_cents, refunded_of_payment)), 0).label("cents"))
        .where(
            sp.c.org_id == invoices.c.org_id,
            sp.c.invoice_id == invoices.c.id,
            sp.c.provider == "stripe",
            sp.c.status == "succeeded",
        )
        .lateral("ref")
    )
    paid = (pay.c.payments_cents - ref.c.cents).label("paid_cents")
    untouched = invoices.c.status.in_([s.value for s in UNTOUCHED])
    outstanding = case(
        (untouched, literal(0)),
        else_=func.greatest(invoices.c.total_cents - (pay.c.payments_cents - ref.c.cents), 0),
    ).label("outstanding_cents")
    return (
        select(
            invoices,
            paid,
            outstanding,
            pay.c.succeeded_payments,
            pay.c.manual_payments,
            pay.c.stripe_payments,
            pay.c.last_payment_at,
        )
        .select_from(invoices)
        .join(pay, true())
        .join(ref, true())
    )


# --- internals -------------------------------------------------------------------------------------


def _changed(row: Any, after: Settlement) -> billing_events.InvoiceChanged:
    return invoice_domain.changed_message(
        invoice_domain.from_row(row),
        row.org_id,
        status=after.status,
        paid_cents=after.paid_cents,
        outstanding_cents=after.outstanding_cents,
    )


async def _settle(
    uow: UnitOfWork, invoice_id: uuid.UUID | str, today: date, *, refunded: bool, touched: bool = False
) -> tuple[Any, Settlement, Settlement]:
    """`touched`: the caller changed the invoice's money, so its updated_at moves even when its status
    does not (readers of "changed since", like qbo-sync, see every change)."""
    row = await invoice_row(uow, invoice_id, for_update=True)
    after = await _settlement(uow, row, today)
    before = replace(after, status=InvoiceStatus(row.status))
    if after.status != before.status or touched:
        await uow.session.execute(
            update(invoices)
            .where(invoices.c.id == row.id)
            .values(status=after.status.value, updated_at=func.now())
        )
    if after.status is InvoiceStatus.PAID and before.status is not InvoiceStatus.PAID:
        uow.add_event(INVOICE_PAID, _changed(row, after))
    if refunded:
        uow.add_event(INVOICE_REFUNDED, _changed(row, after))
    return row, before, after


async def _settlement(uow: UnitOfWork, row: Any, today: date) -> Settlement:
    """What the invoice's succeeded payments and counted refunds make of it (the rule at the top)."""
    payments = (
        await uow.session.execute(
            select(
                invoice_payments.c.amount_cents, invoice_payments.c.provider, invoice_payments.c.provider_ref
            )
            .where(invoice_payments.c.invoice_id == row.id, invoice_payments.c.status == "succeeded")
            .order_by(invoice_payments.c.id)
        )
    ).all()
    refunded = await uow.session.execute(
        select(invoice_refunds.c.payment_intent_id, func.sum(invoice_refunds.c.amount_cents))
        .where(invoice_refunds.c.invoice_id == row.id, invoice_refunds.c.status == "succeeded")
        .group_by(invoice_refunds.c.payment_intent_id)
    )
    refunds = {intent: int(cents) for intent, cents in refunded}
    counted = [
        min(int(p.amount_cents), int(refunds[p.provider_ref]))
        for p in payments
        if p.provider == "stripe" and refunds.get(p.provider_ref)
    ]
    return status_after_payments(
        row.status,
        int(row.total_cents),
        row.due_date,
        today,
        [int(p.amount_cents) for p in payments],
        [c for c in counted if c > 0],
    )


async def invoice_row(uow: UnitOfWork, invoice_id: uuid.UUID | str, *, for_update: bool = False) -> Any:
    """The invoice row in this unit of work's org (optionally locked), or NotFound invoice_not_found."""
    query = select(invoices).where(invoices.c.id == _key(invoice_id, "invoice_id"))
    if for_update:
        query = query.with_for_update()
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound("invoice not found", code="invoice_not_found")
    return row


def _check_payable(row: Any) -> None:
    if InvoiceStatus(row.status) in NOT_PAYABLE:
        raise FailedPrecondition(
            f"cannot record a payment on an invoice that is {row.status}; it must be issued and not void",
            code="invoice_not_payable",
            violations=[FieldViolation("status", f"is {row.status}, must be SENT, PARTIAL or OVERDUE")],
        )


def _check_currency(currency: str, invoice_currency: str) -> None:
    code = currency.strip().upper() if isinstance(currency, str) else ""
    if code != invoice_currency:
        raise invalid(
            "currency",
            f"is {code or 'missing'}, but the invoice is in {invoice_currency}; nothing was stored",
        )


def _check_cents(amount_cents: object, problems: list[FieldViolation]) -> None:
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool) or amount_cents <= 0:
        problems.append(FieldViolation("amount_cents", "must be a whole number of cents above 0"))


def _check_stripe_id(field: str, value: object, problems: list[FieldViolation]) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_STRIPE_ID:
        problems.append(FieldViolation(field, f"must be a Stripe id of at most {MAX_STRIPE_ID} characters"))


def _key(value: uuid.UUID | str, field: str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else parse_id(value, field)
