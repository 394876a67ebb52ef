"""What billing holds about a person, for seed 002's data export/delete playbook (issue 13). No gRPC here.

A person's invoices are those of their bookings (Person.booking_ids), those addressed to one of their
emails (compared lower case, ix_invoices_org_client_email) and those billing named in an earlier
answer (Person.invoice_ids: once an invoice's email is erased, that is how a repeat finds it).

Export: the invoices, their payments and refunds, metadata only: no public tokens, no Checkout URLs.

Erasure, one idempotent, resumable step:
1. the Stripe customers of the person's emails (and of their invoices' emails) are deleted at Stripe,
   with no transaction open, then their `stripe_customers` rows, one at a time. A 404 from Stripe means
   it is gone already. Stripe unreachable (or the breaker open): the row stays, the step answers a
   pending reason and the driver runs it again later;
2. in one unit of work, the invoices stay for accounting (number, totals, tax snapshot, payments'
   amounts untouched) without their client: client_name becomes ERASED, client_email '' (the seed's
   "invoice customer_id nulled"), except an email still needed to find a Stripe customer that step 1
   could not delete; their public links go (the emailed link then answers 404); item descriptions,
   payment references, refund reasons and Stripe event facts are scrubbed of the person's values; the
   published events and dead letters that mention the person are forgotten. Events not yet published
   are left for the relay (pending reason, as above).
A second call finds nothing left to change and answers 0."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import ColumnElement, Table, delete, false, func, or_, select, update

from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.logs import get_logger
from libs.common.privacy import ERASED, Scrubber, forget_published_events, needles, uuids
from services.billing.models import (
    invoice_items,
    invoice_payments,
    invoice_public_tokens,
    invoice_refunds,
    invoices,
    stripe_customers,
    stripe_events,
)
from services.billing.stripe_api import StripeApi, StripeRefused, StripeUnavailable

log = get_logger(__name__)

INVOICES = "invoices"
PAYMENTS = "payments"
REFUNDS = "refunds"


@dataclass(frozen=True)
class Erased:
    changed: int
    # The person's invoices (ids as text), so later steps match rows keyed by invoice.
    invoice_ids: list[str]
    # Empty when the step is done; else why it must run again.
    pending_reason: str = ""


@dataclass(frozen=True)
class _Invoice:
    id: uuid.UUID
    client_name: str
    client_email: str


def emails_of(person: Person) -> set[str]:
    return {e.strip().lower() for e in person.emails if e.strip()}


def _of_person(person: Person) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    booking_ids = uuids(person.booking_ids)
    if booking_ids:
        conditions.append(invoices.c.booking_id.in_(booking_ids))
    emails = sorted(emails_of(person))
    if emails:
        conditions.append(func.lower(invoices.c.client_email).in_(emails))
    invoice_ids = uuids(person.invoice_ids)
    if invoice_ids:
        conditions.append(invoices.c.id.in_(invoice_ids))
    return or_(*conditions) if conditions else false()


def _text(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- export ---------------------------------------------------------------------------------------


async def export(db: Database, org_id: uuid.UUID, person: Person) -> dict[str, list[dict[str, Any]]]:
    """The person's invoices, payments and refunds, oldest first: metadata only."""
    async with unit_of_work(db, org_id) as uow:
        found = (
            await uow.session.execute(
                select(invoices)
                .where(invoices.c.org_id == org_id, _of_person(person))
                .order_by(invoices.c.created_at, invoices.c.id)
            )
        ).all()
        ids = [row.id for row in found]
        paid = await _rows_of(uow, invoice_payments, ids, invoice_payments.c.received_at)
        refunded = await _rows_of(uow, invoice_refunds, ids, invoice_refunds.c.created_at)
    return {
        INVOICES: [
            {
                "id": str(row.id),
                "number": row.number,
                "status": row.status,
                "currency": row.currency,
                "client_name": row.client_name,
                "client_email": row.client_email,
                "booking_id": str(row.booking_id) if row.booking_id else None,
                "issued_at": _text(row.issued_at),
                "due_date": _text(row.due_date),
                "sent_at": _text(row.sent_at),
                "subtotal_cents": row.subtotal_cents,
                "tax_cents": row.tax_cents,
                "total_cents": row.total_cents,
                "created_at": _text(row.created_at),
            }
            for row in found
        ],
        PAYMENTS: [
            {
                "id": str(row.id),
                "invoice_id": str(row.invoice_id),
                "provider": row.provider,
                "method": row.method,
                "amount_cents": row.amount_cents,
                "currency": row.currency,
                "status": row.status,
                # A Stripe PaymentIntent id: it names the payment at Stripe, it opens nothing.
                "provider_ref": row.provider_ref,
                "received_at": _text(row.received_at),
            }
            for row in paid
        ],
        REFUNDS: [
            {
                "id": str(row.id),
                "invoice_id": str(row.invoice_id),
                "amount_cents": row.amount_cents,
                "currency": row.currency,
                "status": row.status,
                "created_at": _text(row.created_at),
            }
            for row in refunded
        ],
    }


async def _rows_of(uow: UnitOfWork, table: Table, invoice_ids: Sequence[uuid.UUID], when: Any) -> list[Any]:
    if not invoice_ids:
        return []
    found = await uow.session.execute(
        select(table)
        .where(table.c.org_id == uow.org_id, table.c.invoice_id.in_(invoice_ids))
        .order_by(when, table.c.id)
    )
    return list(found.all())


# --- erasure --------------------------------------------------------------------------------------


async def erase(db: Database, org_id: uuid.UUID, person: Person, stripe: StripeApi | None) -> Erased:
    async with unit_of_work(db, org_id) as uow:
        found = await _invoices(uow, person)
        emails = emails_of(person) | {i.client_email.strip().lower() for i in found if i.client_email}
        customers = await _customers(uow, emails)
    deleted, left, stripe_reason = await _delete_customers(db, org_id, stripe, customers)
    # An email the person's request does not name is, once erased from the invoices, no longer known:
    # it stays on them while its Stripe customer is still to be deleted (the next run needs it).
    keep_emails = left - emails_of(person)
    values = needles(_with_invoice_values(person, found))
    scrubber = Scrubber(values)
    ids = [i.id for i in found]
    async with unit_of_work(db, org_id) as uow:
        changed = deleted
        changed += await _anonymise_invoices(uow, found, keep_emails)
        changed += await _delete_public_tokens(uow, ids)
        changed += await _scrub_column(uow, invoice_items, invoice_items.c.description, ids, scrubber)
        changed += await _scrub_column(uow, invoice_payments, invoice_payments.c.reference, ids, scrubber)
        changed += await _scrub_column(uow, invoice_refunds, invoice_refunds.c.reason, ids, scrubber)
        changed += await _scrub_stripe_events(uow, ids, uuids(person.booking_ids), scrubber)
        forgotten = await forget_published_events(uow.session, db.tables, org_id, values)
        changed += forgotten.deleted
        if changed:
            uow.audit_change({}, {"erased_rows": changed, "invoices": len(ids)})
    reasons = [stripe_reason] if stripe_reason else []
    if forgotten.unpublished:
        reasons.append(f"{forgotten.unpublished} billing events mentioning the person are not published yet")
    return Erased(changed, [str(i) for i in ids], "; ".join(reasons))


async def _invoices(uow: UnitOfWork, person: Person) -> list[_Invoice]:
    rows = await uow.session.execute(
        select(invoices.c.id, invoices.c.client_name, invoices.c.client_email)
        .where(invoices.c.org_id == uow.org_id, _of_person(person))
        .order_by(invoices.c.created_at, invoices.c.id)
    )
    return [_Invoice(row.id, row.client_name, row.client_email) for row in rows]


def _with_invoice_values(person: Person, found: Iterable[_Invoice]) -> Person:
    """The person with their invoices' names and emails as values too: an invoice may spell the
    client otherwise than the lead did ("Ada Client" for "Ada"), and its items may repeat it."""
    extended = Person()
    extended.CopyFrom(person)
    known = set(extended.pii_values)
    for invoice in found:
        for value in (invoice.client_name, invoice.client_email):
            if value and value != ERASED and value not in known:
                extended.pii_values.append(value)
                known.add(value)
    return extended


async def _customers(uow: UnitOfWork, emails: Collection[str]) -> list[tuple[str, str]]:
    if not emails:
        return []
    rows = await uow.session.execute(
        select(stripe_customers.c.email, stripe_customers.c.customer_id)
        .where(stripe_customers.c.org_id == uow.org_id, stripe_customers.c.email.in_(sorted(emails)))
        .order_by(stripe_customers.c.email)
    )
    return [(row.email, row.customer_id) for row in rows]


async def _delete_customers(
    db: Database, org_id: uuid.UUID, stripe: StripeApi | None, customers: Sequence[tuple[str, str]]
) -> tuple[int, set[str], str]:
    """(rows deleted, emails whose customer is left, why some are left). Stripe is asked with no
    transaction open; each row goes in its own unit of work once Stripe no longer holds the customer.
    Without Stripe configured, billing cannot have made a customer there: the row is all there is."""
    deleted = 0
    left: set[str] = set()
    problems: list[str] = []
    for email, customer_id in customers:
        if stripe is not None:
            try:
                await stripe.delete_customer(customer_id)
            except (StripeUnavailable, StripeRefused) as error:
                # Refused (a 4xx other than 404) says nothing of whether the customer is gone: retried.
                log.warning("stripe_customer_not_deleted", customer_id=customer_id, error=error.code)
                left.add(email)
                problems.append(error.code)
                continue
        async with unit_of_work(db, org_id) as uow:
            gone = await uow.session.execute(
                delete(stripe_customers).where(
                    stripe_customers.c.org_id == org_id, stripe_customers.c.email == email
                )
            )
            deleted += int(gone.rowcount or 0)  # type: ignore[attr-defined]
    if not left:
        return deleted, left, ""
    return (
        deleted,
        left,
        f"{len(left)} Stripe customers could not be deleted yet ({', '.join(sorted(set(problems)))})",
    )


async def _anonymise_invoices(
    uow: UnitOfWork, found: Sequence[_Invoice], keep_emails: Collection[str]
) -> int:
    """updated_at is left as it was: the timelines date an invoice's status by it."""
    changed = 0
    for invoice in found:
        email = invoice.client_email if invoice.client_email.strip().lower() in keep_emails else ""
        if invoice.client_name == ERASED and invoice.client_email == email:
            continue
        await uow.session.execute(
            update(invoices)
            .where(invoices.c.org_id == uow.org_id, invoices.c.id == invoice.id)
            .values(client_name=ERASED, client_email=email)
        )
        changed += 1
    return changed


async def _delete_public_tokens(uow: UnitOfWork, invoice_ids: Sequence[uuid.UUID]) -> int:
    if not invoice_ids:
        return 0
    gone = await uow.session.execute(
        delete(invoice_public_tokens).where(
            invoice_public_tokens.c.org_id == uow.org_id, invoice_public_tokens.c.invoice_id.in_(invoice_ids)
        )
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


async def _scrub_column(
    uow: UnitOfWork, table: Table, column: Any, invoice_ids: Sequence[uuid.UUID], scrubber: Scrubber
) -> int:
    """Scrub one free-text column of the invoices' rows, cut to the column's length (ERASED may be
    longer than the value it replaced)."""
    if not invoice_ids:
        return 0
    rows = await uow.session.execute(
        select(table.c.id, column).where(table.c.org_id == uow.org_id, table.c.invoice_id.in_(invoice_ids))
    )
    changed = 0
    for row_id, value in rows.tuples().all():
        scrubbed, hit = scrubber.scrub(value)
        if not hit:
            continue
        await uow.session.execute(
            update(table).where(table.c.id == row_id).values({column.name: scrubbed[: column.type.length]})
        )
        changed += 1
    return changed


async def _scrub_stripe_events(
    uow: UnitOfWork,
    invoice_ids: Sequence[uuid.UUID],
    booking_ids: Sequence[uuid.UUID],
    scrubber: Scrubber,
) -> int:
    """`facts` holds ids, amounts and statuses by design (webhooks.extract); scrubbed all the same, in
    case a metadata value ever carried more."""
    mine: list[ColumnElement[bool]] = []
    if invoice_ids:
        mine.append(stripe_events.c.invoice_id.in_(invoice_ids))
    if booking_ids:
        mine.append(stripe_events.c.booking_id.in_(booking_ids))
    if not mine:
        return 0
    rows = await uow.session.execute(
        select(stripe_events.c.event_id, stripe_events.c.facts).where(
            stripe_events.c.org_id == uow.org_id, or_(*mine)
        )
    )
    changed = 0
    for event_id, facts in rows.tuples().all():
        scrubbed, hit = scrubber.scrub(facts)
        if hit:
            await uow.session.execute(
                update(stripe_events).where(stripe_events.c.event_id == event_id).values(facts=scrubbed)
            )
            changed += 1
    return changed
