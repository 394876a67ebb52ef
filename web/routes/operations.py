"""Today at a glance (/console), operations (/console/operations: dead letters, scheduled jobs, audit
log) and analytics (/console/analytics: NPS, cohorts and the funnel drawn as SVG charts).

A page's reads go to the gateway together (asyncio.gather), but only after one call on its own: that
first call refreshes an expiring access token, and concurrent refreshes would present the same refresh
token twice, which the gateway answers by revoking the whole session. A read the person's role may not
make (403) just leaves its part of the page out; any other failure is the page's failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from web.api import ApiError, gateway_of
from web.charts import bar_chart, line_chart
from web.org_zone import org_zone, remember_zone
from web.pages import read_form, redirect, render, session_of

router = APIRouter()

PAGE = 50
# The photo queue answers a plain array of at most this many: beyond it the tile says "200+".
# The photo queue answers items, not a count: a tile reads at most this many (then shows "100+").
PHOTO_QUEUE_LIMIT = 100
BOOKINGS_LIMIT = 200
# A job whose last success is older than this many intervals (and at least STALE_FLOOR) is stale.
STALE_INTERVALS = 3
STALE_FLOOR = timedelta(minutes=5)
DEFAULT_PERIOD_DAYS = 90
COHORT_MONTHS = (3, 6, 12, 24)


# --- shared -----------------------------------------------------------------------------------


async def get(request: Request, path: str, **params: Any) -> Any:
    return await gateway_of(request).call(request, "GET", path, params=params)


async def allowed(call: Awaitable[Any], request: Request | None = None, what: str = "") -> Any | None:
    """The answer, or None when the role may not read it (the page then leaves that part out). With
    `request`, a service that is down (5xx) leaves its part out too, and the page says which: one
    service away must not take the whole page with it."""
    try:
        return await call
    except ApiError as error:
        if error.status == 403:
            return None
        if error.status >= 500 and request is not None:
            request.state.unavailable = [*getattr(request.state, "unavailable", []), what]
            return None
        raise


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- jobs health ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobHealth:
    name: str
    state: str  # ok | failing | stale | never
    job: dict[str, Any]


def job_health(job: dict[str, Any], now: datetime) -> JobHealth:
    """Failing: the last run failed or failures are piling up. Stale: no success for several
    intervals (the runner may be dead, which a failure count would never show)."""
    name = str(job.get("name", ""))
    if job.get("consecutive_failures") or job.get("last_outcome") == "failed":
        return JobHealth(name, "failing", job)
    last_success = parse_time(job.get("last_success_at"))
    window = max(STALE_FLOOR, timedelta(seconds=STALE_INTERVALS * int(job.get("interval_seconds") or 0)))
    if last_success is None:
        started = parse_time(job.get("last_started_at") or job.get("last_finished_at"))
        return JobHealth(name, "stale" if started and now - started > window else "never", job)
    return JobHealth(name, "stale" if now - last_success > window else "ok", job)


def jobs_view(status: dict[str, Any] | None) -> list[JobHealth] | None:
    if status is None:
        return None
    now = datetime.now(UTC)
    return [job_health(job, now) for job in status.get("jobs") or []]


# --- today ------------------------------------------------------------------------------------


@dataclass
class Tile:
    label: str
    count: str
    href: str
    note: str = ""
    warn: bool = False


def queue_tiles(
    assignments: dict[str, Any] | None,
    photos: list[Any] | None,
    invoices: dict[str, Any] | None,
    dlq: dict[str, Any] | None,
    jobs: list[JobHealth] | None,
    overdue_invoices: dict[str, Any] | None = None,
) -> list[Tile]:
    tiles: list[Tile] = []
    if assignments is not None:
        urgent = sum(1 for item in assignments.get("items") or [] if item.get("urgent"))
        tiles.append(
            Tile(
                "To assign",
                str(assignments.get("total", 0)),
                "/console/bookings",
                f"{urgent} within 24 h" if urgent else "next 7 days",
                warn=urgent > 0,
            )
        )
    if photos is not None:
        count = f"{PHOTO_QUEUE_LIMIT}+" if len(photos) >= PHOTO_QUEUE_LIMIT else str(len(photos))
        tiles.append(Tile("Photos to review", count, "/console/photos"))
    if invoices is not None:
        overdue = int((overdue_invoices or {}).get("total") or 0)
        tiles.append(
            Tile(
                "Unpaid invoices",
                str(invoices.get("total", 0)),
                "/console/invoices",
                f"{overdue} overdue" if overdue else "",
                warn=overdue > 0,
            )
        )
    if dlq is not None:
        total = int(dlq.get("total") or 0)
        tiles.append(Tile("Dead letters", str(total), "/console/operations#dead-letters", "", warn=total > 0))
    if jobs is not None:
        bad = [j for j in jobs if j.state in ("failing", "stale")]
        tiles.append(
            Tile(
                "Scheduled jobs",
                str(len(bad)) if bad else "OK",
                "/console/operations#jobs",
                ", ".join(f"{j.name} {j.state}" for j in bad) if bad else f"{len(jobs)} healthy",
                warn=bool(bad),
            )
        )
    return tiles


def _days(
    bookings: list[dict[str, Any]], teams: list[dict[str, Any]], zone: ZoneInfo
) -> list[dict[str, Any]]:
    """Today's and tomorrow's bookings (in the org's zone), by team, unassigned ones last."""
    names = {t["id"]: t["name"] for t in teams}
    today = datetime.now(zone).date()
    days = []
    for offset, title in ((0, "Today"), (1, "Tomorrow")):
        day = today + timedelta(days=offset)
        groups: dict[str, list[dict[str, Any]]] = {}
        for booking in sorted(bookings, key=lambda b: str(b.get("starts_at"))):
            starts = parse_time(booking.get("starts_at"))
            if starts is None or starts.astimezone(zone).date() != day:
                continue
            team = names.get(booking.get("team_id") or "", "") if booking.get("team_id") else ""
            groups.setdefault(team or "Unassigned", []).append(booking)
        ordered = sorted(groups.items(), key=lambda kv: (kv[0] == "Unassigned", kv[0].lower()))
        count = sum(len(v) for v in groups.values())
        days.append({"title": title, "date": day, "groups": ordered, "count": count})
    return days


@router.get("/console", response_class=HTMLResponse)
async def today(request: Request) -> HTMLResponse:
    now = datetime.now(UTC)
    # Wide enough for any zone's today and tomorrow (offsets reach ±14 h); _days keeps the right ones.
    window = await get(
        request,
        "/v1/admin/bookings",
        **{
            "from": (now - timedelta(days=1)).isoformat(),
            "to": (now + timedelta(days=3)).isoformat(),
            "limit": BOOKINGS_LIMIT,
        },
    )
    bookings = window.get("bookings") or []
    remember_zone(request, bookings)
    zone = await org_zone(request)
    # The invoice tiles need counts only: a page of one of each queue (the queue answers its total).
    teams, assignments, photos, invoices, overdue, dlq, jobs = await asyncio.gather(
        allowed(get(request, "/v1/admin/teams"), request, "teams"),
        allowed(
            get(request, "/v1/admin/queue/assignments", days=7, limit=200), request, "the assignment queue"
        ),
        allowed(
            get(request, "/v1/admin/queue/photos", status="all", limit=PHOTO_QUEUE_LIMIT),
            request,
            "the photo queue",
        ),
        allowed(
            get(request, "/v1/admin/queue/invoices", status="all", limit=1), request, "the invoices queue"
        ),
        allowed(
            get(request, "/v1/admin/queue/invoices", status="overdue", limit=1), request, "the invoices queue"
        ),
        allowed(get(request, "/v1/admin/queue/dlq", limit=1), request, "dead letters"),
        allowed(get(request, "/v1/admin/jobs/health"), request, "the scheduled jobs"),
    )
    return render(
        request,
        "today.html",
        tiles=queue_tiles(assignments, photos, invoices, dlq, jobs_view(jobs), overdue),
        days=_days(bookings, (teams or {}).get("teams") or [], zone),
        more=int(window.get("total") or 0) > len(bookings),
        tz=zone.key,
    )


# --- operations -------------------------------------------------------------------------------


def _offset(value: str | None) -> int:
    try:
        return max(0, min(1_000_000, int(value or 0)))
    except ValueError:
        return 0


@router.get("/console/operations", response_class=HTMLResponse)
async def operations(
    request: Request, action: str = "", audit_offset: str = "0", dlq_offset: str = "0"
) -> HTMLResponse:
    action = action.strip()[:100]
    audit_at, dlq_at = _offset(audit_offset), _offset(dlq_offset)
    dlq = await allowed(
        get(request, "/v1/admin/queue/dlq", limit=PAGE, offset=dlq_at), request, "dead letters"
    )
    jobs, audit, users = await asyncio.gather(
        allowed(get(request, "/v1/admin/jobs/health"), request, "the scheduled jobs"),
        allowed(
            get(request, "/v1/admin/audit-logs", limit=PAGE, offset=audit_at, action=action),
            request,
            "the audit log",
        ),
        # The log names actors by user id: the org's users give them their email back.
        allowed(get(request, "/v1/iam/users", limit=200), request, "users"),
    )
    zone = await org_zone(request)
    return render(
        request,
        "ops_operations.html",
        dlq=dlq,
        dlq_offset=dlq_at,
        jobs=jobs_view(jobs),
        audit=audit,
        actors={u["id"]: u["email"] for u in (users or {}).get("users") or []},
        audit_offset=audit_at,
        action_filter=action,
        page=PAGE,
        tz=zone.key,
    )


REPLAY_PATHS = {
    "outbox": "/v1/admin/outbox/{id}/replay",
    "export": "/v1/admin/export-dead-letter/{id}/replay",
}


@router.post("/console/operations/dead-letters/{kind}/{item_id}/replay", response_model=None)
async def replay(request: Request, kind: str, item_id: str) -> Response:
    await read_form(request)
    path = REPLAY_PATHS.get(kind)
    if path is None:
        return render(request, "error.html", status=404, title="Not here", message="There is no such page.")
    try:
        await gateway_of(request).call(request, "POST", path.format(id=item_id))
    except ApiError as error:
        # Replayed already (or by someone else meanwhile): say so on the page; unknown ids (another
        # org's included) go to the error page as 404.
        if error.status != 409:
            raise
        session_of(request).flash(f"Not replayed: {error.detail}.")
        return redirect("/console/operations#dead-letters")
    session_of(request).flash("Queued for delivery again.")
    return redirect("/console/operations#dead-letters")


# --- analytics --------------------------------------------------------------------------------


def _date(value: str, field: str, errors: dict[str, str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        errors[field] = "must be a date (YYYY-MM-DD)"
        return None


def _instant(day: date, zone: ZoneInfo) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=zone).isoformat()


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.1f}%"


async def _refused(call: Awaitable[Any], errors: dict[str, str]) -> Any | None:
    """A 422 about the period becomes the filter's field errors; a 403 leaves the section out."""
    try:
        return await allowed(call)
    except ApiError as error:
        if error.status != 422:
            raise
        for name, message in (error.field_errors or {"from": error.detail}).items():
            errors.setdefault(name, message)
        return None


def _charts(nps: Any, cohorts: Any, funnel: Any) -> dict[str, Any]:
    charts: dict[str, Any] = {}
    if nps is not None:
        charts["nps_mix"] = bar_chart(
            [
                ("Promoters", nps["promoters"]),
                ("Passives", nps["passives"]),
                ("Detractors", nps["detractors"]),
            ]
            if nps.get("responses")
            else [],
            title="NPS answers",
            empty="no answers in this period",
        )
        charts["nps_trend"] = line_chart(
            [(p["period"], p["average_score"]) for p in nps.get("weekly") or []],
            title="Average score by week",
            y_min=0,
            y_max=10,
            empty="no answers in this period",
        )
    if cohorts is not None:
        rows = cohorts.get("cohorts") or []
        charts["cohort_customers"] = bar_chart(
            [(c["month"], c["customers"]) for c in rows], title="New customers by month of first booking"
        )
        charts["cohort_repeat"] = line_chart(
            [(c["month"], round(float(c["repeat_rate"]) * 100, 1)) for c in rows],
            title="Repeat rate by cohort",
            unit="%",
            y_min=0,
            y_max=100,
        )
    if funnel is not None:
        charts["funnel"] = bar_chart(
            [
                ("Leads", funnel["leads"]),
                ("Bookings", funnel["bookings"]),
                ("Completed", funnel["completed_jobs"]),
                ("Paid", funnel["paid_payments"]),
            ],
            title="Funnel",
        )
    return charts


@router.get("/console/analytics", response_class=HTMLResponse)
async def analytics(request: Request) -> HTMLResponse:
    query = request.query_params
    zone = await org_zone(request)
    today = datetime.now(zone).date()
    errors: dict[str, str] = {}
    start = _date(query.get("from", ""), "from", errors) or today - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    end = _date(query.get("to", ""), "to", errors) or today
    months = int(query["months"]) if query.get("months", "").isdigit() else 12
    if months not in COHORT_MONTHS:
        errors["months"] = "choose one of the listed periods"
        months = 12
    if not errors and end < start:
        errors["to"] = "must not be before from"
    values = {"from": query.get("from") or start.isoformat(), "to": query.get("to") or end.isoformat()}
    values["months"] = str(months)
    nps: Any = None
    cohorts: Any = None
    funnel: Any = None
    if not errors:
        # Cohorts first and alone: the zone may have come from the session without a call, and the
        # two reads after it go out together (see the module's note on refreshing tokens).
        cohorts = await _refused(get(request, "/v1/admin/analytics/cohorts", months=months), errors)
        nps, funnel = await asyncio.gather(
            _refused(
                get(
                    request,
                    "/v1/admin/analytics/nps",
                    **{"from": _instant(start, zone), "to": _instant(end + timedelta(days=1), zone)},
                ),
                errors,
            ),
            _refused(
                get(
                    request,
                    "/v1/admin/analytics/funnel",
                    **{"from": start.isoformat(), "to": end.isoformat()},
                ),
                errors,
            ),
        )
    conversion = {k: _pct(v) for k, v in ((funnel or {}).get("conversion") or {}).items()}
    return render(
        request,
        "analytics_analytics.html",
        status=422 if errors else 200,
        errors=errors,
        values=values,
        months=COHORT_MONTHS,
        nps=nps,
        cohorts=cohorts,
        funnel=funnel,
        conversion=conversion,
        charts=_charts(nps, cohorts, funnel),
        tz=zone.key,
    )
