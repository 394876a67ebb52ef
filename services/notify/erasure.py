"""notify's step of seed 002's data export/delete playbook (issue 13): what notify holds about a
person (their email events, metadata only), and erasing them from its schema.

A person's rows are found by what notify knows: their addresses (an email's recipient, an outbox
row's target), their bookings and invoices (the ids the enqueue read from each row's dedupe key).
Erasing them:
- their emails not yet sent (pending, sending, or dead and so retryable) are skipped: nothing more
  goes out to them. A row a worker holds (sending) is skipped too: the worker's outcome is written
  only while the row is still `sending` under its claim (delivery/outcomes.py WRITE_OUTCOMES), so a
  send that finishes later cannot turn it back; the message in flight, if any, is the last;
- every email row of theirs loses its body and address (payload '{}', target '') and its error;
- their email events keep their type, status and times for the counts, recipient and subject ERASED;
- anything else of the org that mentions them (another row's payload or key, a stored export, an
  email event's subject) is scrubbed of their values (libs.common.privacy.Scrubber);
- their addresses leave the digests' recipient lists;
- notify's published events that mention them are forgotten.
Every statement changes only what still holds their data, so a second run changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import ColumnElement, Text, case, cast, false, func, literal, or_, select, update

from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument
from libs.common.privacy import ERASED, Scrubber, forget_published_events, needles
from services.notify.models import (
    email_events,
    export_events,
    notifications_digest_settings,
    outbox_events,
)

UNSENT = ("pending", "sending", "dead")


@dataclass(frozen=True)
class Who:
    """A Person as notify matches rows: addresses in lower case, ids as UUIDs."""

    emails: list[str]
    booking_ids: list[uuid.UUID]
    invoice_ids: list[uuid.UUID]
    needles: list[str]

    @property
    def empty(self) -> bool:
        return not (self.emails or self.booking_ids or self.invoice_ids)


def who(person: Person) -> Who:
    """Refuses an id that is no UUID (naming the field): a typo must not erase, or export, nothing."""
    problems: list[FieldViolation] = []
    ids: dict[str, list[uuid.UUID]] = {}
    for name in ("lead_ids", "booking_ids", "invoice_ids"):
        ids[name] = []
        for value in getattr(person, name):
            try:
                ids[name].append(uuid.UUID(value))
            except ValueError:
                problems.append(FieldViolation(f"person.{name}", f"{value!r} is not a UUID"))
    if problems:
        raise InvalidArgument.of(problems)
    emails = sorted({e.strip().lower() for e in person.emails if e.strip()})
    return Who(emails, ids["booking_ids"], ids["invoice_ids"], needles(person))


def _emails_of(org_id: uuid.UUID, person: Who, *, every_booking_email: bool = False) -> ColumnElement[bool]:
    """The person's email events: to one of their addresses, about one of their bookings, or sent
    for one of their invoices' outbox rows. With `every_booking_email`, also those of their
    bookings' outbox rows whose payload named no booking (a photo retake, to the worker): erased with
    the booking, but not exported to the person, being someone else's mail."""
    e, o = email_events, outbox_events
    matches: list[ColumnElement[bool]] = []
    if person.emails:
        matches.append(func.lower(e.c.recipient).in_(person.emails))
    if person.booking_ids:
        matches.append(e.c.booking_id.in_(person.booking_ids))
    rows: list[ColumnElement[bool]] = []
    if person.invoice_ids:
        rows.append(o.c.invoice_id.in_(person.invoice_ids))
    if person.booking_ids and every_booking_email:
        rows.append(o.c.booking_id.in_(person.booking_ids))
    if rows:
        matches.append(e.c.outbox_id.in_(select(o.c.id).where(o.c.org_id == org_id, or_(*rows))))
    return or_(false(), *matches)


def _outbox_of(person: Who) -> ColumnElement[bool]:
    o = outbox_events
    matches: list[ColumnElement[bool]] = []
    if person.emails:
        matches.append(func.lower(o.c.target).in_(person.emails))
    if person.booking_ids:
        matches.append(o.c.booking_id.in_(person.booking_ids))
    if person.invoice_ids:
        matches.append(o.c.invoice_id.in_(person.invoice_ids))
    return or_(false(), *matches)


def _mentions(values: Sequence[str], *columns: Any) -> ColumnElement[bool]:
    """Some column's text holds one of the values (case-insensitive): strpos on lower case rather
    than LIKE, so a value's own '%' or '_' means nothing. It reads every row of the org's table; an
    erasure is rare and the tables are kept only for their retention period."""
    lowered = sorted({v.lower() for v in values})
    return or_(
        false(),
        *(
            func.strpos(func.lower(func.coalesce(column, "")), value) > 0
            for column in columns
            for value in lowered
        ),
    )


# --- export ----------------------------------------------------------------------------------------


async def export_person(uow: UnitOfWork, person: Who) -> dict[str, list[dict[str, Any]]]:
    """The person's email events, newest first: metadata only (no body, no error text)."""
    assert uow.org_id is not None
    if person.empty:
        return {"emails": []}
    e = email_events
    rows = await uow.session.execute(
        select(e.c.id, e.c.email_type, e.c.subject, e.c.status, e.c.recipient, e.c.booking_id, e.c.created_at)
        .where(e.c.org_id == uow.org_id, _emails_of(uow.org_id, person))
        .order_by(e.c.created_at.desc(), e.c.id.desc())
    )
    return {
        "emails": [
            {
                "id": str(row.id),
                "email_type": row.email_type,
                "subject": row.subject,
                "status": row.status,
                "recipient": row.recipient,
                "booking_id": str(row.booking_id) if row.booking_id else None,
                "created_at": row.created_at.isoformat(),
            }
            for row in rows
        ]
    }


# --- erasure ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erased:
    changed: int
    pending_reason: str = ""


async def erase_person(uow: UnitOfWork, person: Who) -> Erased:
    assert uow.org_id is not None
    if person.empty and not person.needles:
        return Erased(0)
    scrubber = Scrubber(person.needles)
    changed = await _end_emails(uow, person)
    changed += await _anonymise_email_events(uow, person)
    if person.needles:
        changed += await _scrub_outbox(uow, person, scrubber)
        changed += await _scrub_email_events(uow, person, scrubber)
        changed += await _scrub_exports(uow, person, scrubber)
    changed += await _drop_digest_recipients(uow, person)
    forgotten = await forget_published_events(uow.session, uow.db.tables, uow.org_id, person.needles)
    changed += forgotten.deleted
    if forgotten.unpublished:
        return Erased(
            changed,
            f"{forgotten.unpublished} notify event(s) mentioning the person are not published yet",
        )
    return Erased(changed)


async def _end_emails(uow: UnitOfWork, person: Who) -> int:
    """Their emails: the unsent skipped, every one without body, address or error."""
    if person.empty:
        return 0
    o = outbox_events
    ended = await uow.session.execute(
        update(o)
        .where(
            o.c.org_id == uow.org_id,
            o.c.kind == "email",
            _outbox_of(person),
            or_(
                o.c.status.in_(UNSENT),
                o.c.target != "",
                cast(o.c.payload, Text) != "{}",
                o.c.last_error.is_not(None),
            ),
        )
        .values(
            status=case((o.c.status.in_(UNSENT), literal("skipped")), else_=o.c.status),
            dead_reason=None,
            payload={},
            target="",
            last_error=None,
            updated_at=func.now(),
        )
        .returning(o.c.id)
    )
    return len(ended.all())


async def _anonymise_email_events(uow: UnitOfWork, person: Who) -> int:
    if person.empty:
        return 0
    assert uow.org_id is not None
    e = email_events
    done = await uow.session.execute(
        update(e)
        .where(
            e.c.org_id == uow.org_id,
            _emails_of(uow.org_id, person, every_booking_email=True),
            or_(e.c.recipient != ERASED, e.c.subject != ERASED, e.c.error.is_not(None)),
        )
        .values(recipient=ERASED, subject=ERASED, error=None)
        .returning(e.c.id)
    )
    return len(done.all())


async def _scrub_rows(
    uow: UnitOfWork, rows: Sequence[Any], columns: Sequence[str], table: Any, scrubber: Scrubber
) -> int:
    changed = 0
    for row in rows:
        values: dict[str, Any] = {}
        for column in columns:
            scrubbed, hit = scrubber.scrub(getattr(row, column))
            if hit:
                values[column] = scrubbed
        if values:
            await uow.session.execute(update(table).where(table.c.id == row.id).values(**values))
            changed += 1
    return changed


async def _scrub_outbox(uow: UnitOfWork, person: Who, scrubber: Scrubber) -> int:
    """Any other row that mentions them: a webhook or export about their booking, a digest listing
    them, a key naming their address (which becomes the row's own id: keys are unique per org, and a
    scrubbed one could collide with another's)."""
    o = outbox_events
    rows = (
        await uow.session.execute(
            select(o.c.id, o.c.payload, o.c.target, o.c.last_error, o.c.dedupe_key).where(
                o.c.org_id == uow.org_id,
                _mentions(
                    person.needles, cast(o.c.payload, Text), o.c.target, o.c.last_error, o.c.dedupe_key
                ),
            )
        )
    ).all()
    changed = await _scrub_rows(uow, rows, ("payload", "target", "last_error"), o, scrubber)
    for row in rows:
        if scrubber.contains(row.dedupe_key):
            await uow.session.execute(update(o).where(o.c.id == row.id).values(dedupe_key=f"erased:{row.id}"))
            changed += 1
    return changed


async def _scrub_email_events(uow: UnitOfWork, person: Who, scrubber: Scrubber) -> int:
    e = email_events
    rows = (
        await uow.session.execute(
            select(e.c.id, e.c.recipient, e.c.subject, e.c.error).where(
                e.c.org_id == uow.org_id, _mentions(person.needles, e.c.recipient, e.c.subject, e.c.error)
            )
        )
    ).all()
    return await _scrub_rows(uow, rows, ("recipient", "subject", "error"), e, scrubber)


async def _scrub_exports(uow: UnitOfWork, person: Who, scrubber: Scrubber) -> int:
    """Export dead letters and stored exports (an accounting CSV may name them)."""
    x = export_events
    rows = (
        await uow.session.execute(
            select(x.c.id, x.c.payload, x.c.target, x.c.last_error).where(
                x.c.org_id == uow.org_id,
                _mentions(person.needles, cast(x.c.payload, Text), x.c.target, x.c.last_error),
            )
        )
    ).all()
    return await _scrub_rows(uow, rows, ("payload", "target", "last_error"), x, scrubber)


async def _drop_digest_recipients(uow: UnitOfWork, person: Who) -> int:
    if not person.emails:
        return 0
    d = notifications_digest_settings
    changed = 0
    for row in (await uow.session.execute(select(d).where(d.c.org_id == uow.org_id))).all():
        recipients = list(row.recipients or [])
        kept = [r for r in recipients if not (isinstance(r, str) and r.strip().lower() in person.emails)]
        if kept != recipients:
            await uow.session.execute(
                update(d)
                .where(d.c.org_id == row.org_id, d.c.digest_key == row.digest_key)
                .values(recipients=kept, updated_at=func.now())
            )
            changed += 1
    return changed
