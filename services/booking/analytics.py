"""Analytics v1 (seed 002): NPS distribution and trends, and booking cohorts.

Aggregates only: no comment, email or name ever leaves these queries. Each answer is one or two
set-based statements (GROUP BY in Postgres), grouped by calendar periods in the org's time zone.
Every statement also names the org explicitly, on top of RLS, so the planner uses the org indexes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument

MAX_NPS_WINDOW_DAYS = 731
MAX_COHORT_MONTHS = 60


@dataclass(frozen=True)
class TrendPoint:
    period: str
    responses: int
    average_score: float


@dataclass(frozen=True)
class NpsSummary:
    responses: int
    promoters: int
    passives: int
    detractors: int
    nps: float
    weekly: list[TrendPoint]
    monthly: list[TrendPoint]


@dataclass(frozen=True)
class Cohort:
    month: str
    customers: int
    repeat_customers: int
    repeat_rate: float


def check_nps_window(from_time: datetime, to_time: datetime) -> None:
    if to_time <= from_time:
        raise InvalidArgument.of([FieldViolation("to", "must be after from")])
    if to_time - from_time > timedelta(days=MAX_NPS_WINDOW_DAYS):
        raise InvalidArgument(
            f"the window spans more than {MAX_NPS_WINDOW_DAYS} days",
            violations=[FieldViolation("from", f"window must be at most {MAX_NPS_WINDOW_DAYS} days")],
        )


def nps_score(promoters: int, detractors: int, responses: int) -> float:
    """% promoters minus % detractors, from -100 to 100, one decimal."""
    if not responses:
        return 0.0
    return round(100.0 * (promoters - detractors) / responses, 1)


_DISTRIBUTION = text(
    """
    SELECT count(*) AS responses,
           count(*) FILTER (WHERE score >= 9) AS promoters,
           count(*) FILTER (WHERE score BETWEEN 7 AND 8) AS passives,
           count(*) FILTER (WHERE score <= 6) AS detractors
      FROM booking.nps_responses
     WHERE org_id = :org AND created_at >= :from_time AND created_at < :to_time
    """
)

# One pass for both trends: GROUPING SETS gives the weekly rows and the monthly rows together.
# ISO weeks are labelled 2026-W07 (ISO year), months 2026-02, both in the org's local calendar.
_TRENDS = text(
    """
    WITH scored AS (
        SELECT score, created_at AT TIME ZONE :tz AS local_at
          FROM booking.nps_responses
         WHERE org_id = :org AND created_at >= :from_time AND created_at < :to_time
    )
    SELECT CASE WHEN grouping(week) = 0 THEN 'week' ELSE 'month' END AS grain,
           coalesce(week, month) AS period,
           count(*) AS responses,
           round(avg(score), 2)::float8 AS average_score
      FROM (
        SELECT score,
               to_char(local_at, 'IYYY-"W"IW') AS week,
               to_char(local_at, 'YYYY-MM') AS month
          FROM scored
      ) AS labelled
     GROUP BY GROUPING SETS ((week), (month))
     ORDER BY grain, period
    """
)


async def nps_summary(
    uow: UnitOfWork, *, time_zone: str, from_time: datetime, to_time: datetime
) -> NpsSummary:
    check_nps_window(from_time, to_time)
    params = {"org": uow.org_id, "tz": time_zone, "from_time": from_time, "to_time": to_time}
    totals = (await uow.session.execute(_DISTRIBUTION, params)).one()
    weekly: list[TrendPoint] = []
    monthly: list[TrendPoint] = []
    for row in (await uow.session.execute(_TRENDS, params)).all():
        point = TrendPoint(row.period, int(row.responses), float(row.average_score))
        (weekly if row.grain == "week" else monthly).append(point)
    return NpsSummary(
        responses=int(totals.responses),
        promoters=int(totals.promoters),
        passives=int(totals.passives),
        detractors=int(totals.detractors),
        nps=nps_score(int(totals.promoters), int(totals.detractors), int(totals.responses)),
        weekly=weekly,
        monthly=monthly,
    )


# A customer is a lower-cased client email; only bookings that were not cancelled count. Their
# cohort is the local month of their first such booking (its service date); a repeat customer has two
# or more. Every month of the window is listed, empty ones with zeros, so charts keep their axis.
_COHORTS = text(
    """
    WITH customers AS (
        SELECT min(starts_at) AS first_at, count(*) AS bookings
          FROM booking.bookings
         WHERE org_id = :org AND status <> 'cancelled' AND client_email <> ''
         GROUP BY lower(client_email)
    ),
    months AS (
        SELECT generate_series(
                   date_trunc('month', now() AT TIME ZONE :tz) - make_interval(months => :months - 1),
                   date_trunc('month', now() AT TIME ZONE :tz),
                   interval '1 month'
               ) AS month_start
    ),
    cohorts AS (
        SELECT date_trunc('month', first_at AT TIME ZONE :tz) AS month_start,
               count(*) AS customers,
               count(*) FILTER (WHERE bookings >= 2) AS repeat_customers
          FROM customers
         GROUP BY 1
    )
    SELECT to_char(months.month_start, 'YYYY-MM') AS month,
           coalesce(cohorts.customers, 0) AS customers,
           coalesce(cohorts.repeat_customers, 0) AS repeat_customers
      FROM months
      LEFT JOIN cohorts USING (month_start)
     ORDER BY months.month_start
    """
)


async def cohorts(uow: UnitOfWork, *, time_zone: str, months: int) -> list[Cohort]:
    if not 1 <= months <= MAX_COHORT_MONTHS:
        raise InvalidArgument.of([FieldViolation("months", f"must be between 1 and {MAX_COHORT_MONTHS}")])
    rows = (await uow.session.execute(_COHORTS, {"org": uow.org_id, "tz": time_zone, "months": months})).all()
    return [
        Cohort(
            month=row.month,
            customers=int(row.customers),
            repeat_customers=int(row.repeat_customers),
            repeat_rate=round(row.repeat_customers / row.customers, 4) if row.customers else 0.0,
        )
        for row in rows
    ]
