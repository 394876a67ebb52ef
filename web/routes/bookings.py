"""Leads and bookings: the leads inbox, a lead's estimate, booking from a lead or by hand, the day and
week board per team, and one booking's page with its status actions and assignment.

Times are typed and shown in the org's time zone. The gateway has no endpoint that names it outright,
so it is read off a booking (every booking carries `time_zone`) and kept in the session; an org with
no booking yet is asked for it on the booking form (default UTC)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from web.api import ApiError, gateway_of
from web.org_zone import known_zone, remember_zone, zone_of
from web.pages import form_error, read_form, redirect, render, session_of

router = APIRouter(prefix="/console")

LEADS_PER_PAGE = 25
SUGGESTIONS_PER_PAGE = 10
# The gateway pages bookings by at most 200; a week of one org past this many is cut short (and said so).
BOARD_PAGE = 200
BOARD_MAX_PAGES = 5
DEFAULT_MINUTES = 120
# As services/booking allows: moved or cancelled while pending or confirmed; (re)assigned until done.
OPEN_STATUSES = frozenset({"pending", "confirmed"})
ASSIGNABLE = frozenset({"pending", "confirmed", "in_progress"})
# Which status actions a booking offers, by its status: (path, button label). A confirmed job may be
# completed without being started (the service allows it: a worker who forgot to tap Start).
ACTIONS: dict[str, list[tuple[str, str]]] = {
    "pending": [("confirm", "Confirm")],
    "confirmed": [("start", "Start"), ("complete", "Complete")],
    "in_progress": [("complete", "Complete")],
}
TRANSITION_DONE = {
    "confirm": "Booking confirmed.",
    "start": "Booking started.",
    "complete": "Booking completed.",
    "deposit-paid": "Deposit marked paid.",
}
# Fields of the booking form that the gateway wants as numbers; anything unparsable is sent as typed
# so the gateway's own validation names the field.
INT_FIELDS = ("duration_minutes", "beds")
TEXT_FIELDS = (
    "client_name",
    "client_email",
    "client_phone",
    "address",
    "postal_code",
    "cleaning_type",
    "notes",
)


# --- time zones and form values ---------------------------------------------------------------


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return bool(name)


def _local_input(value: Any, zone: str) -> str:
    """An ISO instant as a datetime-local input's value (YYYY-MM-DDTHH:MM) in `zone`."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return ""
    return moment.astimezone(zone_of(zone)).strftime("%Y-%m-%dT%H:%M")


def _instant(typed: str, zone: str) -> str:
    """A datetime-local value read in `zone`, as ISO 8601 with its offset. Anything that is not a
    date and time goes on as typed: the gateway answers 422 naming the field."""
    try:
        moment = datetime.fromisoformat(typed.strip())
    except ValueError:
        return typed.strip()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone_of(zone))
    return moment.isoformat()


def _number(typed: Any, kind: type[int] | type[float]) -> Any:
    text = str(typed or "").strip()
    if not text:
        return 0
    try:
        return kind(text)
    except ValueError:
        return text


def _minutes(booking: dict[str, Any]) -> int:
    try:
        starts = datetime.fromisoformat(str(booking["starts_at"]).replace("Z", "+00:00"))
        ends = datetime.fromisoformat(str(booking["ends_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return DEFAULT_MINUTES
    return int((ends - starts).total_seconds() // 60)


def _status(error: ApiError) -> int:
    return error.status if 400 <= error.status < 500 else 503


# --- leads ------------------------------------------------------------------------------------


@router.get("/leads", response_class=HTMLResponse)
async def leads_inbox(request: Request, offset: int = 0) -> HTMLResponse:
    offset = max(offset, 0)
    found = await gateway_of(request).call(
        request, "GET", "/v1/admin/leads", params={"limit": LEADS_PER_PAGE, "offset": offset}
    )
    total = int(found.get("total") or 0)
    return render(
        request,
        "leads_inbox.html",
        leads=found.get("leads") or [],
        total=total,
        offset=offset,
        newer=max(offset - LEADS_PER_PAGE, 0) if offset else None,
        older=offset + LEADS_PER_PAGE if offset + LEADS_PER_PAGE < total else None,
        tz=(await known_zone(request) or "UTC"),
    )


@router.get("/leads/{lead_id}", response_class=HTMLResponse)
async def lead_page(request: Request, lead_id: str) -> HTMLResponse:
    # Another org's lead is a 404 from the gateway, rendered by the ApiError handler.
    lead = await gateway_of(request).call(request, "GET", f"/v1/admin/leads/{lead_id}")
    return render(request, "leads_detail.html", lead=lead, tz=(await known_zone(request) or "UTC"))


# --- a new booking ----------------------------------------------------------------------------


def _from_lead(lead: dict[str, Any], zone: str) -> dict[str, Any]:
    """The booking form filled in from a lead: its contact, its inputs and the estimate's duration."""
    inputs = lead.get("structured_inputs") or {}
    estimate = lead.get("estimate") or {}
    tomorrow = datetime.now(zone_of(zone)).date() + timedelta(days=1)
    return {
        "lead_id": lead.get("lead_id", ""),
        "starts_at": datetime.combine(tomorrow, time(9, 0)).strftime("%Y-%m-%dT%H:%M"),
        "time_zone": zone,
        "duration_minutes": estimate.get("estimated_minutes") or DEFAULT_MINUTES,
        "client_name": lead.get("name", ""),
        "client_email": lead.get("email", ""),
        "client_phone": lead.get("phone", ""),
        "postal_code": lead.get("postal_code", ""),
        "cleaning_type": inputs.get("cleaning_type", ""),
        "beds": inputs.get("beds", 0),
        "baths": inputs.get("baths", 0),
        "notes": lead.get("notes", ""),
    }


@router.get("/bookings/new", response_class=HTMLResponse)
async def new_booking(request: Request, lead_id: str = "") -> HTMLResponse:
    known = await known_zone(request)
    zone = known or "UTC"
    lead = None
    if lead_id:
        lead = await gateway_of(request).call(request, "GET", f"/v1/admin/leads/{lead_id}")
        values = _from_lead(lead, zone)
    else:
        tomorrow = datetime.now(zone_of(zone)).date() + timedelta(days=1)
        values = {
            "starts_at": datetime.combine(tomorrow, time(9, 0)).strftime("%Y-%m-%dT%H:%M"),
            "time_zone": zone,
            "duration_minutes": DEFAULT_MINUTES,
        }
    # One key per form shown: a double click or a resent post creates one booking (the gateway answers
    # the first one again), and a refused post stored nothing, so re-sending the key after a fix is safe.
    values["idempotency_key"] = str(uuid.uuid4())
    return render(request, "bookings_new.html", values=values, lead=lead, zone_known=known is not None)


def _booking_body(form: dict[str, Any]) -> dict[str, Any]:
    zone = str(form.get("time_zone") or "UTC").strip()
    body: dict[str, Any] = {name: str(form.get(name, "")).strip() for name in TEXT_FIELDS}
    body["starts_at"] = _instant(str(form.get("starts_at", "")), zone)
    for name in INT_FIELDS:
        body[name] = _number(form.get(name), int)
    body["baths"] = _number(form.get("baths"), float)
    body["deposit_required"] = form.get("deposit_required") == "on"
    if form.get("lead_id"):
        body["lead_id"] = str(form["lead_id"])
    return body


@router.post("/bookings/new", response_model=None)
async def create_booking(request: Request) -> Response:
    form = await read_form(request)
    gateway = gateway_of(request)

    async def again(status: int, **context: Any) -> HTMLResponse:
        lead = None
        if form.get("lead_id"):
            lead = await gateway.call(request, "GET", f"/v1/admin/leads/{form['lead_id']}")
        known = form.get("zone_known") == "1"
        return render(
            request, "bookings_new.html", status=status, values=form, lead=lead, zone_known=known, **context
        )

    if not _valid_zone(str(form.get("time_zone") or "").strip()):
        # Checked here: the gateway only ever sees the instant, never the zone it was typed in.
        return await again(422, errors={"time_zone": "is not a time zone name such as America/Edmonton"})
    try:
        key = str(form.get("idempotency_key") or "")[:200]
        booking = await gateway.call(
            request,
            "POST",
            "/v1/admin/bookings",
            json=_booking_body(form),
            headers={"Idempotency-Key": key} if key else None,
        )
    except ApiError as error:
        return await again(_status(error), **form_error(error))
    remember_zone(request, [booking])
    session_of(request).flash("Booking created.")
    return redirect(f"/console/bookings/{booking['id']}")


# --- the board --------------------------------------------------------------------------------


@dataclass
class Lane:
    team_id: str
    name: str
    days: dict[date, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(items) for items in self.days.values())


def _window(view: str, day: date, zone: str) -> tuple[datetime, datetime, list[date]]:
    """The board's [start, end) in the org's zone: one day, or Monday to Sunday of the day's week."""
    first = day if view == "day" else day - timedelta(days=day.weekday())
    days = [first + timedelta(days=n) for n in range(1 if view == "day" else 7)]
    tz = zone_of(zone)
    start = datetime.combine(days[0], time(0), tzinfo=tz)
    end = datetime.combine(days[-1] + timedelta(days=1), time(0), tzinfo=tz)
    return start, end, days


async def _bookings_between(request: Request, start: datetime, end: datetime) -> tuple[list[Any], bool]:
    """Every booking overlapping the window, page by page; True when the cap cut the list short."""
    found: list[Any] = []
    for page in range(BOARD_MAX_PAGES):
        batch = await gateway_of(request).call(
            request,
            "GET",
            "/v1/admin/bookings",
            params={
                "from": start.isoformat(),
                "to": end.isoformat(),
                "limit": BOARD_PAGE,
                "offset": page * BOARD_PAGE,
            },
        )
        found += batch.get("bookings") or []
        if len(found) >= int(batch.get("total") or 0) or not batch.get("bookings"):
            return found, False
    return found, True


def _lanes(
    teams: list[dict[str, Any]], bookings: list[dict[str, Any]], days: list[date], zone: str, team_id: str
) -> list[Lane]:
    lanes = [Lane(str(t["id"]), str(t["name"])) for t in teams if not team_id or t["id"] == team_id]
    unassigned = Lane("", "Unassigned")
    by_id = {lane.team_id: lane for lane in lanes}
    for each in [*lanes, unassigned]:
        each.days = {day: [] for day in days}
    tz = zone_of(zone)
    for booking in sorted(bookings, key=lambda b: str(b.get("starts_at"))):
        lane: Lane | None = by_id.get(str(booking["team_id"])) if booking.get("team_id") else unassigned
        if lane is None:  # another team's, while the board shows one team
            continue
        starts = datetime.fromisoformat(str(booking["starts_at"]).replace("Z", "+00:00")).astimezone(tz)
        # A booking that began the evening before still shows on the window's first day.
        lane.days.setdefault(max(starts.date(), days[0]), []).append(booking)
    return [*lanes, unassigned] if not team_id else lanes


@router.get("/bookings", response_class=HTMLResponse)
async def board(request: Request, view: str = "day", date: str = "", team_id: str = "") -> HTMLResponse:
    gateway = gateway_of(request)
    view = "week" if view == "week" else "day"
    zone = await known_zone(request) or "UTC"
    try:
        day = datetime.strptime(date, "%Y-%m-%d").date()
    except ValueError:
        day = datetime.now(zone_of(zone)).date()
    start, end, days = _window(view, day, zone)
    teams = (await gateway.call(request, "GET", "/v1/admin/teams")).get("teams") or []
    bookings, cut_short = await _bookings_between(request, start, end)
    step = timedelta(days=1 if view == "day" else 7)
    return render(
        request,
        "bookings_board.html",
        view=view,
        day=day,
        days=days,
        team_id=team_id,
        teams=teams,
        lanes=_lanes(teams, bookings, days, zone, team_id),
        cut_short=cut_short,
        previous=(day - step).isoformat(),
        following=(day + step).isoformat(),
        tz=zone,
    )


# --- one booking ------------------------------------------------------------------------------


async def _suggestions(request: Request, booking: dict[str, Any], offset: int) -> dict[str, Any] | None:
    """Teams and workers free in the booking's window; None where the viewer may not dispatch."""
    if booking.get("status") not in ASSIGNABLE:
        return None
    try:
        return await gateway_of(request).call(  # type: ignore[no-any-return]
            request,
            "GET",
            "/v1/admin/schedule/suggestions",
            params={
                "starts_at": booking["starts_at"],
                "ends_at": booking["ends_at"],
                "booking_id": booking["id"],
                "limit": SUGGESTIONS_PER_PAGE,
                "offset": max(offset, 0),
            },
        )
    except ApiError as error:
        if error.status == 403:
            return None
        raise


async def _detail(
    request: Request,
    booking_id: str,
    *,
    status: int = 200,
    suggestions_offset: int = 0,
    conflicts: list[dict[str, Any]] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The booking page; also re-rendered, with the gateway's errors, when an action is refused."""
    gateway = gateway_of(request)
    # Another org's booking is a 404 here: the ApiError handler renders the web's 404 page.
    booking = await gateway.call(request, "GET", f"/v1/admin/bookings/{booking_id}")
    remember_zone(request, [booking])
    teams = (await gateway.call(request, "GET", "/v1/admin/teams")).get("teams") or []
    workers = (await gateway.call(request, "GET", "/v1/admin/workers")).get("workers") or []
    zone = str(booking.get("time_zone") or "UTC")
    values = {
        "starts_at": _local_input(booking.get("starts_at"), zone),
        "duration_minutes": _minutes(booking),
        **context.pop("values", {}),
    }
    return render(
        request,
        "bookings_detail.html",
        status=status,
        booking=booking,
        tz=zone,
        team_names={t["id"]: t["name"] for t in teams},
        worker_names={w["id"]: w["name"] for w in workers},
        actions=_actions(booking),
        open=booking.get("status") in OPEN_STATUSES,
        suggestions=await _suggestions(request, booking, suggestions_offset),
        suggestions_offset=suggestions_offset,
        suggestions_page=SUGGESTIONS_PER_PAGE,
        conflicts=conflicts,
        values=values,
        **context,
    )


def _actions(booking: dict[str, Any]) -> list[tuple[str, str]]:
    found = list(ACTIONS.get(str(booking.get("status")), []))
    unpaid = booking.get("deposit_required") and not booking.get("deposit_paid")
    if unpaid and booking.get("status") in OPEN_STATUSES:
        found.append(("deposit-paid", "Mark deposit paid"))
    return found


@router.get("/bookings/{booking_id}", response_class=HTMLResponse)
async def booking_page(request: Request, booking_id: str, s_offset: int = 0) -> HTMLResponse:
    return await _detail(request, booking_id, suggestions_offset=s_offset)


async def _act(
    request: Request, booking_id: str, path: str, body: Any, done: str, form: dict[str, Any]
) -> Response:
    """POST one action; back to the booking with a flash, or the page again with the refusal."""
    try:
        await gateway_of(request).call(request, "POST", f"/v1/admin/bookings/{booking_id}/{path}", json=body)
    except ApiError as error:
        conflicts = None
        if error.code == "schedule_conflict":
            conflicts = await _conflicts(request, booking_id, form)
        return await _detail(
            request,
            booking_id,
            status=_status(error),
            conflicts=conflicts,
            values={k: v for k, v in form.items() if k in ("starts_at", "duration_minutes", "reason")},
            **form_error(error),
        )
    session_of(request).flash(done)
    return redirect(f"/console/bookings/{booking_id}")


async def _conflicts(request: Request, booking_id: str, form: dict[str, Any]) -> list[dict[str, Any]]:
    """What blocks the team and workers asked for, in the booking's (or the newly asked) window."""
    gateway = gateway_of(request)
    booking = await gateway.call(request, "GET", f"/v1/admin/bookings/{booking_id}")
    starts, ends = str(booking["starts_at"]), str(booking["ends_at"])
    if form.get("starts_at"):  # a refused reschedule: the conflicts of the new window
        try:
            moment = datetime.fromisoformat(_instant(str(form["starts_at"]), str(booking.get("time_zone"))))
            minutes = int(form.get("duration_minutes") or _minutes(booking))
            starts, ends = moment.isoformat(), (moment + timedelta(minutes=minutes)).isoformat()
        except ValueError:
            pass
    workers = form.get("worker_ids") or []
    workers = [workers] if isinstance(workers, str) else list(workers)
    asked = [{"team_id": form.get("team_id") or booking.get("team_id") or ""}]
    asked += [{"worker_id": w} for w in workers or booking.get("worker_ids") or []]
    found: list[dict[str, Any]] = []
    for who in asked:
        if not any(who.values()):
            continue
        answer = await gateway.call(
            request,
            "GET",
            "/v1/admin/schedule/conflicts",
            params={"starts_at": starts, "ends_at": ends, "booking_id": booking_id, **who},
        )
        found += answer.get("conflicts") or []
    return found


@router.post("/bookings/{booking_id}/{action}", response_model=None)
async def transition(request: Request, booking_id: str, action: str) -> Response:
    form = await read_form(request)
    body: dict[str, Any]
    if action in TRANSITION_DONE:
        return await _act(request, booking_id, action, None, TRANSITION_DONE[action], form)
    if action == "cancel":
        body = {"reason": str(form.get("reason", "")).strip()}
        return await _act(request, booking_id, "cancel", body, "Booking cancelled.", form)
    if action == "reschedule":
        booking = await gateway_of(request).call(request, "GET", f"/v1/admin/bookings/{booking_id}")
        body = {
            "starts_at": _instant(str(form.get("starts_at", "")), str(booking.get("time_zone") or "UTC")),
            "duration_minutes": _number(form.get("duration_minutes"), int),
        }
        return await _act(request, booking_id, "reschedule", body, "Booking moved.", form)
    if action == "assign":
        workers = form.get("worker_ids") or []
        body = {
            "team_id": str(form.get("team_id") or "") or None,
            "worker_ids": [workers] if isinstance(workers, str) else list(workers),
        }
        return await _act(request, booking_id, "assign", body, "Assignment saved.", form)
    return render(request, "error.html", status=404, title="Not here", message="There is no such page.")
