"""Bookings: created from a lead or by a dispatcher, then pending → confirmed → in progress →
completed, or cancelled. Times are stored in UTC; the org's time zone travels with each booking."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cws.booking.v1 import events_pb2
from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from libs.common.convert import parse_id, to_ts
from libs.common.db import UnitOfWork
from libs.common.errors import (
    Conflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    invalid,
)
from libs.common.event_types import Event
from services.booking import contacts, entitlements, idempotency, leads, nps, pricing, resources
from services.booking.events import (
    BOOKING_CANCELLED,
    BOOKING_COMPLETED,
    BOOKING_CONFIRMED,
    BOOKING_CREATED,
    BOOKING_DELETED,
    BOOKING_RESCHEDULED,
    BOOKING_STARTED,
)
from services.booking.models import BOOKING_STATUSES, Record, bookings, schedule_blocks
from services.booking.orgs import OrgProfile
from services.booking.settings import BookingSettings

MAX_DURATION_MINUTES = 24 * 60
MAX_HORIZON_DAYS = 730

BookingEvent = Event[events_pb2.BookingChanged]

# action: (allowed from, to, the event it raises)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, BookingEvent]] = {
    "confirm": (("pending",), "confirmed", BOOKING_CONFIRMED),
    "start": (("confirmed",), "in_progress", BOOKING_STARTED),
    "complete": (("in_progress", "confirmed"), "completed", BOOKING_COMPLETED),
    "cancel": (("pending", "confirmed"), "cancelled", BOOKING_CANCELLED),
}


def check_window(starts_at: datetime, duration_minutes: int, problems: list[FieldViolation]) -> datetime:
    if not 15 <= duration_minutes <= MAX_DURATION_MINUTES:
        problems.append(FieldViolation("duration_minutes", f"must be between 15 and {MAX_DURATION_MINUTES}"))
    now = datetime.now(UTC)
    if starts_at < now - timedelta(days=1) or starts_at > now + timedelta(days=MAX_HORIZON_DAYS):
        problems.append(FieldViolation("starts_at", f"must be within the next {MAX_HORIZON_DAYS} days"))
        return starts_at  # refused anyway; near year 9999 the end would overflow
    return starts_at + timedelta(minutes=max(duration_minutes, 0))


@dataclass(frozen=True)
class BookingInput:
    starts_at: datetime
    duration_minutes: int
    lead_id: str = ""
    client_name: str = ""
    client_email: str = ""
    client_phone: str = ""
    address: str = ""
    postal_code: str = ""
    cleaning_type: str = ""
    beds: int = 0
    baths: float = 0
    notes: str = ""
    idempotency_key: str = ""
    deposit_required: bool = False
    # Who asks (the request context's principal): a key is bound to its caller as well as its body.
    requested_by: str = ""

    def fingerprint(self) -> str:
        """The request as sent and its caller, all but the key (services/booking/idempotency.py)."""
        return idempotency.fingerprint(
            principal=self.requested_by,
            starts_at=self.starts_at,
            duration_minutes=self.duration_minutes,
            lead_id=self.lead_id,
            client_name=self.client_name,
            client_email=self.client_email,
            client_phone=self.client_phone,
            address=self.address,
            postal_code=self.postal_code,
            cleaning_type=self.cleaning_type,
            beds=self.beds,
            baths=self.baths,
            notes=self.notes,
            deposit_required=self.deposit_required,
        )


async def create(
    uow: UnitOfWork, settings: BookingSettings, profile: OrgProfile, data: BookingInput
) -> tuple[Record, bool]:
    """Returns (booking row, replayed). A repeated idempotency key returns the first booking, only to
    the same request from the same caller (else 422 idempotency_key_reused)."""
    request_fingerprint = data.fingerprint()
    if data.idempotency_key:
        if len(data.idempotency_key) > 200:
            raise invalid("idempotency_key", "must be at most 200 characters")
        earlier = (
            await uow.session.execute(
                select(bookings).where(bookings.c.idempotency_key == data.idempotency_key)
            )
        ).first()
        if earlier is not None:
            return idempotency.replay(earlier, request_fingerprint), True
    # After the replay: answering a booking made before the pause creates nothing.
    await entitlements.require_active(uow, "bookings")
    problems: list[FieldViolation] = []
    lead = await leads.get(uow, data.lead_id) if data.lead_id else None
    name = contacts.text(
        data.client_name or (lead.name if lead else ""),
        "client_name",
        problems,
        max_length=200,
        required=True,
    )
    email = contacts.email(
        data.client_email or (lead.email if lead else ""), "client_email", problems, required=False
    )
    phone = contacts.phone(
        data.client_phone or (lead.phone if lead else ""),
        "client_phone",
        problems,
        settings.phone_region,
        required=False,
    )
    postal = contacts.postal_code(
        data.postal_code or (lead.postal_code if lead else ""),
        "postal_code",
        problems,
        settings.postal_code_country,
        required=False,
    )
    address = contacts.text(data.address, "address", problems, max_length=500)
    notes = contacts.text(data.notes, "notes", problems, max_length=2000)
    cleaning_type = data.cleaning_type or (lead.cleaning_type if lead else "")
    beds = data.beds if data.beds or not lead else lead.beds
    baths = data.baths if data.baths or not lead else lead.baths
    ends_at = check_window(data.starts_at, data.duration_minutes, problems)
    config = await pricing.active_config(uow, profile.currency)
    try:
        pricing.validate_inputs(beds, baths, cleaning_type, config.rules)
    except InvalidArgument as error:
        problems.extend(error.violations)
    if problems:
        raise InvalidArgument.of(problems)
    if lead is not None:
        total, currency = lead.total_before_tax_cents, lead.currency  # the price the client was quoted
    else:
        quote = await pricing.quote(uow, config, beds, baths, cleaning_type)
        total, currency = quote.total_before_tax_cents, quote.currency
    inserted = (
        await uow.session.execute(
            pg_insert(bookings)
            .values(
                id=uuid.uuid4(),
                org_id=uow.org_id,
                lead_id=lead.id if lead else None,
                starts_at=data.starts_at,
                ends_at=ends_at,
                client_name=name,
                client_email=email,
                client_phone=phone,
                address=address,
                postal_code=postal,
                cleaning_type=cleaning_type,
                beds=beds,
                baths=baths,
                total_before_tax_cents=total,
                currency=currency,
                deposit_required=settings.deposits_enabled or data.deposit_required,
                notes=notes,
                idempotency_key=data.idempotency_key or None,
                idempotency_fingerprint=request_fingerprint if data.idempotency_key else None,
            )
            .on_conflict_do_nothing()
            .returning(*bookings.c)
        )
    ).first()
    if inserted is None:  # the same key won a race a moment ago: its booking, now committed
        winner = await uow.session.execute(
            select(bookings).where(bookings.c.idempotency_key == data.idempotency_key)
        )
        return idempotency.replay(winner.one(), request_fingerprint), True
    raise_event(uow, BOOKING_CREATED, inserted)
    return inserted, False


def raise_event(
    uow: UnitOfWork,
    event: BookingEvent,
    row: Record,
    *,
    worker_ids: list[str] | None = None,
    reason: str = "",
) -> None:
    uow.add_event(
        event,
        events_pb2.BookingChanged(
            org_id=str(row.org_id),
            booking_id=str(row.id),
            status=row.status,
            starts_at=to_ts(row.starts_at),
            ends_at=to_ts(row.ends_at),
            client_email=row.client_email,
            team_id=str(row.team_id or ""),
            worker_ids=worker_ids or [],
            reason=reason,
            created_at=to_ts(row.created_at),
        ),
    )


async def get(uow: UnitOfWork, booking_id: str, *, for_update: bool = False) -> Record:
    query = select(bookings).where(bookings.c.id == parse_id(booking_id, "booking_id"))
    if for_update:
        query = query.with_for_update()
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound("booking not found")
    return row


def _assigned_worker_ids() -> Any:
    """The workers assigned to the booking of the enclosing statement, as one array column. The
    subquery runs under schedule_blocks' own row-level security, like every other read of them."""
    return (
        select(func.array_agg(schedule_blocks.c.worker_id))
        .where(schedule_blocks.c.booking_id == bookings.c.id, schedule_blocks.c.worker_id.is_not(None))
        .scalar_subquery()
        .label("assigned_worker_ids")
    )


def assigned_worker_ids(row: Record) -> list[str]:
    """The worker ids a row read with `get_with_worker_ids` or changed by a transition carries."""
    return [str(worker) for worker in row.assigned_worker_ids or ()]


async def get_with_worker_ids(uow: UnitOfWork, booking_id: str) -> tuple[Record, list[str]]:
    """One booking and the workers assigned to it, in one statement (a read by id is the hot path:
    one round trip fewer than `get` and `worker_ids_of`)."""
    query = select(bookings, _assigned_worker_ids()).where(
        bookings.c.id == parse_id(booking_id, "booking_id")
    )
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound("booking not found")
    return row, assigned_worker_ids(row)


async def _update_returning(uow: UnitOfWork, booking_id: uuid.UUID, values: dict[str, Any]) -> Record:
    """Update a booking this transaction holds locked and return it as updated, with its assigned
    workers, from the UPDATE itself: two round trips fewer than re-reading it and its workers."""
    statement = (
        update(bookings)
        .where(bookings.c.id == booking_id)
        .values(**values)
        .returning(*bookings.c, _assigned_worker_ids())
    )
    return (await uow.session.execute(statement)).one()


async def worker_ids_of(uow: UnitOfWork, booking_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    if not booking_ids:
        return {}
    rows = (
        await uow.session.execute(
            select(schedule_blocks.c.booking_id, schedule_blocks.c.worker_id).where(
                schedule_blocks.c.booking_id.in_(booking_ids), schedule_blocks.c.worker_id.is_not(None)
            )
        )
    ).all()
    found: dict[uuid.UUID, list[str]] = {}
    for booking_id, worker_id in rows:
        found.setdefault(booking_id, []).append(str(worker_id))
    return found


async def list_bookings(
    uow: UnitOfWork,
    *,
    status: str = "",
    from_time: datetime | None = None,
    to_time: datetime | None = None,
    client_email: str = "",
    worker_id: str = "",
    updated_since: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Record], int]:
    """By start time; with `updated_since`, those changed at or after it, oldest change first (an
    index range on (org_id, updated_at, id): a sync reads what changed since its last pass)."""
    query = select(bookings)
    if updated_since is not None:
        query = query.where(bookings.c.org_id == uow.org_id, bookings.c.updated_at >= updated_since)
    if status:
        if status not in BOOKING_STATUSES:
            raise invalid("status", "must be pending, confirmed, in_progress, completed or cancelled")
        query = query.where(bookings.c.status == status)
    if from_time:
        query = query.where(bookings.c.ends_at > from_time)
    if to_time:
        query = query.where(bookings.c.starts_at < to_time)
    if client_email:
        query = query.where(func.lower(bookings.c.client_email) == client_email.lower())
    if worker_id:
        assigned = select(schedule_blocks.c.booking_id).where(
            schedule_blocks.c.worker_id == parse_id(worker_id, "worker_id")
        )
        query = query.where(bookings.c.id.in_(assigned))
    total = await uow.session.scalar(select(func.count()).select_from(query.subquery()))
    order = (
        (bookings.c.updated_at, bookings.c.id)
        if updated_since is not None
        else (bookings.c.starts_at, bookings.c.id)
    )
    rows = (await uow.session.execute(query.order_by(*order).limit(limit).offset(offset))).all()
    return list(rows), int(total or 0)


async def transition(
    uow: UnitOfWork, booking_id: str, action: str, *, reason: str = ""
) -> tuple[Record, str]:
    """Returns (booking, nps token if the action completed it)."""
    if action == "deposit_paid":
        return await _deposit_paid(uow, booking_id), ""
    if action not in TRANSITIONS:
        raise invalid("action", "must be confirm, start, complete, cancel or deposit_paid")
    allowed_from, target, event = TRANSITIONS[action]
    row = await get(uow, booking_id, for_update=True)
    if row.status not in allowed_from:
        raise FailedPrecondition(f"cannot {action} a booking that is {row.status}", code="invalid_transition")
    if action == "confirm" and row.deposit_required and not row.deposit_paid:
        raise FailedPrecondition("this booking waits for its deposit", code="deposit_required")
    if action == "cancel" and len(reason) > 500:
        raise invalid("reason", "must be at most 500 characters")
    values: dict[str, Any] = {"status": target, "updated_at": func.now()}
    if action == "cancel":
        values["cancel_reason"] = reason.strip()
        # A cancelled job frees its team and workers at once.
        await uow.session.execute(delete(schedule_blocks).where(schedule_blocks.c.booking_id == row.id))
    updated = await _update_returning(uow, row.id, values)
    raise_event(uow, event, updated, reason=reason)
    token = await nps.create_survey(uow, updated.id) if action == "complete" else ""
    return updated, token


async def _deposit_paid(uow: UnitOfWork, booking_id: str) -> Record:
    row = await get(uow, booking_id, for_update=True)
    values: dict[str, Any] = {"deposit_paid": True, "updated_at": func.now()}
    confirm = row.status == "pending"
    if confirm:
        values["status"] = "confirmed"
    updated = await _update_returning(uow, row.id, values)
    if confirm:
        raise_event(uow, BOOKING_CONFIRMED, updated, reason="deposit_paid")
    return updated


async def reschedule(uow: UnitOfWork, booking_id: str, starts_at: datetime, duration_minutes: int) -> Record:
    row = await get(uow, booking_id, for_update=True)
    if row.status not in ("pending", "confirmed"):
        raise FailedPrecondition(
            f"cannot reschedule a booking that is {row.status}", code="invalid_transition"
        )
    problems: list[FieldViolation] = []
    ends_at = check_window(starts_at, duration_minutes, problems)
    if problems:
        raise InvalidArgument.of(problems)
    if row.team_id is not None:
        await resources.refuse_external_busy(
            uow,
            row.team_id,
            resources.Window(starts_at, ends_at),
            "cannot reschedule",
        )
    try:
        async with uow.session.begin_nested():
            await uow.session.execute(
                update(schedule_blocks)
                .where(schedule_blocks.c.booking_id == row.id)
                .values(period=Range(starts_at, ends_at, bounds="[)"))
            )
            await uow.session.execute(
                update(bookings)
                .where(bookings.c.id == row.id)
                .values(starts_at=starts_at, ends_at=ends_at, updated_at=func.now())
            )
    except IntegrityError as exc:
        raise Conflict(
            "the new time overlaps another job or a blackout of the assigned team or workers",
            code="schedule_conflict",
        ) from exc
    updated = await get(uow, booking_id)
    raise_event(uow, BOOKING_RESCHEDULED, updated)
    return updated


async def cleanup_pending(uow: UnitOfWork, older_than_hours: int) -> int:
    cutoff = datetime.now(UTC) - timedelta(hours=older_than_hours)
    deleted = (
        await uow.session.execute(
            delete(bookings)
            .where(
                bookings.c.status == "pending",
                bookings.c.created_at < cutoff,
                bookings.c.deposit_paid.is_(False),
            )
            .returning(*bookings.c)
        )
    ).all()
    # Billing's usage counters count each booking created; this takes the abandoned ones off again.
    for row in deleted:
        raise_event(uow, BOOKING_DELETED, row, reason="pending_expired")
    return len(deleted)


async def list_upcoming(
    uow: UnitOfWork,
    start: datetime,
    end: datetime,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[Record]:
    """Confirmed bookings starting in [start, end), in start order, keyset-paged: reminders and digests."""
    query = (
        select(
            bookings.c.id,
            bookings.c.starts_at,
            bookings.c.ends_at,
            bookings.c.client_name,
            bookings.c.client_email,
            bookings.c.address,
        )
        .where(bookings.c.status == "confirmed", bookings.c.starts_at >= start, bookings.c.starts_at < end)
        .order_by(bookings.c.starts_at, bookings.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(bookings.c.starts_at, bookings.c.id) > tuple_(*after))
    return list((await uow.session.execute(query)).all())
