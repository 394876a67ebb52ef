"""Scheduling: assigning a booking to a team and workers, suggestions and conflict checks for a
window (seed 002, "Scheduling v2"), and the queue of unassigned bookings.

The database decides double-booking: an assignment writes one schedule block per team and worker,
and the exclusion constraints refuse any overlap, so of two concurrent assignments of one team to
one slot exactly one commits. Suggestions and conflicts only read the same blocks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    String,
    Table,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, PermissionDenied, invalid
from services.booking import bookings as booking_rows
from services.booking import resources
from services.booking.bookings import MAX_DURATION_MINUTES
from services.booking.events import BOOKING_ASSIGNED
from services.booking.models import Record, bookings, schedule_blocks, teams, workers
from services.booking.resources import Window, overlapping

ASSIGNABLE = ("pending", "confirmed", "in_progress")
QUEUED = ("pending", "confirmed")
MAX_WORKERS_PER_BOOKING = 20
MAX_SKILL_TAGS = 10
MAX_TAG_LENGTH = 50
MAX_CONFLICTS = 500
DEFAULT_QUEUE_DAYS = 7
MAX_QUEUE_DAYS = 30
URGENT_WITHIN = timedelta(hours=24)


# --- assignment -------------------------------------------------------------------------------


def _worker_uuids(worker_ids: list[str]) -> list[uuid.UUID]:
    if len(worker_ids) > MAX_WORKERS_PER_BOOKING:
        raise invalid("worker_ids", f"at most {MAX_WORKERS_PER_BOOKING} workers per booking")
    found: list[uuid.UUID] = []
    for position, value in enumerate(worker_ids):
        worker_id = parse_id(value, f"worker_ids.{position}")
        if worker_id not in found:
            found.append(worker_id)
    # One order for every transaction: two assignments sharing workers then wait on each other in
    # the same order, never crosswise.
    return sorted(found)


async def assign(
    uow: UnitOfWork, booking_id: str, team_id: str, worker_ids: list[str]
) -> tuple[Record, list[str]]:
    """Assign a booking to a team and/or workers, replacing its previous assignment.

    Returns the booking and its worker ids. Raises Conflict(schedule_conflict) when the team or a
    worker is already booked or blacked out in the booking's period."""
    member_ids = _worker_uuids(worker_ids)
    if not team_id and not member_ids:
        raise invalid("team_id", "give a team_id or at least one worker id")
    row = await booking_rows.get(uow, booking_id, for_update=True)
    if row.status not in ASSIGNABLE:
        raise FailedPrecondition(f"cannot assign a booking that is {row.status}", code="invalid_transition")
    team = await resources.get_team(uow, team_id) if team_id else None
    members = await resources.get_workers(uow, member_ids)
    if team is not None and not team.active:
        raise FailedPrecondition("the team is inactive", code="inactive")
    if any(not member.active for member in members):
        raise FailedPrecondition("a worker is inactive", code="inactive")

    if team is not None:
        await resources.refuse_external_busy(
            uow, team.id, Window(row.starts_at, row.ends_at), "cannot assign"
        )
    period = Range(row.starts_at, row.ends_at, bounds="[)")
    blocks = [{"team_id": team.id, "worker_id": None}] if team is not None else []
    blocks += [{"team_id": None, "worker_id": member.id} for member in members]
    async with resources.schedule_guard(uow, "cannot assign"):
        await uow.session.execute(delete(schedule_blocks).where(schedule_blocks.c.booking_id == row.id))
        await uow.session.execute(
            pg_insert(schedule_blocks),
            [
                {
                    "id": uuid.uuid4(),
                    "org_id": uow.org_id,
                    "kind": "booking",
                    "booking_id": row.id,
                    "period": period,
                    **block,
                }
                for block in blocks
            ],
        )
        await uow.session.execute(
            update(bookings)
            .where(bookings.c.id == row.id)
            .values(team_id=team.id if team is not None else None, updated_at=func.now())
        )
    updated = await booking_rows.get(uow, booking_id)
    assigned = [str(member.id) for member in members]
    booking_rows.raise_event(uow, BOOKING_ASSIGNED, updated, worker_ids=assigned)
    return updated, assigned


# --- suggestions and conflicts ----------------------------------------------------------------


async def _must_own(uow: UnitOfWork, table: Table, value: str, field: str) -> uuid.UUID:
    """Seed 002 answers 403 to another org's ids here. Under RLS they are simply not found, so an
    unknown id and a foreign one look alike, and both are refused the same way."""
    found = await uow.session.scalar(select(table.c.id).where(table.c.id == parse_id(value, field)))
    if found is None:
        raise PermissionDenied(f"{field} is not one of your organisation's", code="cross_org_or_unknown")
    return found  # type: ignore[no-any-return]


def _clean_tags(skill_tags: list[str]) -> list[str]:
    tags = [tag.strip() for tag in skill_tags if tag.strip()]
    problems: list[FieldViolation] = []
    if len(tags) > MAX_SKILL_TAGS:
        problems.append(FieldViolation("skill_tags", f"at most {MAX_SKILL_TAGS} tags"))
    if any(len(tag) > MAX_TAG_LENGTH for tag in tags):
        problems.append(FieldViolation("skill_tags", f"each tag at most {MAX_TAG_LENGTH} characters"))
    resources.raise_problems(problems)
    return tags


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_BLOCK_COLUMNS = (
    schedule_blocks.c.id,
    schedule_blocks.c.kind,
    schedule_blocks.c.booking_id,
    schedule_blocks.c.team_id,
    schedule_blocks.c.worker_id,
    schedule_blocks.c.starts_at,
    schedule_blocks.c.ends_at,
    schedule_blocks.c.reason,
)


def _in_window(window: Window, *where: ColumnElement[bool]) -> CompoundSelect[Any]:
    """The blocks matching `where` that overlap the window: one index range scan per span class."""
    return union_all(*(select(*_BLOCK_COLUMNS).where(*where, span) for span in overlapping(window)))


def _blocks_in_window(
    uow: UnitOfWork, window: Window, ignore_booking: uuid.UUID | None
) -> CompoundSelect[Any]:
    """The org's schedule blocks overlapping the window, minus the booking being planned: index
    ranges on (org_id, long_span, starts_at)."""
    where: list[ColumnElement[bool]] = [schedule_blocks.c.org_id == uow.org_id]
    if ignore_booking is not None:
        where.append(
            or_(schedule_blocks.c.booking_id.is_(None), schedule_blocks.c.booking_id != ignore_booking)
        )
    return _in_window(window, *where)


@dataclass(frozen=True)
class Suggestions:
    teams: list[Record]
    workers: list[Record]
    # Free teams and workers in all, over every page.
    total: int = 0


async def suggestions(
    uow: UnitOfWork,
    window: Window,
    *,
    skill_tags: list[str],
    booking_id: str = "",
    limit: int | None = None,
    offset: int = 0,
) -> Suggestions:
    """Active teams free for the whole window, and active workers free themselves whose team (if
    any) is free too, whose role text contains every skill tag. One set-based query, whatever the
    number of workers or bookings.

    One page of them: teams first, then workers, each by name (then id), `limit` rows (teams and
    workers together, all of them when None) from `offset`, with the number of them all."""
    tags = _clean_tags(skill_tags)
    ignore = await _must_own(uow, bookings, booking_id, "booking_id") if booking_id else None
    busy = _blocks_in_window(uow, window, ignore).cte("busy")
    # NOT IN over a subquery runs as a hashed subplan however few rows the planner expects, where
    # NOT EXISTS would probe the busy set once per worker.
    busy_teams = select(busy.c.team_id).where(busy.c.team_id.is_not(None))
    busy_workers = select(busy.c.worker_id).where(busy.c.worker_id.is_not(None))
    free_teams = select(
        literal("team").label("kind"),
        cast(teams.c.id, String).label("id"),
        teams.c.name,
        literal("").label("email"),
        literal("").label("phone"),
        literal("").label("role"),
        literal("").label("team_id"),
        teams.c.active,
    ).where(teams.c.org_id == uow.org_id, teams.c.active, teams.c.id.not_in(busy_teams))
    free_workers = select(
        literal("worker").label("kind"),
        cast(workers.c.id, String).label("id"),
        workers.c.name,
        workers.c.email,
        workers.c.phone,
        workers.c.role,
        func.coalesce(cast(workers.c.team_id, String), "").label("team_id"),
        workers.c.active,
    ).where(
        workers.c.org_id == uow.org_id,
        workers.c.active,
        workers.c.id.not_in(busy_workers),
        or_(workers.c.team_id.is_(None), workers.c.team_id.not_in(busy_teams)),
        *[workers.c.role.ilike(f"%{_like_escape(tag)}%", escape="\\") for tag in tags],
    )
    # Ids come back as text: with a thousand free workers, skipping the UUID round trip (to
    # uuid.UUID and back to str for the proto) is a third of the time spent in Python.
    free = union_all(free_teams, free_workers).subquery("free")
    query = (
        select(free, func.count().over().label("total"))
        .order_by(free.c.kind, func.lower(free.c.name), free.c.id)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = (await uow.session.execute(query)).all()
    if rows:
        total = int(rows[0].total)
    elif offset:
        # Past the end: the window count of an empty page is not there, count them instead.
        total = int(await uow.session.scalar(select(func.count()).select_from(free)) or 0)
    else:
        total = 0
    return Suggestions(
        teams=[row for row in rows if row.kind == "team"],
        workers=[row for row in rows if row.kind == "worker"],
        total=total,
    )


@dataclass(frozen=True)
class ScheduleConflict:
    # booking | blackout (of a team), worker_booking | worker_blackout (of a worker)
    kind: str
    # The booking for booking kinds, the blackout for blackout kinds.
    reference_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    team_id: uuid.UUID | None
    worker_id: uuid.UUID | None
    note: str


def _kind(block: Record) -> str:
    prefix = "worker_" if block.worker_id is not None else ""
    return prefix + block.kind


async def conflicts(
    uow: UnitOfWork, window: Window, *, team_id: str = "", booking_id: str = "", worker_id: str = ""
) -> list[ScheduleConflict]:
    """What blocks the window for the given team and/or worker: their assigned bookings and
    blackouts, leaving out the booking being planned. With booking_id alone, the subjects are that
    booking's own team and workers (would it still fit if moved here?). With none at all, every
    team's and worker's blocks in the window (at most 500)."""
    team = await _must_own(uow, teams, team_id, "team_id") if team_id else None
    worker = await _must_own(uow, workers, worker_id, "worker_id") if worker_id else None
    ignore = await _must_own(uow, bookings, booking_id, "booking_id") if booking_id else None

    subjects: list[ColumnElement[bool]] = []
    if team is not None:
        subjects.append(schedule_blocks.c.team_id == team)
    if worker is not None:
        subjects.append(schedule_blocks.c.worker_id == worker)
    if not subjects and ignore is not None:
        own = select(schedule_blocks.c.team_id, schedule_blocks.c.worker_id).where(
            schedule_blocks.c.booking_id == ignore
        )
        own_rows = (await uow.session.execute(own)).all()
        own_teams = [r.team_id for r in own_rows if r.team_id is not None]
        own_workers = [r.worker_id for r in own_rows if r.worker_id is not None]
        if not own_teams and not own_workers:
            return []  # an unassigned booking conflicts with nobody
        subjects.append(schedule_blocks.c.team_id.in_(own_teams))
        subjects.append(schedule_blocks.c.worker_id.in_(own_workers))

    if subjects:
        # One team's or worker's blocks: index ranges on (org_id, team_id | worker_id, long_span,
        # starts_at), one per subject (a BitmapOr).
        where: list[ColumnElement[bool]] = [schedule_blocks.c.org_id == uow.org_id, or_(*subjects)]
        if ignore is not None:
            where.append(or_(schedule_blocks.c.booking_id.is_(None), schedule_blocks.c.booking_id != ignore))
        blocks = _in_window(window, *where).subquery("blocks")
    else:
        blocks = _blocks_in_window(uow, window, ignore).subquery("blocks")
    query = (
        select(blocks, bookings.c.status)
        .select_from(blocks.outerjoin(bookings, bookings.c.id == blocks.c.booking_id))
        # Team blocks before worker blocks at the same start, then by id: a stable order.
        .order_by(blocks.c.starts_at, blocks.c.worker_id.is_not(None), blocks.c.id)
        .limit(MAX_CONFLICTS)
    )
    rows = (await uow.session.execute(query)).all()
    return [
        ScheduleConflict(
            kind=_kind(row),
            reference_id=row.booking_id if row.kind == "booking" else row.id,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            team_id=row.team_id,
            worker_id=row.worker_id,
            note=f"assigned to a {row.status} booking"
            if row.kind == "booking"
            else (row.reason or "blackout"),
        )
        for row in rows
    ]


# --- assignment queue -------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    booking: Record
    urgent: bool


def queue_days(days: int) -> int:
    """0 (not given) means the default; otherwise 1 to 30 (seed 002)."""
    if days == 0:
        return DEFAULT_QUEUE_DAYS
    if not 1 <= days <= MAX_QUEUE_DAYS:
        raise InvalidArgument.of([FieldViolation("days", f"must be between 1 and {MAX_QUEUE_DAYS}")])
    return days


async def assignment_queue(
    uow: UnitOfWork, *, days: int, limit: int, offset: int, now: datetime | None = None
) -> tuple[list[QueueEntry], int]:
    """Pending or confirmed bookings without a team that start within the next `days` days,
    soonest first; one that has already started and is still unassigned stays on the list. Urgent
    when it starts within 24 hours."""
    now = now or datetime.now(UTC)
    query = select(bookings).where(
        bookings.c.org_id == uow.org_id,
        bookings.c.status.in_(QUEUED),
        bookings.c.team_id.is_(None),
        bookings.c.starts_at < now + timedelta(days=queue_days(days)),
        # Implied by ends_at > now (a booking lasts at most a day); it bounds the index range.
        bookings.c.starts_at > now - timedelta(minutes=MAX_DURATION_MINUTES),
        bookings.c.ends_at > now,
    )
    total = await uow.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = (
        await uow.session.execute(
            query.order_by(bookings.c.starts_at, bookings.c.id).limit(limit).offset(offset)
        )
    ).all()
    return [QueueEntry(row, row.starts_at < now + URGENT_WITHIN) for row in rows], int(total or 0)
