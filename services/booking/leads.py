"""Lead intake: validated, normalised contact details with the estimate snapshot they were quoted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cws.booking.v1 import events_pb2
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument, NotFound, invalid
from services.booking import contacts, idempotency, pricing
from services.booking.events import BOOKING_LEAD_CREATED
from services.booking.models import Record, bookings, leads
from services.booking.orgs import OrgProfile
from services.booking.settings import BookingSettings


@dataclass(frozen=True)
class LeadInput:
    name: str
    phone: str
    email: str
    postal_code: str
    beds: int
    baths: float
    cleaning_type: str
    notes: str = ""
    idempotency_key: str = ""

    def fingerprint(self) -> str:
        """The request as sent (before normalising), all of it but the key: an anonymous retry must
        repeat every field to be answered with the lead (services/booking/idempotency.py)."""
        return idempotency.fingerprint(
            name=self.name,
            phone=self.phone,
            email=self.email,
            postal_code=self.postal_code,
            beds=self.beds,
            baths=self.baths,
            cleaning_type=self.cleaning_type,
            notes=self.notes,
        )


async def create(
    uow: UnitOfWork, settings: BookingSettings, profile: OrgProfile, data: LeadInput
) -> tuple[Record, bool]:
    """Returns (lead row, replayed). A repeated idempotency key returns the first lead, only to the
    same request (else 422 idempotency_key_reused, which shows nothing of the first)."""
    request_fingerprint = data.fingerprint()
    if data.idempotency_key:
        if len(data.idempotency_key) > 200:
            raise invalid("idempotency_key", "must be at most 200 characters")
        earlier = await _by_idempotency_key(uow, data.idempotency_key)
        if earlier is not None:
            return idempotency.replay(earlier, request_fingerprint), True
    problems: list[FieldViolation] = []
    name = contacts.text(data.name, "name", problems, max_length=200, required=True)
    phone = contacts.phone(data.phone, "phone", problems, settings.phone_region)
    email = contacts.email(data.email, "email", problems)
    postal = contacts.postal_code(data.postal_code, "postal_code", problems, settings.postal_code_country)
    notes = contacts.text(data.notes, "notes", problems, max_length=2000)
    config = await pricing.active_config(uow, profile.currency)
    try:
        pricing.validate_inputs(data.beds, data.baths, data.cleaning_type, config.rules, "structured_inputs.")
    except InvalidArgument as error:
        problems.extend(error.violations)
    if problems:
        raise InvalidArgument.of(problems)
    quote = await pricing.quote(uow, config, data.beds, data.baths, data.cleaning_type)
    inserted = (
        await uow.session.execute(
            pg_insert(leads)
            .values(
                id=uuid.uuid4(),
                org_id=uow.org_id,
                name=name,
                phone=phone,
                email=email,
                postal_code=postal,
                beds=data.beds,
                baths=data.baths,
                cleaning_type=data.cleaning_type,
                pricing_config_id=quote.pricing_config_id,
                estimate=quote.snapshot(),
                total_before_tax_cents=quote.total_before_tax_cents,
                currency=quote.currency,
                notes=notes,
                idempotency_key=data.idempotency_key or None,
                idempotency_fingerprint=request_fingerprint if data.idempotency_key else None,
            )
            .on_conflict_do_nothing()
            .returning(*leads.c)
        )
    ).first()
    if inserted is None:  # the same key won a race a moment ago: its lead, now committed
        winner = await uow.session.execute(
            select(leads).where(leads.c.idempotency_key == data.idempotency_key)
        )
        return idempotency.replay(winner.one(), request_fingerprint), True
    uow.add_event(
        BOOKING_LEAD_CREATED,
        events_pb2.LeadCreated(
            org_id=str(uow.org_id),
            lead_id=str(inserted.id),
            email=email,
            total_before_tax_cents=quote.total_before_tax_cents,
            name=name,
            postal_code=postal,
            cleaning_type=data.cleaning_type,
        ),
    )
    return inserted, False


async def _by_idempotency_key(uow: UnitOfWork, key: str) -> Record | None:
    return (await uow.session.execute(select(leads).where(leads.c.idempotency_key == key))).first()


async def get(uow: UnitOfWork, lead_id: str) -> Record:
    row = (await uow.session.execute(select(leads).where(leads.c.id == parse_id(lead_id, "lead_id")))).first()
    if row is None:
        raise NotFound("lead not found")
    return row


async def list_leads(uow: UnitOfWork, *, limit: int, offset: int) -> tuple[list[Record], int]:
    rows = (
        await uow.session.execute(
            select(leads).order_by(leads.c.created_at.desc(), leads.c.id).limit(limit).offset(offset)
        )
    ).all()
    total = await uow.session.scalar(select(func.count()).select_from(leads))
    return list(rows), int(total or 0)


async def retention_cleanup(uow: UnitOfWork, older_than_days: int) -> int:
    """RETENTION_LEAD_DAYS: delete leads older than that which never became a booking (their PII
    has no further use); leads behind a booking stay with it."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    linked = select(bookings.c.id).where(bookings.c.lead_id == leads.c.id).exists()
    deleted = await uow.session.execute(delete(leads).where(leads.c.created_at < cutoff, ~linked))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]
