"""Stripe webhook events: stored first, processed after.

The HTTP handler verifies the signature, calls `extract` (only the facts processing needs, never the
payload: no names, emails, addresses or card details are kept, seed 002) and `store`s them in one
INSERT keyed by Stripe's event id before it answers, so an event Stripe sent is durable even if
processing fails, and a redelivery adds nothing. `process` then applies an event once: it locks the
row, skips one already processed or ignored (a duplicate has exactly one effect), and marks it
processed in the same transaction as its effect. A failure rolls that transaction back; the caller
then calls `record_failure` in a new one, which schedules a retry with exponential backoff. A loop
serving every org leases due rows with `claim_due` (the SECURITY DEFINER billing.claim_stripe_events)
and processes each inside its own org.

Stripe delivers in any order; the payment and refund rules that make any order end in the same state
are in payments.py. An event for an invoice this org does not (yet) show fails with NotFound and is
retried later.

Handled types: checkout.session.completed (an invoice's payment, or a booking's deposit: DEPOSIT_PAID),
payment_intent.succeeded and payment_intent.payment_failed (an invoice's; a failure while money is
still owed gives a DunningNotice), charge.refunded, charge.refund.updated and refund.created /
.updated / .failed (each refund they carry). Anything else is marked 'ignored'."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import page, parse_id
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import InvalidArgument, NotFound, invalid
from services.billing import payments
from services.billing.events import DEPOSIT_PAID
from services.billing.models import (
    CHECKOUT_PURPOSES,
    REFUND_STATUSES,
    STRIPE_EVENT_STATUSES,
    checkout_sessions,
    invoice_payments,
    stripe_events,
)
from services.billing.status import InvoiceStatus

# Retry backoff after a failed attempt n (1, 2, ...): RETRY_BASE_SECONDS * 2 ** (n - 1), at most
# RETRY_MAX_SECONDS: 30 s, 1 min, 2 min, ... then hourly, for as long as the event stays failed.
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
MAX_ERROR = 1000  # the last_error column
MAX_ID = 255

REFUND_EVENTS = frozenset(
    {"charge.refunded", "charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
)
CHECKOUT_COMPLETED = "checkout.session.completed"
PAYMENT_SUCCEEDED = "payment_intent.succeeded"
PAYMENT_FAILED = "payment_intent.payment_failed"
# Our metadata keys (stripe_api puts them on sessions, their payment intents and refunds): nothing else
# of a metadata dict is kept.
METADATA_KEYS = ("org_id", "invoice_id", "booking_id", "purpose")
# A failed card payment is worth an email only while money is still owed on an issued invoice.
DUNNABLE = frozenset({InvoiceStatus.SENT, InvoiceStatus.PARTIAL, InvoiceStatus.OVERDUE})
# Stripe refund statuses as ours: requires_action is still on its way.
_REFUND_STATUS = {**{s: s for s in REFUND_STATUSES}, "requires_action": "pending"}


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    org_id: uuid.UUID
    type: str
    created_at: datetime  # Stripe's event time
    invoice_id: uuid.UUID | None
    booking_id: uuid.UUID | None
    facts: dict[str, Any]  # JSON-safe: ids, amounts, currency, statuses, our metadata


@dataclass(frozen=True)
class DepositPayment:
    booking_id: uuid.UUID
    amount_cents: int
    currency: str
    payment_intent_id: str


@dataclass(frozen=True)
class DunningNotice:
    """An email to the client that their card payment failed (sent once per invoice: dunning_dedupe_key)."""

    invoice_id: uuid.UUID
    number: str
    client_email: str
    client_name: str
    currency: str
    outstanding_cents: int


@dataclass
class Effects:
    """What processing did that the caller acts on after commit. Empty (processed_status None) for an
    event already processed or ignored."""

    processed_status: str | None = None  # 'processed' or 'ignored'
    payment_changed: bool = False  # a payment or refund row was written or moved
    deposit_paid: DepositPayment | None = None
    dunning: list[DunningNotice] = field(default_factory=list)


@dataclass(frozen=True)
class EventRow:
    """A stored event as the finance view lists it: never its facts."""

    event_id: str
    type: str
    created_at: datetime
    received_at: datetime
    org_id: uuid.UUID
    invoice_id: uuid.UUID | None
    booking_id: uuid.UUID | None
    processed_status: str
    last_error: str | None
    attempts: int
    processed_at: datetime | None


def dunning_dedupe_key(invoice_id: uuid.UUID | str) -> str:
    """notify's dedupe key for the payment-failed email: one email per invoice, however many failures."""
    return f"invoice:{invoice_id}:dunning:payment_failed"


def retry_delay(attempts: int) -> timedelta:
    """The wait before the next try after `attempts` failed ones (module constants at the top)."""
    exponent = min(max(attempts, 1) - 1, 32)  # capped so a huge count does not build a huge integer
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2**exponent, RETRY_MAX_SECONDS))


def extract(event: Mapping[str, Any]) -> StoredEvent | None:
    """The facts of a verified Stripe event, or None when it is not for this suite (no valid org_id in
    our metadata) or not an event at all. Only named fields are copied, never the object itself."""
    event_id, kind, created = (
        _short(event.get("id")),
        _short(event.get("type"), 100),
        _int(event.get("created")),
    )
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if event_id is None or kind is None or created is None or not isinstance(obj, Mapping):
        return None
    refunds, refund_metadata = _refunds(obj)
    metadata = _our_metadata([obj.get("metadata"), *refund_metadata])
    org = _uuid(metadata.get("org_id"))
    if org is None:
        return None
    invoice = _uuid(metadata.get("invoice_id"))
    booking = _uuid(metadata.get("booking_id"))
    purpose = metadata.get("purpose") if metadata.get("purpose") in CHECKOUT_PURPOSES else None
    object_type = obj.get("object")
    intent = obj.get("payment_intent")
    if isinstance(intent, Mapping):  # expanded
        intent = intent.get("id")
    if object_type == "payment_intent":
        intent = obj.get("id")
    facts: dict[str, Any] = {
        "object_id": _short(obj.get("id")),
        "object_type": _short(object_type),
        "payment_intent": _short(intent),
        "amount": _int(obj.get("amount")),
        "amount_total": _int(obj.get("amount_total")),
        "amount_received": _int(obj.get("amount_received")),
        "amount_refunded": _int(obj.get("amount_refunded")),
        "currency": _currency(obj.get("currency")),
        "status": _short(obj.get("status"), 40),
        "payment_status": _short(obj.get("payment_status"), 40),
        # A refund names its payment intent; one listed on a charge may leave it to the charge.
        "refunds": [
            {
                k: v
                for k, v in {**r, "payment_intent": r["payment_intent"] or _short(intent)}.items()
                if v is not None
            }
            for r in refunds
        ],
        "org_id": str(org),
        "invoice_id": str(invoice) if invoice else None,
        "booking_id": str(booking) if booking else None,
        "purpose": purpose,
    }
    return StoredEvent(
        event_id=event_id,
        org_id=org,
        type=kind,
        created_at=datetime.fromtimestamp(created, UTC),
        invoice_id=invoice,
        booking_id=booking,
        facts={k: v for k, v in facts.items() if v is not None},
    )


async def store(uow: UnitOfWork, stored: StoredEvent) -> bool:
    """Keep the event in its org, once: True if it is new, False for a redelivery (or an id another
    org already holds, which a signed event never is)."""
    await uow.set_org(stored.org_id)
    inserted = await uow.session.execute(
        pg_insert(stripe_events)
        .values(
            event_id=stored.event_id,
            org_id=stored.org_id,
            type=stored.type,
            created_at=stored.created_at,
            invoice_id=stored.invoice_id,
            booking_id=stored.booking_id,
            facts=stored.facts,
        )
        .on_conflict_do_nothing(index_elements=[stripe_events.c.event_id])
        .returning(stripe_events.c.event_id)
    )
    return inserted.first() is not None


async def process(uow: UnitOfWork, event_id: str, today: date) -> Effects:
    """Apply one stored event of this unit of work's org, exactly once (see top). Raises (and the
    transaction rolls back) when it cannot be applied yet: NotFound for an invoice not visible, or a
    refund whose invoice is named neither by its metadata nor by a recorded payment of its intent.
    Types not listed at the top of this module, payment intents of deposits, and a charge.refunded
    without its refunds list (not expanded in newer API versions; each refund's own refund.* event
    records it) are 'ignored'."""
    row = (
        await uow.session.execute(
            select(stripe_events).where(stripe_events.c.event_id == event_id).with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound("stripe event not found", code="stripe_event_not_found")
    if row.processed_status in ("processed", "ignored"):
        return Effects()
    facts: dict[str, Any] = dict(row.facts)
    effects = Effects(processed_status="processed")
    if row.type == CHECKOUT_COMPLETED:
        await _checkout_completed(uow, row, facts, today, effects)
    elif row.type in (PAYMENT_SUCCEEDED, PAYMENT_FAILED) and _for_invoice(row, facts):
        await _payment_intent(uow, row, facts, today, effects)
    elif row.type in REFUND_EVENTS and facts.get("purpose") != "deposit" and facts.get("refunds"):
        await _refunds_of(uow, row, facts, today, effects)
    else:
        effects.processed_status = "ignored"
    await uow.session.execute(
        update(stripe_events)
        .where(stripe_events.c.event_id == event_id)
        .values(
            processed_status=effects.processed_status,
            processed_at=func.now(),
            attempts=stripe_events.c.attempts + 1,
            last_error=None,
        )
    )
    return effects


async def record_failure(
    uow: UnitOfWork,
    event_id: str,
    error: str,
    attempts_backoff: Callable[[int], timedelta] = retry_delay,
) -> None:
    """Mark a pending or failed event failed after a try, with its error (cut to MAX_ERROR; the caller
    passes the error's message, never the payload) and the next try after `attempts_backoff(attempts)`.
    An event another worker has processed meanwhile is left as it is, so it is never applied twice."""
    row = (
        await uow.session.execute(
            select(stripe_events.c.attempts, stripe_events.c.processed_status)
            .where(stripe_events.c.event_id == event_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound("stripe event not found", code="stripe_event_not_found")
    if row.processed_status not in ("pending", "failed"):
        return
    attempts = int(row.attempts) + 1
    await uow.session.execute(
        update(stripe_events)
        .where(stripe_events.c.event_id == event_id)
        .values(
            processed_status="failed",
            attempts=attempts,
            last_error=(error or "unknown error")[:MAX_ERROR],
            next_attempt_at=func.now() + attempts_backoff(attempts),
        )
    )


async def list_events(
    uow: UnitOfWork,
    invoice_id: uuid.UUID | str | None,
    booking_id: uuid.UUID | str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[EventRow], int]:
    """The org's events, newest first (Stripe's time, then arrival), filtered by invoice, booking and
    processed status; with the total matching. Never the facts."""
    conditions = []
    problems = []
    for name, value, column in (
        ("invoice_id", invoice_id, stripe_events.c.invoice_id),
        ("booking_id", booking_id, stripe_events.c.booking_id),
    ):
        if value is None or value == "":
            continue
        try:
            conditions.append(column == (value if isinstance(value, uuid.UUID) else parse_id(value, name)))
        except InvalidArgument as bad:
            problems.extend(bad.violations)
    if status:
        if status not in STRIPE_EVENT_STATUSES:
            problems.append(
                invalid("status", f"must be one of {', '.join(STRIPE_EVENT_STATUSES)}").violations[0]
            )
        conditions.append(stripe_events.c.processed_status == status)
    if problems:
        raise InvalidArgument.of(problems)
    limit, offset = page(limit, offset)
    c = stripe_events.c
    columns = (
        c.event_id,
        c.type,
        c.created_at,
        c.received_at,
        c.org_id,
        c.invoice_id,
        c.booking_id,
        c.processed_status,
        c.last_error,
        c.attempts,
        c.processed_at,
    )
    rows = await uow.session.execute(
        select(*columns)
        .where(*conditions)
        .order_by(c.created_at.desc(), c.received_at.desc(), c.event_id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = (
        await uow.session.execute(select(func.count()).select_from(stripe_events).where(*conditions))
    ).scalar_one()
    return [EventRow(**r._mapping) for r in rows], int(total)


async def claim_due(db: Database, batch: int, lease_seconds: int) -> list[tuple[str, uuid.UUID]]:
    """Lease up to `batch` due events of every org for `lease_seconds` (their next_attempt_at moves on,
    so no other worker claims them meanwhile); (event_id, org_id) pairs, to process each in its org."""
    if batch <= 0:
        raise invalid("batch", "must be above 0")
    if lease_seconds <= 0:
        raise invalid("lease_seconds", "must be above 0")
    async with unit_of_work(db) as uow:
        rows = await uow.session.execute(
            text("SELECT event_id, org_id FROM billing.claim_stripe_events(:batch, :lease)"),
            {"batch": batch, "lease": lease_seconds},
        )
        return [(str(r.event_id), r.org_id) for r in rows]


# --- processing by type ----------------------------------------------------------------------------


async def _checkout_completed(
    uow: UnitOfWork, row: Any, facts: dict[str, Any], today: date, effects: Effects
) -> None:
    session_id = facts.get("object_id")
    session = (
        await uow.session.execute(select(checkout_sessions).where(checkout_sessions.c.id == session_id))
    ).first()
    purpose = facts.get("purpose") or (session.purpose if session else None)
    # An async payment method completes the session unpaid; its money comes with a later event.
    paid = facts.get("payment_status") in ("paid", None)
    intent = facts.get("payment_intent")
    amount = facts.get("amount_total")
    currency = facts.get("currency")
    if purpose == "invoice":
        invoice_id = row.invoice_id or (session.invoice_id if session else None)
        if invoice_id is None:
            effects.processed_status = "ignored"
            return
        if paid:
            if not (intent and amount and currency):
                raise invalid(
                    "payment_intent", "a paid checkout session must name its payment intent and amount"
                )
            changed, _ = await payments.record_stripe_payment(
                uow,
                invoice_id=invoice_id,
                payment_intent_id=intent,
                amount_cents=amount,
                currency=currency,
                status="succeeded",
                today=today,
            )
            effects.payment_changed = changed
    elif purpose == "deposit":
        booking_id = row.booking_id or (session.booking_id if session else None)
        if booking_id is None:
            effects.processed_status = "ignored"
            return
        if paid:
            if not (intent and amount and currency):
                raise invalid(
                    "payment_intent", "a paid checkout session must name its payment intent and amount"
                )
            effects.deposit_paid = DepositPayment(booking_id, amount, currency, intent)
            uow.add_event(
                DEPOSIT_PAID,
                billing_events.DepositPaid(
                    org_id=str(uow.org_id),
                    booking_id=str(booking_id),
                    amount_cents=amount,
                    currency=currency,
                    payment_intent_id=intent,
                ),
            )
    else:
        effects.processed_status = "ignored"
        return
    if session is not None and session.status != "complete":
        await uow.session.execute(
            update(checkout_sessions).where(checkout_sessions.c.id == session.id).values(status="complete")
        )


async def _payment_intent(
    uow: UnitOfWork, row: Any, facts: dict[str, Any], today: date, effects: Effects
) -> None:
    succeeded = row.type == PAYMENT_SUCCEEDED
    intent = facts.get("payment_intent") or facts.get("object_id") or ""
    amount = (facts.get("amount_received") if succeeded else None) or facts.get("amount")
    changed, after = await payments.record_stripe_payment(
        uow,
        invoice_id=row.invoice_id,
        payment_intent_id=intent,
        amount_cents=amount or 0,
        currency=facts.get("currency") or "",
        status="succeeded" if succeeded else "failed",
        today=today,
    )
    effects.payment_changed = changed
    if succeeded or after.status not in DUNNABLE:
        return
    # A 'failed' arriving after its intent succeeded changed nothing, and is no reason to write to the
    # client: only an intent whose row stays failed is.
    stored = (
        await uow.session.execute(
            select(invoice_payments.c.status).where(invoice_payments.c.provider_ref == intent)
        )
    ).scalar_one()
    if stored != "failed":
        return
    invoice = await payments.invoice_row(uow, row.invoice_id)
    effects.dunning.append(
        DunningNotice(
            invoice_id=invoice.id,
            number=invoice.number or "",
            client_email=invoice.client_email,
            client_name=invoice.client_name,
            currency=invoice.currency,
            outstanding_cents=after.outstanding_cents,
        )
    )


async def _refunds_of(
    uow: UnitOfWork, row: Any, facts: dict[str, Any], today: date, effects: Effects
) -> None:
    for refund in facts["refunds"]:
        intent = refund.get("payment_intent") or facts.get("payment_intent")
        invoice_id = row.invoice_id
        if invoice_id is None and intent:
            # No metadata on the refund: its payment's row names the invoice (if it came already).
            invoice_id = (
                await uow.session.execute(
                    select(invoice_payments.c.invoice_id).where(invoice_payments.c.provider_ref == intent)
                )
            ).scalar_one_or_none()
        if invoice_id is None:
            raise NotFound("no invoice is known for this refund yet", code="invoice_not_found")
        status = _REFUND_STATUS.get(refund.get("status") or "")
        if status is None:
            raise invalid("status", f"unknown refund status {refund.get('status')!r}")
        changed, _ = await payments.record_refund(
            uow,
            invoice_id=invoice_id,
            stripe_refund_id=refund.get("id") or "",
            payment_intent_id=intent or "",
            amount_cents=refund.get("amount") or 0,
            currency=refund.get("currency") or facts.get("currency") or "",
            status=status,
            reason=refund.get("reason") or "",
            requested_by="stripe",
            today=today,
        )
        effects.payment_changed = effects.payment_changed or changed


def _for_invoice(row: Any, facts: dict[str, Any]) -> bool:
    """A payment intent is ours to record when it names an invoice and is not for a deposit (purpose
    'invoice', or none given): a deposit's money is booking's, and reported by its checkout session."""
    purpose = facts.get("purpose")
    return row.invoice_id is not None and purpose != "deposit"


# --- extraction helpers ------------------------------------------------------------------------------


def _refunds(obj: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[object]]:
    """The refunds an object carries (itself for a refund, its expanded refunds list for a charge) with
    each one's metadata, kept apart: only our keys of it are ever read."""
    if obj.get("object") == "refund":
        items: list[Any] = [obj]
    else:
        listing = obj.get("refunds")
        data = listing.get("data") if isinstance(listing, Mapping) else None
        items = [r for r in data if isinstance(r, Mapping)] if isinstance(data, list) else []
    refunds = []
    for r in items:
        intent = r.get("payment_intent")
        if isinstance(intent, Mapping):
            intent = intent.get("id")
        refunds.append(
            {
                "id": _short(r.get("id")),
                "amount": _int(r.get("amount")),
                "currency": _currency(r.get("currency")),
                "status": _short(r.get("status"), 40),
                "payment_intent": _short(intent),
                "reason": _short(r.get("reason"), 200),
            }
        )
    return refunds, [r.get("metadata") for r in items]


def _our_metadata(sources: list[object]) -> dict[str, str]:
    """Our keys from the first metadata that names an org (the object's, else a refund's: a charge
    carries none of ours, the refunds billing asked for do)."""
    for source in sources:
        if isinstance(source, Mapping) and source.get("org_id"):
            return {k: source[k] for k in METADATA_KEYS if isinstance(source.get(k), str)}
    return {}


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _short(value: object, limit: int = MAX_ID) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= limit else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _currency(value: object) -> str | None:
    return value.upper() if isinstance(value, str) and len(value) == 3 and value.isalpha() else None
