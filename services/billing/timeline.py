"""Billing's share of an invoice's or a booking's timeline (issue 13, seed 002). No gRPC here.

An invoice gives its own milestones (created, issued, sent, and its status when that is PAID, VOID or
OVERDUE, dated by updated_at), then its payments and refunds; Stripe events are those naming the invoice
(by invoice: ix_stripe_events_org_invoice) or, for a booking, naming the booking or one of its invoices
(ix_stripe_events_org_booking). A booking's timeline is that of its invoices: billing does not own
bookings, so an id it holds nothing for is an empty answer, never NotFound. An invoice id that is not
the org's is NotFound (billing owns invoices).

Each source is capped, newest rows kept (seed 002: 50 payments, 50 refunds, 50 Stripe events);
`truncated` says a cap was hit. Entries hold no personal data outside `details`, and there only under
libs.common.privacy.PII_KEYS (client_name, client_email, reference, notes), which the gateway masks for
VIEWERs. A Stripe event's facts are never shown: its type and processing status say what happened."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select

from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import NotFound
from services.billing.models import invoice_payments, invoice_refunds, invoices, stripe_events

PAYMENT_CAP = 50
REFUND_CAP = 50
STRIPE_EVENT_CAP = 50
# The statuses an invoice reaches after it was sent, dated by the row's updated_at.
LATER_STATUSES = ("PAID", "VOID", "OVERDUE")


@dataclass(frozen=True)
class Entry:
    at: datetime
    source: str
    kind: str
    summary: str
    actor: str
    id: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    entries: list[Entry]
    truncated: bool


async def for_invoice(db: Database, org_id: uuid.UUID, invoice_id: uuid.UUID) -> Timeline:
    async with unit_of_work(db, org_id) as uow:
        found = await _invoices(uow, invoices.c.id == invoice_id)
        if not found:
            raise NotFound("invoice not found", code="invoice_not_found")
        return await _gather(uow, found, [stripe_events.c.invoice_id == invoice_id])


async def for_booking(db: Database, org_id: uuid.UUID, booking_id: uuid.UUID) -> Timeline:
    async with unit_of_work(db, org_id) as uow:
        found = await _invoices(uow, invoices.c.booking_id == booking_id)
        ids = [row.id for row in found]
        named = [stripe_events.c.booking_id == booking_id]
        if ids:
            named.append(stripe_events.c.invoice_id.in_(ids))
        return await _gather(uow, found, named)


async def _invoices(uow: UnitOfWork, which: ColumnElement[bool]) -> list[Any]:
    # A booking has at most one invoice (ux_invoices_booking): no cap needed here.
    rows = await uow.session.execute(select(invoices).where(invoices.c.org_id == uow.org_id, which))
    return list(rows.all())


async def _gather(
    uow: UnitOfWork, found: Sequence[Any], stripe_named: Sequence[ColumnElement[bool]]
) -> Timeline:
    ids = [row.id for row in found]
    entries = [entry for row in found for entry in _invoice_entries(row)]
    paid: list[Any] = []
    refunded: list[Any] = []
    payments_cut = refunds_cut = False
    if ids:
        paid, payments_cut = await _newest(
            uow,
            invoice_payments,
            invoice_payments.c.invoice_id.in_(ids),
            invoice_payments.c.received_at,
            PAYMENT_CAP,
        )
        refunded, refunds_cut = await _newest(
            uow,
            invoice_refunds,
            invoice_refunds.c.invoice_id.in_(ids),
            invoice_refunds.c.created_at,
            REFUND_CAP,
        )
    events, events_cut = await _stripe_events(uow, stripe_named)
    entries += [_payment(row) for row in paid]
    entries += [_refund(row) for row in refunded]
    entries += [_stripe_event(row) for row in events]
    entries.sort(key=lambda e: (e.at, e.id, e.kind), reverse=True)
    return Timeline(entries, payments_cut or refunds_cut or events_cut)


async def _newest(
    uow: UnitOfWork, table: Any, which: ColumnElement[bool], when: Any, cap: int
) -> tuple[list[Any], bool]:
    """The newest `cap` rows (one more is read to tell whether there were more)."""
    rows = (
        await uow.session.execute(
            select(table)
            .where(table.c.org_id == uow.org_id, which)
            .order_by(when.desc(), *(key.desc() for key in table.primary_key.columns))
            .limit(cap + 1)
        )
    ).all()
    return list(rows[:cap]), len(rows) > cap


async def _stripe_events(uow: UnitOfWork, named: Sequence[ColumnElement[bool]]) -> tuple[list[Any], bool]:
    """One indexed read per way an event can name the subject (an OR would not use both indexes in
    order), merged newest first; an event naming both is counted once."""
    merged: dict[str, Any] = {}
    cut = False
    for which in named:
        rows, more = await _newest(uow, stripe_events, which, stripe_events.c.created_at, STRIPE_EVENT_CAP)
        cut = cut or more
        merged.update((row.event_id, row) for row in rows)
    newest = sorted(merged.values(), key=lambda r: (r.created_at, r.event_id), reverse=True)
    return newest[:STRIPE_EVENT_CAP], cut or len(newest) > STRIPE_EVENT_CAP


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency}"


def _invoice_entries(row: Any) -> list[Entry]:
    invoice = {"invoice_id": str(row.id)}
    if row.booking_id:
        invoice["booking_id"] = str(row.booking_id)
    label = f"Invoice {row.number}" if row.number else "Invoice"
    found = [
        Entry(
            row.created_at,
            "invoice",
            "invoice.created",
            "Invoice created as a draft",
            "",
            str(row.id),
            {**invoice, "client_name": row.client_name, "client_email": row.client_email},
        )
    ]
    if row.issued_at is not None:
        found.append(
            Entry(
                row.issued_at,
                "invoice",
                "invoice.issued",
                f"{label} issued for {_money(row.total_cents, row.currency)}",
                "",
                str(row.id),
                {
                    **invoice,
                    "number": row.number,
                    "total_cents": row.total_cents,
                    "tax_cents": row.tax_cents,
                    "currency": row.currency,
                },
            )
        )
    if row.sent_at is not None:
        found.append(
            Entry(
                row.sent_at,
                "invoice",
                "invoice.sent",
                f"{label} emailed to the client",
                "",
                str(row.id),
                {**invoice, "number": row.number, "client_email": row.client_email},
            )
        )
    if row.status in LATER_STATUSES:
        found.append(
            Entry(
                row.updated_at,
                "invoice",
                f"invoice.{row.status.lower()}",
                f"{label} is {row.status}",
                "",
                str(row.id),
                {**invoice, "number": row.number, "status": row.status},
            )
        )
    return found


def _payment(row: Any) -> Entry:
    details: dict[str, Any] = {
        "invoice_id": str(row.invoice_id),
        "amount_cents": row.amount_cents,
        "currency": row.currency,
        "method": row.method,
        "provider": row.provider,
    }
    if row.provider_ref:
        details["provider_ref"] = row.provider_ref
    if row.reference:
        # Finance's free text (a cheque number, an e-transfer note): may name the client.
        details["reference"] = row.reference
    return Entry(
        row.received_at,
        "payment",
        f"payment.{row.status}",
        f"{row.provider.capitalize()} payment of {_money(row.amount_cents, row.currency)} {row.status}",
        _actor(row.recorded_by, details),
        str(row.id),
        details,
    )


def _refund(row: Any) -> Entry:
    details: dict[str, Any] = {
        "invoice_id": str(row.invoice_id),
        "amount_cents": row.amount_cents,
        "currency": row.currency,
        "payment_intent": row.payment_intent_id,
    }
    if row.reason:
        details["notes"] = row.reason  # free text, possibly typed by finance
    return Entry(
        row.created_at,
        "refund",
        f"refund.{row.status}",
        f"Refund of {_money(row.amount_cents, row.currency)} {row.status}",
        _actor(row.requested_by, details),
        str(row.id),
        details,
    )


def _stripe_event(row: Any) -> Entry:
    details: dict[str, Any] = {"processed_status": row.processed_status}
    if row.invoice_id:
        details["invoice_id"] = str(row.invoice_id)
    if row.booking_id:
        details["booking_id"] = str(row.booking_id)
    return Entry(
        row.created_at,
        "stripe_event",
        f"stripe.{row.type}",
        f"Stripe sent {row.type} ({row.processed_status})",
        "stripe",
        row.event_id,
        details,
    )


def _actor(principal: str, details: dict[str, Any]) -> str:
    """A principal ("user:<id>", "stripe") is the actor; an email is personal data, so it goes into
    details["email"] instead (masked for VIEWERs)."""
    if "@" in principal:
        details["email"] = principal
        return ""
    return principal
