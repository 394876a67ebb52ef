"""Analytics v1's funnel and the business metrics (seed 002 "Analytics v1 endpoints", seed 004's
metrics CSV; issue 13), for OWNER, ADMIN and FINANCE (Basic Auth's admin and accountant pairs too).

Both are built from the owning services' own figures: each answers ViewsService.GetMetrics for the
caller's org (RLS) and the period, and the gateway asks them in parallel. Aggregates only: no row of
either answer names a person.

- `GET /v1/admin/analytics/funnel`: leads → bookings → completed jobs → paid payments, with the
  conversion rates between them (booking and billing).
- `GET /v1/admin/metrics?format=csv|json`: every figure booking, billing, notify and media can state
  for the period, one row each, money per currency (`revenue_cents_cad`). A service that cannot
  answer fails the request (503 naming it): a metrics file that silently lacks rows would be read as
  zeros.

The period (`from`, `to`): a date (YYYY-MM-DD) is a day in the org's time zone, `to` included; a date
and time with an offset is that instant, without one it is the org's local time. Defaults: `to` now,
`from` 30 days before `to`. `to` must come after `from`, at most 366 days later."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cws.booking.v1 import booking_pb2
from cws.common.v1 import views_pb2
from fastapi import APIRouter, Depends, Query
from fastapi.responses import ORJSONResponse, Response

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.fanout import all_of
from gateway.problems import ProblemError
from gateway.routes import convert
from gateway.stubs import Booking, BookingStub, Views
from libs.common.roles import ANALYSTS

if TYPE_CHECKING:
    from cws.common.v1.views_pb2_grpc import ViewsServiceAsyncStub

router = APIRouter(prefix="/v1/admin", tags=["analytics"], dependencies=[ADMIN])
ANALYST = Depends(require_roles(*ANALYSTS))

DEFAULT_DAYS = 30
MAX_DAYS = 366
FUNNEL_SOURCES = ("booking", "billing")
METRIC_SOURCES = ("booking", "billing", "notify", "media")
# The metric names the funnel reads (services/booking and services/billing's GetMetrics).
LEADS, BOOKINGS, COMPLETED, PAID = "leads", "bookings", "jobs_completed", "payments_succeeded"
CSV_HEADER = ("metric", "from", "to", "value")
# A cell a spreadsheet would run as a formula is written as text (CSV injection, OWASP); the same
# rule as billing's services/billing/csv_cells.py. Our cells are our own names and numbers, so this
# is a backstop should a service ever name a metric oddly.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

PERIOD_END = "YYYY-MM-DD (a day in the org's time zone) or an ISO 8601 date and time"
From = Annotated[
    str | None, Query(alias="from", max_length=40, description=f"{PERIOD_END}; default 30 days before to")
]
To = Annotated[str | None, Query(max_length=40, description=f"{PERIOD_END}, included; default now")]


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    # As the caller wrote them (a date stays a date), for the answer; ISO instants by default.
    start_text: str
    end_text: str

    def request(self) -> views_pb2.GetMetricsRequest:
        message = views_pb2.GetMetricsRequest()
        getattr(message, "from").CopyFrom(convert.timestamp(self.start, "from"))
        message.to.CopyFrom(convert.timestamp(self.end, "to"))
        return message


def _invalid(field: str, message: str) -> ProblemError:
    return ProblemError(
        422, "validation_error", f"{field} {message}", errors=[{"field": field, "message": message}]
    )


def _parsed(value: str, field: str) -> date | datetime:
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(field, "must be a date (YYYY-MM-DD) or an ISO 8601 date and time") from None


async def _org_zone(booking: BookingStub) -> ZoneInfo:
    """The caller's org's time zone (booking keeps the org's profile; with no key it answers for the
    caller's own org)."""
    profile = await booking.ResolvePublicOrg(booking_pb2.ResolvePublicOrgRequest())
    try:
        return ZoneInfo(profile.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _instant(value: date | datetime, field: str, zone: ZoneInfo, *, end: bool) -> datetime:
    try:
        if isinstance(value, datetime):
            local = value if value.tzinfo else value.replace(tzinfo=zone)
            return local.astimezone(UTC)
        day = value + timedelta(days=1) if end else value  # `to` as a date: that whole day included
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    except (OverflowError, ValueError):
        raise _invalid(field, "is out of range") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def period_of(booking: BookingStub, from_: str | None, to: str | None) -> Period:
    """The period the caller asked for, as instants; 422 naming the field when it makes no sense."""
    given = {"from": _parsed(from_, "from") if from_ else None, "to": _parsed(to, "to") if to else None}
    # The org's zone is asked for only when a date or a time without an offset needs it.
    local = [v for v in given.values() if v is not None and not (isinstance(v, datetime) and v.tzinfo)]
    zone = await _org_zone(booking) if local else ZoneInfo("UTC")
    texts = {field: value.isoformat() for field, value in given.items() if value is not None}
    end = (
        _instant(given["to"], "to", zone, end=True)
        if given["to"] is not None
        # Now, rounded up to the whole second: what happened a moment ago is in, and the text is short.
        else (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    )
    if given["from"] is not None:
        start = _instant(given["from"], "from", zone, end=False)
    elif end - datetime.min.replace(tzinfo=UTC) > timedelta(days=DEFAULT_DAYS):
        start = end - timedelta(days=DEFAULT_DAYS)
    else:
        raise _invalid("to", "is out of range")  # 30 days before it is before year 1
    if end <= start:
        raise _invalid("to", "must be after from")
    if end - start > timedelta(days=MAX_DAYS):
        raise _invalid("from", f"must be at most {MAX_DAYS} days before to")
    # Both ends must fit a Timestamp; refused here rather than half-way through the calls.
    request = Period(start, end, texts.get("from", _iso(start)), texts.get("to", _iso(end)))
    request.request()
    return request


async def gather_metrics(
    views: dict[str, ViewsServiceAsyncStub], names: tuple[str, ...], period: Period
) -> dict[str, views_pb2.GetMetricsResponse]:
    """Every named service's figures for the period, asked in parallel; all of them or a Problem."""
    message = period.request()
    return await all_of({name: views[name].GetMetrics(message) for name in names}, "state its figures")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 4)


def _count(answers: dict[str, views_pb2.GetMetricsResponse], name: str) -> int:
    return int(
        sum(
            m.value
            for answer in answers.values()
            for m in answer.metrics
            if m.name == name and not m.currency
        )
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@router.get(
    "/analytics/funnel",
    summary="Leads → bookings → completed jobs → paid payments in the period, with conversion rates "
    "(fractions, null when nothing to convert); aggregates only",
    dependencies=[ANALYST],
)
async def funnel(
    booking: Booking,
    views: Views,
    from_: From = None,
    to: To = None,
) -> dict[str, Any]:
    period = await period_of(booking, from_, to)
    answers = await gather_metrics(views, FUNNEL_SOURCES, period)
    leads, bookings = _count(answers, LEADS), _count(answers, BOOKINGS)
    completed, paid = _count(answers, COMPLETED), _count(answers, PAID)
    return {
        "from": period.start_text,
        "to": period.end_text,
        "leads": leads,
        "bookings": bookings,
        "completed_jobs": completed,
        "paid_payments": paid,
        "conversion": {
            "lead_to_booking": _rate(bookings, leads),
            "booking_to_completed": _rate(completed, bookings),
            "completed_to_paid": _rate(paid, completed),
            "lead_to_paid": _rate(paid, leads),
        },
    }


def _safe(cell: str | int | float) -> str | int | float:
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def metrics_csv(rows: list[tuple[str, int | float]], period: Period) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for name, value in rows:
        writer.writerow([_safe(cell) for cell in (name, period.start_text, period.end_text, value)])
    return buffer.getvalue()


METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "CSV: the header `metric,from,to,value`, then one row per metric. JSON: "
        '{"from", "to", "metrics": [{"metric", "value"}]}',
        "content": {"text/csv": {}, "application/json": {}},
    }
}


@router.get(
    "/metrics",
    summary="The org's business metrics for the period from booking, billing, notify and media "
    "(format=csv, the default, or json); money per currency, e.g. revenue_cents_cad",
    dependencies=[ANALYST],
    response_class=Response,
    responses=METRICS_RESPONSES,
)
async def metrics(
    booking: Booking,
    views: Views,
    format: Annotated[Literal["csv", "json"], Query(description="csv (the default) or json")] = "csv",
    from_: From = None,
    to: To = None,
) -> Response:
    period = await period_of(booking, from_, to)
    answers = await gather_metrics(views, METRIC_SOURCES, period)
    rows = [
        (f"{m.name}_{m.currency.lower()}" if m.currency else m.name, _number(m.value))
        for name in METRIC_SOURCES
        for m in answers[name].metrics
    ]
    headers = {"Cache-Control": "no-store"}
    if format == "json":
        body = {
            "from": period.start_text,
            "to": period.end_text,
            "metrics": [{"metric": name, "value": value} for name, value in rows],
        }
        return ORJSONResponse(body, headers=headers)
    return Response(metrics_csv(rows, period), media_type="text/csv; charset=utf-8", headers=headers)
