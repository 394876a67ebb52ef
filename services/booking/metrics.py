"""Booking's business figures for a period (issue 13's metrics CSV and funnel): leads, bookings by
status, completed jobs and NPS. Aggregates only, one statement each, on the org's indexed columns:
leads (org_id, created_at), bookings (org_id, created_at) and (org_id, status, starts_at), NPS
responses (org_id, created_at)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from libs.common.db import UnitOfWork
from libs.common.errors import invalid
from services.booking.analytics import nps_score
from services.booking.models import BOOKING_STATUSES

MAX_PERIOD_DAYS = 366


@dataclass(frozen=True)
class Metric:
    name: str
    value: float


def check_period(from_time: datetime, to_time: datetime) -> None:
    if to_time <= from_time:
        raise invalid("to", "must be after from")
    if to_time - from_time > timedelta(days=MAX_PERIOD_DAYS):
        raise invalid("from", f"the period must be at most {MAX_PERIOD_DAYS} days")


_LEADS = text(
    "SELECT count(*) FROM booking.leads WHERE org_id = :org AND created_at >= :from_time AND created_at < :to_time"
)
_BOOKINGS = text(
    """
    SELECT status, count(*) AS n
      FROM booking.bookings
     WHERE org_id = :org AND created_at >= :from_time AND created_at < :to_time
     GROUP BY status
    """
)
_JOBS_COMPLETED = text(
    """
    SELECT count(*)
      FROM booking.bookings
     WHERE org_id = :org AND status = 'completed' AND starts_at >= :from_time AND starts_at < :to_time
    """
)
_NPS = text(
    """
    SELECT count(*) AS responses,
           count(*) FILTER (WHERE score >= 9) AS promoters,
           count(*) FILTER (WHERE score <= 6) AS detractors,
           avg(score)::float8 AS average
      FROM booking.nps_responses
     WHERE org_id = :org AND created_at >= :from_time AND created_at < :to_time
    """
)


async def period_metrics(uow: UnitOfWork, from_time: datetime, to_time: datetime) -> list[Metric]:
    """leads, bookings and bookings_<status> (created in the period, by their status now),
    jobs_completed (completed jobs that started in the period), nps_responses, and nps_score and
    nps_average when there was at least one response."""
    check_period(from_time, to_time)
    params = {"org": uow.org_id, "from_time": from_time, "to_time": to_time}
    leads = int(await uow.session.scalar(_LEADS, params) or 0)
    by_status = {row.status: int(row.n) for row in (await uow.session.execute(_BOOKINGS, params)).all()}
    jobs = int(await uow.session.scalar(_JOBS_COMPLETED, params) or 0)
    nps = (await uow.session.execute(_NPS, params)).one()
    out = [Metric("leads", leads), Metric("bookings", sum(by_status.values()))]
    out += [Metric(f"bookings_{status}", by_status.get(status, 0)) for status in BOOKING_STATUSES]
    out += [Metric("jobs_completed", jobs), Metric("nps_responses", int(nps.responses))]
    if nps.responses:
        out.append(
            Metric("nps_score", nps_score(int(nps.promoters), int(nps.detractors), int(nps.responses)))
        )
        out.append(Metric("nps_average", round(float(nps.average), 2)))
    return out
