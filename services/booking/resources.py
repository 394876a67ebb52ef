"""Teams, workers and blackouts: who can be scheduled, and when they cannot.

Occupancy is the `schedule_blocks` table; a blackout is a row of kind 'blackout' for one team or one
worker. The exclusion constraints refuse any overlap for the same team or worker, so writes to it go
through `schedule_guard`, which turns that refusal into a 409 instead of a failed transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cws.booking.v1 import events_pb2 as booking_events
from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    delete,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

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
from services.booking import contacts, entitlements
from services.booking.events import BOOKING_WORKER_ADDED, BOOKING_WORKER_DEACTIVATED
from services.booking.models import Record, schedule_blocks, teams, workers
from services.booking.settings import BookingSettings

MAX_NAME = 200
MAX_ROLE = 200
MAX_REASON = 500
MAX_BLACKOUT_DAYS = 366

EXCLUSION_VIOLATION = "23P01"
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
DEADLOCK_DETECTED = "40P01"


# --- shared by scheduling ---------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A half-open period [starts_at, ends_at), as the schedule blocks store it."""

    starts_at: datetime
    ends_at: datetime

    def as_range(self) -> Range[datetime]:
        return Range(self.starts_at, self.ends_at, bounds="[)")


# Windows are compared with bookings that started up to a day earlier: a date near year 1 would
# overflow there (found by the fuzzer as a 502). Nothing in the suite predates 1970.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


# A block that is not `long_span` lasts at most this long, so it starts less than this before any
# window it overlaps.
SHORT_SPAN = timedelta(hours=24)


def overlapping(window: Window) -> list[ColumnElement[bool]]:
    """Blocks overlapping the window, as two alternatives of plain comparisons on the stored
    columns (one query each, see scheduling._in_window, or one OR).

    Under row-level security Postgres only lets a LEAKPROOF operator drive an index, and the range
    overlap `&&` is not one; timestamptz and boolean comparisons are. Short blocks (24 hours at
    most: every booking, most blackouts) are an index range on starts_at bounded on both sides;
    long ones (multi-day blackouts, few) need no lower bound."""
    overlap = (schedule_blocks.c.starts_at < window.ends_at, schedule_blocks.c.ends_at > window.starts_at)
    return [
        and_(
            schedule_blocks.c.long_span == false(),
            schedule_blocks.c.starts_at > window.starts_at - SHORT_SPAN,
            *overlap,
        ),
        and_(schedule_blocks.c.long_span == true(), *overlap),
    ]


def check_window(starts_at: datetime, ends_at: datetime, *, max_days: int) -> Window:
    if starts_at < EARLIEST:
        raise InvalidArgument(
            "starts_at must not be before 1970",
            code="invalid_window",
            violations=[FieldViolation("starts_at", "must not be before 1970-01-01")],
        )
    if ends_at <= starts_at:
        raise InvalidArgument(
            "ends_at must be after starts_at",
            code="invalid_window",
            violations=[FieldViolation("ends_at", "must be after starts_at")],
        )
    if ends_at - starts_at > timedelta(days=max_days):
        raise InvalidArgument(
            f"the window may span at most {max_days} days",
            code="invalid_window",
            violations=[FieldViolation("ends_at", f"must be at most {max_days} days after starts_at")],
        )
    return Window(starts_at, ends_at)


def raise_problems(problems: list[FieldViolation]) -> None:
    if problems:
        raise InvalidArgument.of(problems)


def _sqlstate(error: DBAPIError) -> str:
    return str(getattr(error.orig, "sqlstate", "") or "")


def _constraint(error: DBAPIError) -> str:
    diag = getattr(error.orig, "diag", None)
    return str(getattr(diag, "constraint_name", "") or "")


@asynccontextmanager
async def schedule_guard(uow: UnitOfWork, what: str) -> AsyncIterator[None]:
    """Writes to schedule_blocks inside a SAVEPOINT. When the database refuses an overlap (or picks
    this transaction as a deadlock victim while two assignments wait on each other), only the
    savepoint rolls back and the caller gets a Conflict it can answer as 409."""
    try:
        async with uow.session.begin_nested():
            yield
    except DBAPIError as exc:
        state = _sqlstate(exc)
        if state == EXCLUSION_VIOLATION:
            subject = "a worker" if "worker" in _constraint(exc) else "the team"
            raise Conflict(
                f"{what}: {subject} is already booked or blacked out in this window",
                code="schedule_conflict",
            ) from exc
        if state == DEADLOCK_DETECTED:
            raise Conflict(f"{what}: a concurrent change got there first", code="schedule_conflict") from exc
        if state == FOREIGN_KEY_VIOLATION:
            raise NotFound("the team or worker no longer exists") from exc
        raise


async def _owned(uow: UnitOfWork, table: Table, value: str, field: str, noun: str) -> Record:
    """One row of this org (RLS hides every other org's rows, so theirs are simply not found)."""
    row = (await uow.session.execute(select(table).where(table.c.id == parse_id(value, field)))).first()
    if row is None:
        raise NotFound(f"{noun} not found", code=f"{noun}_not_found")
    return row


async def get_team(uow: UnitOfWork, team_id: str, field: str = "team_id") -> Record:
    return await _owned(uow, teams, team_id, field, "team")


async def get_worker(uow: UnitOfWork, worker_id: str, field: str = "worker_id") -> Record:
    return await _owned(uow, workers, worker_id, field, "worker")


async def get_workers(uow: UnitOfWork, worker_ids: list[uuid.UUID]) -> list[Record]:
    """All of them, in the order given, or NotFound naming the first that is not this org's."""
    if not worker_ids:
        return []
    rows = {
        row.id: row
        for row in (await uow.session.execute(select(workers).where(workers.c.id.in_(worker_ids)))).all()
    }
    for worker_id in worker_ids:
        if worker_id not in rows:
            raise NotFound(f"worker {worker_id} not found", code="worker_not_found")
    return [rows[worker_id] for worker_id in worker_ids]


async def _refuse_if_assigned(
    uow: UnitOfWork, column: ColumnElement[Any], subject_id: uuid.UUID, noun: str
) -> None:
    """Deleting a team or worker would silently unassign their upcoming jobs: say so instead."""
    upcoming = await uow.session.scalar(
        select(
            exists().where(
                schedule_blocks.c.org_id == uow.org_id,
                column == subject_id,
                schedule_blocks.c.kind == "booking",
                schedule_blocks.c.ends_at > func.now(),
            )
        )
    )
    if upcoming:
        raise FailedPrecondition(
            f"this {noun} has upcoming assignments; reassign them first", code="has_upcoming_assignments"
        )


# --- teams ------------------------------------------------------------------------------------


async def create_team(uow: UnitOfWork, name: str) -> Record:
    problems: list[FieldViolation] = []
    name = contacts.text(name, "name", problems, max_length=MAX_NAME, required=True)
    raise_problems(problems)
    team_id = await uow.session.scalar(
        pg_insert(teams)
        .values(id=uuid.uuid4(), org_id=uow.org_id, name=name)
        .on_conflict_do_nothing()
        .returning(teams.c.id)
    )
    if team_id is None:
        raise Conflict("a team with this name already exists", code="team_exists")
    return await get_team(uow, str(team_id))


async def list_teams(uow: UnitOfWork) -> list[Record]:
    query = select(teams).where(teams.c.org_id == uow.org_id).order_by(func.lower(teams.c.name), teams.c.id)
    return list((await uow.session.execute(query)).all())


async def delete_team(uow: UnitOfWork, team_id: str) -> None:
    team = await _owned_for_update(uow, teams, team_id, "team_id", "team")
    await _refuse_if_assigned(uow, schedule_blocks.c.team_id, team.id, "team")
    # Its blackouts and past blocks go with it (ON DELETE CASCADE); members stay, without a team.
    await uow.session.execute(delete(teams).where(teams.c.id == team.id))


async def update_team(uow: UnitOfWork, team_id: str, *, name: str | None, active: bool | None) -> Record:
    """Only the fields given change; a name another team of the org has (any case) is a 409."""
    problems: list[FieldViolation] = []
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = contacts.text(name, "name", problems, max_length=MAX_NAME, required=True)
    if active is not None:
        values["active"] = active
    raise_problems(problems)
    team = await _owned_for_update(uow, teams, team_id, "team_id", "team")
    if values:
        try:
            async with uow.session.begin_nested():
                await uow.session.execute(update(teams).where(teams.c.id == team.id).values(**values))
        except DBAPIError as exc:
            if _sqlstate(exc) == UNIQUE_VIOLATION:
                raise Conflict("a team with this name already exists", code="team_exists") from exc
            raise
    return await get_team(uow, str(team.id))


async def _owned_for_update(uow: UnitOfWork, table: Table, value: str, field: str, noun: str) -> Record:
    query = select(table).where(table.c.id == parse_id(value, field)).with_for_update()
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound(f"{noun} not found", code=f"{noun}_not_found")
    return row


# --- workers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInput:
    name: str
    email: str = ""
    phone: str = ""
    # Free text, e.g. "deep clean, windows, supervisor": suggestions match skill tags against it.
    role: str = ""
    team_id: str = ""


async def create_worker(uow: UnitOfWork, settings: BookingSettings, data: WorkerInput) -> Record:
    problems: list[FieldViolation] = []
    name = contacts.text(data.name, "name", problems, max_length=MAX_NAME, required=True)
    email = contacts.email(data.email, "email", problems, required=False)
    phone = contacts.phone(data.phone, "phone", problems, settings.phone_region, required=False)
    role = contacts.text(data.role, "role", problems, max_length=MAX_ROLE)
    team_uuid = None
    if data.team_id:
        try:
            team_uuid = parse_id(data.team_id, "team_id")
        except InvalidArgument as error:
            problems.extend(error.violations)
    raise_problems(problems)
    await entitlements.require_active(uow, "workers")
    if team_uuid is not None:
        await get_team(uow, str(team_uuid))
    worker_id = uuid.uuid4()
    await uow.session.execute(
        pg_insert(workers).values(
            id=worker_id, org_id=uow.org_id, team_id=team_uuid, name=name, email=email, phone=phone, role=role
        )
    )
    _worker_added(uow, worker_id, "created")
    return await get_worker(uow, str(worker_id))


@dataclass(frozen=True)
class WorkerChanges:
    """A partial update: None leaves a field as it is; team_id "" detaches the worker."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    role: str | None = None
    team_id: str | None = None
    active: bool | None = None


async def update_worker(
    uow: UnitOfWork, settings: BookingSettings, worker_id: str, changes: WorkerChanges
) -> Record:
    problems: list[FieldViolation] = []
    values: dict[str, Any] = {}
    if changes.name is not None:
        values["name"] = contacts.text(changes.name, "name", problems, max_length=MAX_NAME, required=True)
    if changes.email is not None:
        values["email"] = contacts.email(changes.email, "email", problems, required=False)
    if changes.phone is not None:
        values["phone"] = contacts.phone(
            changes.phone, "phone", problems, settings.phone_region, required=False
        )
    if changes.role is not None:
        values["role"] = contacts.text(changes.role, "role", problems, max_length=MAX_ROLE)
    if changes.team_id is not None:
        values["team_id"] = None
        if changes.team_id:
            try:
                values["team_id"] = parse_id(changes.team_id, "team_id")
            except InvalidArgument as error:
                problems.extend(error.violations)
    if changes.active is not None:
        values["active"] = changes.active
    raise_problems(problems)
    worker = await _owned_for_update(uow, workers, worker_id, "worker_id", "worker")
    if not worker.active and values.get("active") is True:
        # Reactivating adds an active worker as creating one does; other edits of workers go on.
        await entitlements.require_active(uow, "workers")
    if values.get("team_id") is not None:
        await get_team(uow, str(values["team_id"]))
    if values:
        await uow.session.execute(update(workers).where(workers.c.id == worker.id).values(**values))
    if worker.active and values.get("active") is False:
        _worker_left(uow, worker.id, "deactivated", was_active=True)
    if not worker.active and values.get("active") is True:
        _worker_added(uow, worker.id, "reactivated")
    return await get_worker(uow, str(worker.id))


def _worker_added(uow: UnitOfWork, worker_id: uuid.UUID, reason: str) -> None:
    """Billing counts one more active worker when it hears this (its usage counters)."""
    uow.add_event(
        BOOKING_WORKER_ADDED,
        booking_events.WorkerAdded(
            org_id=str(uow.org_id),
            worker_id=str(worker_id),
            reason=reason,
            occurred_at=to_ts(datetime.now(UTC)),
        ),
    )


def _worker_left(uow: UnitOfWork, worker_id: uuid.UUID, reason: str, *, was_active: bool) -> None:
    """IAM ends the worker's portal sessions and unused links when it hears this (issue 9, hole 8);
    billing counts one active worker less, but only if `was_active` (deleting a deactivated worker
    says so again, and must not take them off the count twice)."""
    uow.add_event(
        BOOKING_WORKER_DEACTIVATED,
        booking_events.WorkerDeactivated(
            org_id=str(uow.org_id),
            worker_id=str(worker_id),
            reason=reason,
            occurred_at=to_ts(datetime.now(UTC)),
            was_active=was_active,
        ),
    )


async def list_workers(uow: UnitOfWork, team_id: str = "") -> list[Record]:
    query = select(workers).where(workers.c.org_id == uow.org_id)
    if team_id:
        team = await get_team(uow, team_id)
        query = query.where(workers.c.team_id == team.id)
    query = query.order_by(func.lower(workers.c.name), workers.c.id)
    return list((await uow.session.execute(query)).all())


async def delete_worker(uow: UnitOfWork, worker_id: str) -> None:
    worker = await _owned_for_update(uow, workers, worker_id, "worker_id", "worker")
    await _refuse_if_assigned(uow, schedule_blocks.c.worker_id, worker.id, "worker")
    await uow.session.execute(delete(workers).where(workers.c.id == worker.id))
    _worker_left(uow, worker.id, "deleted", was_active=worker.active)


# --- blackouts --------------------------------------------------------------------------------


async def create_blackout(
    uow: UnitOfWork, *, team_id: str, worker_id: str, starts_at: datetime, ends_at: datetime, reason: str
) -> Record:
    if bool(team_id) == bool(worker_id):
        raise InvalidArgument(
            "a blackout is for one team or one worker: give team_id or worker_id, not both",
            violations=[FieldViolation("team_id", "give exactly one of team_id and worker_id")],
        )
    window = check_window(starts_at, ends_at, max_days=MAX_BLACKOUT_DAYS)
    problems: list[FieldViolation] = []
    reason = contacts.text(reason, "reason", problems, max_length=MAX_REASON)
    raise_problems(problems)
    team = await get_team(uow, team_id) if team_id else None
    worker = await get_worker(uow, worker_id) if worker_id else None
    blackout_id = uuid.uuid4()
    async with schedule_guard(uow, "the blackout overlaps"):
        await uow.session.execute(
            pg_insert(schedule_blocks).values(
                id=blackout_id,
                org_id=uow.org_id,
                kind="blackout",
                team_id=team.id if team else None,
                worker_id=worker.id if worker else None,
                period=window.as_range(),
                reason=reason,
            )
        )
    return await get_blackout(uow, str(blackout_id))


async def get_blackout(uow: UnitOfWork, blackout_id: str) -> Record:
    query = select(schedule_blocks).where(
        schedule_blocks.c.id == parse_id(blackout_id, "blackout_id"), schedule_blocks.c.kind == "blackout"
    )
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound("blackout not found", code="blackout_not_found")
    return row


async def list_blackouts(
    uow: UnitOfWork, from_time: datetime | None = None, to_time: datetime | None = None
) -> list[Record]:
    if from_time and to_time and to_time <= from_time:
        raise invalid("to", "must be after from")
    # Blackouts are the blocks without a booking: the booking_id index finds them (IS NULL). The
    # window compares the stored bounds (leakproof, unlike the range operator `&&`).
    query = select(schedule_blocks).where(
        schedule_blocks.c.booking_id.is_(None),
        schedule_blocks.c.org_id == uow.org_id,
        schedule_blocks.c.kind == "blackout",
    )
    if to_time:
        query = query.where(schedule_blocks.c.starts_at < to_time)
    if from_time:
        query = query.where(schedule_blocks.c.ends_at > from_time)
    query = query.order_by(schedule_blocks.c.starts_at, schedule_blocks.c.id)
    return list((await uow.session.execute(query)).all())


async def delete_blackout(uow: UnitOfWork, blackout_id: str) -> None:
    deleted = await uow.session.scalar(
        delete(schedule_blocks)
        .where(
            schedule_blocks.c.id == parse_id(blackout_id, "blackout_id"),
            schedule_blocks.c.kind == "blackout",
        )
        .returning(schedule_blocks.c.id)
    )
    if deleted is None:
        raise NotFound("blackout not found", code="blackout_not_found")


# --- blackouts from an outside calendar -------------------------------------------------------

MAX_EXTERNAL_KEY = 500
MAX_EXTERNAL_KEYS = 1000


@dataclass(frozen=True)
class ExternalBlackout:
    row: Record
    created: bool
    # Created, or its period or reason moved.
    changed: bool


def _external_key(value: str, problems: list[FieldViolation], field: str = "external_key") -> str:
    key = value.strip()
    if not key:
        problems.append(FieldViolation(field, "is required"))
    elif len(key) > MAX_EXTERNAL_KEY:
        problems.append(FieldViolation(field, f"must be at most {MAX_EXTERNAL_KEY} characters"))
    return key


async def put_external_blackout(
    uow: UnitOfWork, *, external_key: str, team_id: str, starts_at: datetime, ends_at: datetime, reason: str
) -> ExternalBlackout:
    """The team's blackout named `external_key`, created or moved to this period and reason.

    One row per org, team and key (a unique index): a second call with the same key and period
    changes nothing, and two concurrent calls end with one row. Overlaps are allowed (these are
    outside the team exclusion constraint, migration 0010)."""
    problems: list[FieldViolation] = []
    key = _external_key(external_key, problems)
    if not team_id:
        problems.append(FieldViolation("team_id", "is required"))
    reason = contacts.text(reason, "reason", problems, max_length=MAX_REASON)
    raise_problems(problems)
    window = check_window(starts_at, ends_at, max_days=MAX_BLACKOUT_DAYS)
    team = await get_team(uow, team_id)
    insert = pg_insert(schedule_blocks).values(
        id=uuid.uuid4(),
        org_id=uow.org_id,
        kind="blackout",
        team_id=team.id,
        period=window.as_range(),
        reason=reason,
        external_key=key,
    )
    moved = insert.on_conflict_do_update(
        index_elements=[schedule_blocks.c.org_id, schedule_blocks.c.external_key, schedule_blocks.c.team_id],
        index_where=schedule_blocks.c.external_key.is_not(None),
        set_={"period": insert.excluded.period, "reason": insert.excluded.reason},
        # Unchanged: no write at all (no dead tuple per event per pass).
        where=or_(
            schedule_blocks.c.period != insert.excluded.period,
            schedule_blocks.c.reason != insert.excluded.reason,
        ),
    ).returning(schedule_blocks.c.id, _inserted().label("created"))
    try:
        written = (await uow.session.execute(moved)).first()
    except DBAPIError as exc:
        if _sqlstate(exc) == FOREIGN_KEY_VIOLATION:
            raise NotFound("team not found", code="team_not_found") from exc
        raise
    if written is not None:
        row = await get_blackout(uow, str(written.id))
        return ExternalBlackout(row, created=bool(written.created), changed=True)
    row = (
        await uow.session.execute(
            select(schedule_blocks).where(
                schedule_blocks.c.org_id == uow.org_id,
                schedule_blocks.c.external_key == key,
                schedule_blocks.c.team_id == team.id,
            )
        )
    ).one()
    return ExternalBlackout(row, created=False, changed=False)


def _inserted() -> ColumnElement[bool]:
    """True in RETURNING when the INSERT ... ON CONFLICT inserted the row (an update sets xmax)."""
    return literal_column("xmax") == literal_column("0")


async def delete_external_blackouts(uow: UnitOfWork, external_keys: list[str]) -> int:
    """Every blackout of this org named by one of the keys, of any team. Unknown keys are no error
    (a rerun deletes what is already gone)."""
    problems: list[FieldViolation] = []
    if len(external_keys) > MAX_EXTERNAL_KEYS:
        problems.append(FieldViolation("external_keys", f"at most {MAX_EXTERNAL_KEYS} keys per call"))
    keys = sorted(
        {_external_key(value, problems, f"external_keys.{i}") for i, value in enumerate(external_keys)}
    )
    raise_problems(problems)
    if not keys:
        return 0
    deleted = await uow.session.execute(
        delete(schedule_blocks)
        .where(
            schedule_blocks.c.org_id == uow.org_id,
            schedule_blocks.c.external_key.in_(keys),
        )
        .returning(schedule_blocks.c.id)
    )
    return len(deleted.all())


async def refuse_external_busy(uow: UnitOfWork, team_id: uuid.UUID, window: Window, what: str) -> None:
    """Blackouts from an outside calendar are outside the exclusion constraint (they may overlap
    each other): assigning or rescheduling a team into one is refused here instead, with the
    same 409 the constraint gives for any other blackout."""
    busy = await uow.session.scalar(
        select(schedule_blocks.c.reason)
        .where(
            schedule_blocks.c.org_id == uow.org_id,
            schedule_blocks.c.team_id == team_id,
            schedule_blocks.c.external_key.is_not(None),
            or_(*overlapping(window)),
        )
        .limit(1)
    )
    if busy is not None:
        raise Conflict(
            f"{what}: the team is blacked out in this window ({busy or 'busy'})", code="schedule_conflict"
        )
