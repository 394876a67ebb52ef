"""The org's usage as the domain events told it, and the usage report that checks it (seed 002
"Billing and usage reporting").

Counters: one `usage_events` row per counted event, `source_event` = the event's own id (ce-id, which
is also its Nats-Msg-Id), unique per org, so a redelivered event is counted once:
- cws.booking.booking.created: +1 booking, at the booking's created_at;
- cws.booking.booking.deleted (the cleanup job deleting a pending booking nobody confirmed): -1
  booking, at that booking's created_at, so it leaves the month it was counted in;
- cws.booking.worker.added (created or reactivated): +1 worker;
- cws.booking.worker.deactivated (deactivated or deleted): -1 worker, only when `was_active` (deleting
  a worker who was already deactivated says so again and must not take them off twice);
- cws.media.photo.stored: +bytes of storage, and cws.media.photo.deleted: -bytes (the stored file's
  size, carried by both events), at the event's time.

Drift: each metric's recorded counter (the sum of its deltas: workers and storage over all time,
bookings over the month by occurred_at, the month taken in the org's time zone) against the truth from
the service that owns the data (booking's CountUsage, media's GetStorageUsage). Any difference is drift,
reported per metric and never corrected here: a lost event shows as recorded < actual, a duplicated one
as recorded > actual. When media does not answer (not deployed, down), storage is reported
`checked: false` with the reason, not guessed, and the rest of the report stands."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cws.booking.v1 import events_pb2 as booking_events
from cws.media.v1 import events_pb2 as media_events
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import and_, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import UnitOfWork
from libs.common.errors import invalid
from libs.common.event_types import EventMeta
from services.billing.models import usage_events
from services.billing.subscriptions import Subscription

WORKERS, BOOKINGS, STORAGE_BYTES = "workers", "bookings", "storage_bytes"
METRICS = (WORKERS, BOOKINGS, STORAGE_BYTES)
MONTH_FORMAT = "YYYY-MM, e.g. 2026-03"
_MONTH = re.compile(r"(\d{4})-(\d{2})")
# Years a report can be asked for: a calendar month whose end is still a valid date.
MIN_YEAR, MAX_YEAR = 2000, 9998
STORAGE_NOT_DEPLOYED = (
    "media is not deployed here (MEDIA_GRPC_TARGET is empty): the recorded bytes cannot be checked "
    "against what is stored, so they are not"
)
STORAGE_UNAVAILABLE = (
    "media did not answer (unavailable): the recorded bytes are not checked against what is stored "
    "this time; ask again shortly"
)


# --- recording, from the consumers in events.py -------------------------------------------------


async def record(
    uow: UnitOfWork, metric: str, delta: int, *, subject_id: str, meta: EventMeta, occurred_at: datetime
) -> bool:
    """One counted event; False when its id was counted before (a redelivery)."""
    if not meta.id:
        # The relay always sends ce-id; without it a redelivery could not be told apart.
        raise ValueError(f"{meta.subject} arrived without an event id: not counted")
    inserted = await uow.session.scalar(
        pg_insert(usage_events)
        .values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            metric=metric,
            delta=delta,
            subject_id=subject_id[:64],
            source_event=meta.id[:128],
            occurred_at=occurred_at,
        )
        .on_conflict_do_nothing(index_elements=[usage_events.c.org_id, usage_events.c.source_event])
        .returning(usage_events.c.id)
    )
    return inserted is not None


async def _in_org(uow: UnitOfWork, org_id: str) -> None:
    wanted = uuid.UUID(org_id)
    if uow.org_id != wanted:
        await uow.set_org(wanted)


def _when(stamp: Timestamp, meta: EventMeta) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else meta.time


async def on_booking_created(uow: UnitOfWork, event: booking_events.BookingChanged, meta: EventMeta) -> None:
    await _in_org(uow, event.org_id)
    await record(
        uow, BOOKINGS, 1, subject_id=event.booking_id, meta=meta, occurred_at=_when(event.created_at, meta)
    )


async def on_booking_deleted(uow: UnitOfWork, event: booking_events.BookingChanged, meta: EventMeta) -> None:
    """Off the month it was counted in: at its created_at, not at the time of the cleanup."""
    await _in_org(uow, event.org_id)
    await record(
        uow, BOOKINGS, -1, subject_id=event.booking_id, meta=meta, occurred_at=_when(event.created_at, meta)
    )


async def on_worker_added(uow: UnitOfWork, event: booking_events.WorkerAdded, meta: EventMeta) -> None:
    await _in_org(uow, event.org_id)
    await record(
        uow, WORKERS, 1, subject_id=event.worker_id, meta=meta, occurred_at=_when(event.occurred_at, meta)
    )


async def on_worker_deactivated(
    uow: UnitOfWork, event: booking_events.WorkerDeactivated, meta: EventMeta
) -> None:
    if not event.was_active:
        return  # an inactive worker deleted: they left the count when they were deactivated
    await _in_org(uow, event.org_id)
    await record(
        uow, WORKERS, -1, subject_id=event.worker_id, meta=meta, occurred_at=_when(event.occurred_at, meta)
    )


async def on_photo_stored(uow: UnitOfWork, event: media_events.PhotoStored, meta: EventMeta) -> None:
    await _in_org(uow, event.org_id)
    await record(
        uow,
        STORAGE_BYTES,
        event.bytes,
        subject_id=event.photo_id,
        meta=meta,
        occurred_at=_when(event.occurred_at, meta),
    )


async def on_photo_deleted(uow: UnitOfWork, event: media_events.PhotoDeleted, meta: EventMeta) -> None:
    await _in_org(uow, event.org_id)
    await record(
        uow,
        STORAGE_BYTES,
        -event.bytes,
        subject_id=event.photo_id,
        meta=meta,
        occurred_at=_when(event.occurred_at, meta),
    )


# --- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Month:
    label: str  # YYYY-MM
    time_zone: str
    start: datetime  # midnight of its first day in the org's zone, as UTC
    end: datetime  # midnight of the next month's first day


def _zone(time_zone: str) -> tuple[ZoneInfo, str]:
    try:
        return ZoneInfo(time_zone), time_zone
    except (KeyError, ValueError):
        return ZoneInfo("UTC"), "UTC"


def parse_month(text: str, time_zone: str, now: datetime | None = None) -> Month:
    """The calendar month `text` (YYYY-MM) in the org's zone; empty: the current one there."""
    zone, zone_name = _zone(time_zone)
    if not text:
        today = (now or datetime.now(UTC)).astimezone(zone)
        year, month = today.year, today.month
    else:
        matched = _MONTH.fullmatch(text)
        if matched is None or not 1 <= int(matched.group(2)) <= 12:
            raise invalid("month", f"must be {MONTH_FORMAT}")
        year, month = int(matched.group(1)), int(matched.group(2))
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise invalid("month", f"must be {MONTH_FORMAT}, from {MIN_YEAR} to {MAX_YEAR}")
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    return Month(
        label=f"{year:04d}-{month:02d}",
        time_zone=zone_name,
        start=datetime(year, month, 1, tzinfo=zone).astimezone(UTC),
        end=datetime(next_year, next_month, 1, tzinfo=zone).astimezone(UTC),
    )


async def recorded(uow: UnitOfWork, month: Month) -> dict[str, int]:
    """Each metric's recorded counter: workers and storage over all time, bookings in `month`.
    One pass over the org's rows by ix_usage_events_org_metric_time."""
    in_month = and_(usage_events.c.occurred_at >= month.start, usage_events.c.occurred_at < month.end)
    counted = case(
        (usage_events.c.metric != BOOKINGS, usage_events.c.delta), (in_month, usage_events.c.delta), else_=0
    )
    rows = (
        await uow.session.execute(
            select(usage_events.c.metric, func.coalesce(func.sum(counted), 0))
            .where(usage_events.c.org_id == uow.org_id)
            .group_by(usage_events.c.metric)
        )
    ).all()
    totals = dict.fromkeys(METRICS, 0)
    totals.update({metric: int(total) for metric, total in rows})
    return totals


@dataclass(frozen=True)
class MetricReport:
    metric: str
    recorded: int
    actual: int | None  # None: not checked
    limit: int
    not_checked_reason: str = ""

    @property
    def checked(self) -> bool:
        return self.actual is not None

    @property
    def used(self) -> int:
        """What the plan's limit is measured against: the truth when known, else the counter."""
        return self.actual if self.actual is not None else self.recorded

    @property
    def over_limit(self) -> bool:
        return self.used > self.limit

    @property
    def difference(self) -> int:
        return self.recorded - self.actual if self.actual is not None else 0

    @property
    def drift_detected(self) -> bool:
        return self.difference != 0


@dataclass(frozen=True)
class UsageReport:
    month: Month
    subscription: Subscription
    metrics: tuple[MetricReport, ...]

    @property
    def drift_detected(self) -> bool:
        return any(m.drift_detected for m in self.metrics)


def report(
    month: Month,
    subscription: Subscription,
    counters: dict[str, int],
    *,
    active_workers: int,
    bookings_created: int,
    stored_bytes: int | None,
    storage_not_checked: str = "",
) -> UsageReport:
    """The counters against booking's and media's truth and the plan's limits. `stored_bytes` None:
    media did not answer, and `storage_not_checked` says why."""
    plan = subscription.plan
    return UsageReport(
        month=month,
        subscription=subscription,
        metrics=(
            MetricReport(WORKERS, counters[WORKERS], active_workers, plan.max_workers),
            MetricReport(BOOKINGS, counters[BOOKINGS], bookings_created, plan.max_bookings_per_month),
            MetricReport(
                STORAGE_BYTES,
                counters[STORAGE_BYTES],
                stored_bytes,
                plan.max_storage_bytes,
                not_checked_reason="" if stored_bytes is not None else storage_not_checked,
            ),
        ),
    )
