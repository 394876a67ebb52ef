"""Who a person is, as booking knows them (seed 002's data export/delete playbook, issue 13).

A request names a person by one lead id or one email; the person is then every lead of the org with
that email (case-insensitive) plus the given lead, their bookings (by lead, or by the client email),
every email those rows hold, and the names, phones and addresses they hold as stored, which the other
services scrub from free text. One pass, not a closure: a booking's other email does not pull in
that address's leads, so one person's request never sweeps up a household.

The audit subject never holds the email: "email:" and the first 16 hex of its SHA-256 stand for it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from cws.common.v1.privacy_pb2 import Person
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, false, func, or_, select

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument, NotFound, invalid
from libs.common.privacy import ERASED, uuids
from services.booking.models import bookings, leads


@dataclass(frozen=True)
class Subject:
    """What a request named: a lead of the org, or an email (lower case)."""

    lead_id: uuid.UUID | None
    email: str

    @property
    def label(self) -> str:
        """For audit records and DeletionRequest.subject: no email in clear."""
        if self.lead_id is not None:
            return f"lead:{self.lead_id}"
        return f"email:{email_digest(self.email)[:16]}"

    @property
    def digest(self) -> str:
        """sha256 (hex) of the subject, the key of "one open deletion request per person"."""
        key = f"lead:{self.lead_id}" if self.lead_id is not None else f"email:{self.email}"
        return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Found:
    """A person as resolved; `person()` is the wire form, lists sorted so answers are stable."""

    lead_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    booking_ids: set[str] = field(default_factory=set)
    invoice_ids: set[str] = field(default_factory=set)
    pii_values: set[str] = field(default_factory=set)

    def person(self) -> Person:
        return Person(
            lead_ids=sorted(self.lead_ids),
            emails=sorted(self.emails),
            booking_ids=sorted(self.booking_ids),
            invoice_ids=sorted(self.invoice_ids),
            pii_values=sorted(self.pii_values),
        )

    def merge(self, person: Person) -> Found:
        self.lead_ids.update(person.lead_ids)
        self.emails.update(e.lower() for e in person.emails if e)
        self.booking_ids.update(person.booking_ids)
        self.invoice_ids.update(person.invoice_ids)
        self.pii_values.update(v for v in person.pii_values if v)
        return self


def email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def parse_subject(lead_id: str, email: str) -> Subject:
    """Exactly one of the two, well formed; else INVALID_ARGUMENT naming the field."""
    lead_id, email = lead_id.strip(), email.strip()
    if bool(lead_id) == bool(email):
        problem = "give exactly one of lead_id and email"
        raise InvalidArgument.of([FieldViolation("lead_id", problem), FieldViolation("email", problem)])
    if lead_id:
        return Subject(parse_id(lead_id, "lead_id"), "")
    if len(email) > 320:
        raise invalid("email", "must be at most 320 characters")
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as error:
        raise invalid("email", str(error)) from None
    # Matched as stored: leads keep the normalised address in lower case, bookings as typed
    # (compared lower-cased), so lower() of what was given is the key, not a re-spelled form.
    return Subject(None, email.lower())


async def find(uow: UnitOfWork, subject: Subject) -> tuple[Found, int]:
    """(the person, how many leads matched). A lead id that is not the org's is NOT_FOUND; an
    unknown email is a person with just that email."""
    lead_ids: list[uuid.UUID] = []
    emails: list[str] = []
    if subject.lead_id is not None:
        lead = (
            await uow.session.execute(
                select(leads.c.id, leads.c.email).where(
                    leads.c.org_id == uow.org_id, leads.c.id == subject.lead_id
                )
            )
        ).first()
        if lead is None:
            raise NotFound("lead not found")
        lead_ids.append(lead.id)
        if lead.email:
            emails.append(lead.email.lower())
    else:
        emails.append(subject.email)
    found = await resolve(uow, lead_ids, emails)
    return found, len(found.lead_ids)


async def resolve(uow: UnitOfWork, lead_ids: Iterable[uuid.UUID], emails: Iterable[str]) -> Found:
    """The leads named by id or by one of `emails`, their bookings and the bookings with one of the
    emails, and every email and identifying value those rows hold."""
    ids, addresses = list(lead_ids), sorted({e.lower() for e in emails if e})
    found = Found(lead_ids={str(i) for i in ids}, emails=set(addresses))
    lead_rows = (
        await uow.session.execute(
            select(leads.c.id, leads.c.name, leads.c.email, leads.c.phone).where(
                leads.c.org_id == uow.org_id,
                or_(_in(leads.c.id, ids), _in(func.lower(leads.c.email), addresses)),
            )
        )
    ).all()
    for lead in lead_rows:
        found.lead_ids.add(str(lead.id))
        found.emails.update(v.lower() for v in (lead.email,) if v)
        found.pii_values.update(_values(lead.name, lead.phone))
    all_leads = uuids(found.lead_ids)
    all_emails = sorted(found.emails)
    booking_rows = (
        await uow.session.execute(
            select(
                bookings.c.id,
                bookings.c.client_name,
                bookings.c.client_email,
                bookings.c.client_phone,
                bookings.c.address,
            ).where(
                bookings.c.org_id == uow.org_id,
                or_(_in(bookings.c.lead_id, all_leads), _in(func.lower(bookings.c.client_email), all_emails)),
            )
        )
    ).all()
    for booking in booking_rows:
        found.booking_ids.add(str(booking.id))
        found.emails.update(v.lower() for v in (booking.client_email,) if v)
        found.pii_values.update(_values(booking.client_name, booking.client_phone, booking.address))
    return found


def _values(*values: str) -> set[str]:
    # An anonymised row holds ERASED: not a value of anyone's to erase again.
    return {v for v in values if v and v != ERASED}


def _in(
    column: ColumnElement[object], values: list[object] | list[uuid.UUID] | list[str]
) -> ColumnElement[bool]:
    # An empty IN list is "false", spelled out so the planner skips that arm.
    return column.in_(values) if values else false()
