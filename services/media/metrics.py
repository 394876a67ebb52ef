"""The photo figures media can state for an org's period (GetMetrics, issue 13). No gRPC here.

- photos_uploaded: photos stored in [from, to), deleted since or not (the upload happened);
- photos_approved / photos_needs_retake: photos whose latest review, made in [from, to), left them
  approved or needing a retake (a row keeps only its latest review).
Each is one indexed read in the org's unit of work (RLS)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from libs.common.db import Database, unit_of_work
from libs.common.errors import invalid
from services.media.models import PHOTO_STATUSES, order_photos

MAX_PERIOD = timedelta(days=366)
REVIEWED = ("approved", "needs_retake")


@dataclass(frozen=True)
class Metric:
    name: str
    value: int


def check_period(start: datetime, end: datetime) -> None:
    if end <= start:
        raise invalid("to", "must be after from")
    if end - start > MAX_PERIOD:
        raise invalid("to", "the period may span at most 366 days")


async def for_period(db: Database, org_id: uuid.UUID, start: datetime, end: datetime) -> list[Metric]:
    check_period(start, end)
    async with unit_of_work(db, org_id) as uow:
        # Every status named, so ix_order_photos_org_status (org_id, status, created_at) serves the
        # range once per status instead of the org's photos being read in full.
        uploaded = await uow.session.scalar(
            select(func.count()).where(
                order_photos.c.org_id == org_id,
                order_photos.c.status.in_(PHOTO_STATUSES),
                order_photos.c.created_at >= start,
                order_photos.c.created_at < end,
            )
        )
        # ix_order_photos_org_reviewed (org_id, status, reviewed_at) WHERE reviewed_at IS NOT NULL.
        reviewed: dict[str, int] = dict(
            (
                await uow.session.execute(
                    select(order_photos.c.status, func.count())
                    .where(
                        order_photos.c.org_id == org_id,
                        order_photos.c.status.in_(REVIEWED),
                        order_photos.c.reviewed_at.is_not(None),
                        order_photos.c.reviewed_at >= start,
                        order_photos.c.reviewed_at < end,
                    )
                    .group_by(order_photos.c.status)
                )
            )
            .tuples()
            .all()
        )
    return [
        Metric("photos_uploaded", int(uploaded or 0)),
        Metric("photos_approved", int(reviewed.get("approved", 0))),
        Metric("photos_needs_retake", int(reviewed.get("needs_retake", 0))),
    ]
