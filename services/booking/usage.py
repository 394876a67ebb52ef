"""What billing's usage report checks its recorded counters against (CountUsage): the org's active
workers now, and the bookings it created in a period. Both are counts of booking's own rows, read in
the org of the unit of work (RLS), each by an index: workers by ix_workers_org_team (org_id first),
bookings by ix_bookings_org_created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from libs.common.db import UnitOfWork
from services.booking.models import bookings, workers


@dataclass(frozen=True)
class UsageCounts:
    active_workers: int
    bookings_created: int


async def count_usage(uow: UnitOfWork, start: datetime, end: datetime) -> UsageCounts:
    """Active workers now; bookings whose created_at is in [start, end)."""
    active = await uow.session.scalar(
        select(func.count())
        .select_from(workers)
        .where(workers.c.org_id == uow.org_id, workers.c.active.is_(True))
    )
    created = await uow.session.scalar(
        select(func.count())
        .select_from(bookings)
        .where(bookings.c.org_id == uow.org_id, bookings.c.created_at >= start, bookings.c.created_at < end)
    )
    return UsageCounts(active_workers=int(active or 0), bookings_created=int(created or 0))
