"""Booking's part of a person's export and erasure (seed 002's playbook, issue 13).

A person's rows here are the leads named by id or by one of their emails, and the bookings named by
id, by one of those leads or by one of the emails. The erasure is booking's step, run last by the
jobs service's driver: bookings are detached from their leads and their contact details erased,
NPS comments go (scores stay: they feed the aggregates), survey tokens are deleted, leads are
anonymised. Totals, currencies, dates and statuses never change: the accounting behind them stays.

Every change is conditional on the row still holding something to erase, so a repeat changes 0."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import ColumnElement, delete, false, func, or_, select, update

from libs.common.db import UnitOfWork
from libs.common.privacy import ERASED, Scrubber, forget_published_events, needles, uuids
from services.booking.models import Record, bookings, leads, nps_responses, nps_surveys


@dataclass(frozen=True)
class Erased:
    changed: int
    # Why the step must run again (events mentioning the person not yet published); empty when done.
    pending_reason: str


def _emails(person: Person) -> list[str]:
    return sorted({e.strip().lower() for e in person.emails if e.strip()})


def _leads_of(person: Person) -> ColumnElement[bool]:
    ids, emails = uuids(person.lead_ids), _emails(person)
    return or_(
        leads.c.id.in_(ids) if ids else false(),
        func.lower(leads.c.email).in_(emails) if emails else false(),
    )


def _bookings_of(person: Person) -> ColumnElement[bool]:
    ids, lead_ids, emails = uuids(person.booking_ids), uuids(person.lead_ids), _emails(person)
    return or_(
        bookings.c.id.in_(ids) if ids else false(),
        bookings.c.lead_id.in_(lead_ids) if lead_ids else false(),
        func.lower(bookings.c.client_email).in_(emails) if emails else false(),
    )


def _text(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def _record(row: Record, fields: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(row, name)
        if isinstance(value, datetime):
            value = _text(value)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)  # UUIDs
        out[name] = value
    return out


LEAD_FIELDS = (
    "id",
    "created_at",
    "status",
    "name",
    "email",
    "phone",
    "postal_code",
    "beds",
    "baths",
    "cleaning_type",
    "total_before_tax_cents",
    "currency",
    "notes",
)
BOOKING_FIELDS = (
    "id",
    "lead_id",
    "status",
    "starts_at",
    "ends_at",
    "client_name",
    "client_email",
    "client_phone",
    "address",
    "postal_code",
    "cleaning_type",
    "total_before_tax_cents",
    "currency",
    "team_id",
    "created_at",
)
NPS_FIELDS = ("booking_id", "score", "comment", "created_at")


async def export(uow: UnitOfWork, person: Person) -> dict[str, list[dict[str, Any]]]:
    """What booking holds about the person: leads, bookings and NPS answers, as stored (times as
    RFC 3339 text). No survey tokens or idempotency keys."""
    lead_rows = (
        await uow.session.execute(
            select(leads)
            .where(leads.c.org_id == uow.org_id, _leads_of(person))
            .order_by(leads.c.created_at, leads.c.id)
        )
    ).all()
    booking_rows = (
        await uow.session.execute(
            select(bookings)
            .where(bookings.c.org_id == uow.org_id, _bookings_of(person))
            .order_by(bookings.c.created_at, bookings.c.id)
        )
    ).all()
    booking_ids = [row.id for row in booking_rows]
    nps_rows = (
        (
            await uow.session.execute(
                select(nps_responses)
                .where(nps_responses.c.org_id == uow.org_id, nps_responses.c.booking_id.in_(booking_ids))
                .order_by(nps_responses.c.created_at, nps_responses.c.id)
            )
        ).all()
        if booking_ids
        else []
    )
    return {
        "leads": [_record(row, LEAD_FIELDS) for row in lead_rows],
        "bookings": [_record(row, BOOKING_FIELDS) for row in booking_rows],
        "nps": [_record(row, NPS_FIELDS) for row in nps_rows],
    }


async def erase(uow: UnitOfWork, person: Person) -> Erased:
    """Anonymise the person's bookings and leads, drop their NPS comments and survey tokens, and
    forget this service's published events that mention them."""
    assert uow.org_id is not None
    scrubber = Scrubber(needles(person))
    changed = 0
    booking_rows = (
        await uow.session.execute(
            select(bookings).where(bookings.c.org_id == uow.org_id, _bookings_of(person)).with_for_update()
        )
    ).all()
    for row in booking_rows:
        notes, _ = scrubber.scrub(row.notes)
        reason, _ = scrubber.scrub(row.cancel_reason)
        values = {
            "lead_id": None,
            "client_name": ERASED,
            "client_email": "",
            "client_phone": "",
            "address": "",
            "postal_code": "",
            "notes": notes,
            "cancel_reason": reason,
            # A hash of the request that made the booking, contact details included: no longer
            # anyone's to replay (NULL is never replayed, services/booking/idempotency.py).
            "idempotency_fingerprint": None,
        }
        if any(getattr(row, name) != value for name, value in values.items()):
            await uow.session.execute(update(bookings).where(bookings.c.id == row.id).values(**values))
            changed += 1
    booking_ids = [row.id for row in booking_rows]
    if booking_ids:
        comments = await uow.session.execute(
            update(nps_responses)
            .where(nps_responses.c.booking_id.in_(booking_ids), nps_responses.c.comment != "")
            .values(comment="")
        )
        surveys = await uow.session.execute(
            delete(nps_surveys).where(nps_surveys.c.booking_id.in_(booking_ids))
        )
        changed += int(comments.rowcount or 0) + int(surveys.rowcount or 0)  # type: ignore[attr-defined]
    lead_rows = (
        await uow.session.execute(
            select(leads).where(leads.c.org_id == uow.org_id, _leads_of(person)).with_for_update()
        )
    ).all()
    for row in lead_rows:
        estimate, _ = scrubber.scrub(row.estimate)
        values = {
            "name": ERASED,
            "email": "",
            "phone": "",
            "postal_code": "",
            "notes": "",
            "estimate": estimate,
            "idempotency_fingerprint": None,
        }
        if any(getattr(row, name) != value for name, value in values.items()) or row.anonymized_at is None:
            await uow.session.execute(
                update(leads)
                .where(leads.c.id == row.id)
                .values(**values, anonymized_at=func.coalesce(leads.c.anonymized_at, func.now()))
            )
            changed += 1
    forgotten = await forget_published_events(uow.session, uow.db.tables, uow.org_id, needles(person))
    changed += forgotten.deleted
    pending = ""
    if forgotten.unpublished:
        pending = f"{forgotten.unpublished} events mentioning the person are not published yet"
    return Erased(changed, pending)
