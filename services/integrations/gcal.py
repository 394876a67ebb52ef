"""Google Calendar: bookings pushed to the org's chosen calendar as events, and the calendar's busy
time pulled back as booking blackouts (gcal-sync, issue 17).

One pass (`gcal_pass`), in this order:

1. Pull. `events.list` on the calendar with the sync token of the last pass (incremental), or, on
   the first pass, once a day, after a 410 (token no longer valid) or when the teams busy time goes
   to changed, a full listing of [now - GCAL_SYNC_INITIAL_DAYS, now + GCAL_SYNC_FUTURE_DAYS], paged.
   - Events the suite made (extendedProperties.private.cws_booking_id) are never busy time. If one
     was edited or deleted in Google (its etag is not the one we wrote), **the suite wins**: its
     booking is pushed again in step 2 and overwrites the edit. Edit bookings in the suite.
   - Any other event that blocks time (not cancelled, transparency not "transparent", in the
     window) becomes a blackout of the connection's busy team, or of every team, through booking's
     PutExternalBlackout under the key `gcal:<calendar>:<event>` (a rerun moves the same blackout,
     never adds one); a cancelled, free or out-of-window event's blackouts are deleted
     (DeleteExternalBlackouts). `gcal_busy` remembers what was put, so an unchanged event costs no
     call; a full listing also deletes what it no longer finds.
2. Push. Bookings changed since the last pass (ListBookings.updated_since, less
   GCAL_SYNC_BACKFILL_MINUTES of overlap for transactions still open then), those that entered the
   future window since, and those whose event was edited in Google (on a full pass: every booking in
   the window). Each booking is one event with a deterministic id (its uuid's hex, valid base32hex):
   inserted, or, when Google answers 409 (a pass that died after the insert and before recording
   it), updated in place, so a rerun never makes a second event. `gcal_events.pushed_hash` skips
   bookings whose event would not change. A cancelled booking's event is deleted.
   The event holds what a crew needs and no more: the client's name, the address, the team, the
   status; never an email or phone number.

Cursor (sync_states.cursor): JSON `{"push": pass start, "sync_token": ..., "full_at": last full
listing, "teams": hash of the blackout teams}`.

Rate limits: a 429, or a 403 rateLimitExceeded, with a Retry-After up to
INTEGRATIONS_MAX_RETRY_AFTER_SECONDS is waited out and retried (a few times) inside the pass; longer
raises RateLimited and the pass ends with its cursor kept (the runner records it; what was pushed is
in gcal_events already). A 401 refreshes the grant once (ctx.refresh_grant) and retries. 5xx,
timeouts and connection errors raise ProviderUnavailable (the runner's breaker counts them). An
event Google refuses by itself (400, a 403 that is no rate limit) is counted in `events_failed`,
named in the pass's error, and tried again next pass; the other bookings go on.

Changing the calendar, or disconnecting (the connection module calls `remove_busy_time`), takes the
old calendar's blackouts away.

google-api-python-client is synchronous: every request runs in a worker thread (asyncio.to_thread),
one at a time per pass.

A booking deleted outright (an abandoned pending booking removed by cleanup) has its event deleted on
the next full pass (daily). Recurring events are read as their single instances (singleEvents).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import google_auth_httplib2
import grpc
import httplib2
from cws.booking.v1 import booking_pb2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import from_ts, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import NotFound
from libs.common.grpc_client import peer_answers
from libs.common.logs import get_logger
from services.integrations import oauth
from services.integrations.models import gcal_busy, gcal_events
from services.integrations.peers import Peers
from services.integrations.settings import IntegrationsSettings
from services.integrations.sync_types import Grant, PassResult, SyncContext

log = get_logger(__name__)

SERVICE_PATH = "calendar/v3/"
PAGE_SIZE = 250
BOOKINGS_PAGE = 200
# A full listing at least this often: events that moved into the future window unchanged, and
# anything an incremental sync could have missed.
FULL_EVERY = timedelta(days=1)
# Waits for a short Retry-After inside one pass, per request, before giving up with RateLimited.
MAX_WAITS = 3
DEFAULT_RETRY_AFTER = 1.0
MAX_BLACKOUT = timedelta(days=365)
BUSY_REASON = "Busy (Google Calendar)"
CANCELLED_HASH = "cancelled"
RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")
PUSHED_STATUSES = ("pending", "confirmed", "in_progress", "completed")


@dataclass(frozen=True)
class Calendar:
    id: str
    summary: str
    primary: bool
    access_role: str


class GoogleError(Exception):
    """An answer the pass handles itself (404, 409, 410, 412...), with Google's error reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason = status, reason


# --- the API client -----------------------------------------------------------------------------


def api_endpoint(settings: IntegrationsSettings) -> str:
    """GOOGLE_CALENDAR_API_URL is the root (https://www.googleapis.com/); the API sits under
    calendar/v3/ there, and googleapiclient's api_endpoint replaces root and path together."""
    root = settings.google_calendar_api_url
    return urljoin(root if root.endswith("/") else root + "/", SERVICE_PATH)


def _reason(error: HttpError) -> str:
    details = error.error_details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    return ""


class GoogleCalendar:
    """The calendar API for one grant: googleapiclient's service over an AuthorizedHttp that never
    refreshes by itself (a 401 comes back to us, and `refresh` asks the grant store)."""

    def __init__(
        self,
        grant: Grant,
        settings: IntegrationsSettings,
        refresh: Callable[[], Awaitable[Grant]] | None = None,
    ) -> None:
        self.settings = settings
        self.refresh = refresh
        self.waits = 0
        self.requests = 0
        self._service = self._build(grant.access_token)

    def _build(self, token: str) -> Any:
        transport = google_auth_httplib2.AuthorizedHttp(
            Credentials(token),
            http=httplib2.Http(timeout=self.settings.integrations_http_timeout_seconds),
            refresh_status_codes=(),
        )
        return build(
            "calendar",
            "v3",
            http=transport,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": api_endpoint(self.settings)},
        )

    async def call(self, make: Callable[[Any], Any]) -> Any:
        """`make(service)` is one request (`lambda s: s.events().get(...)`); its answer, after a
        refresh on 401 and short waits on rate limits; GoogleError for other 4xx."""
        refreshed = False
        waits = 0
        while True:
            self.requests += 1
            try:
                return await asyncio.to_thread(_execute, make, self._service)
            except HttpError as error:
                status, reason = int(error.resp.status), _reason(error)
                if status == 401:
                    if refreshed or self.refresh is None:
                        raise oauth.ProviderUnavailable(
                            "Google refused a freshly refreshed access token"
                        ) from None
                    grant = await self.refresh()
                    self._service = self._build(grant.access_token)
                    refreshed = True
                    continue
                if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
                    retry_after = oauth.retry_after_seconds(error.resp, DEFAULT_RETRY_AFTER)
                    if retry_after > self.settings.integrations_max_retry_after_seconds or waits >= MAX_WAITS:
                        raise oauth.RateLimited(retry_after) from None
                    waits += 1
                    self.waits += 1
                    log.info("gcal_rate_limited_wait", retry_after=retry_after)
                    await asyncio.sleep(retry_after)
                    continue
                if status >= 500:
                    raise oauth.ProviderUnavailable(f"Google Calendar answered {status}") from None
                raise GoogleError(status, reason, str(error.reason)) from None
            except (TimeoutError, httplib2.HttpLib2Error, http.client.HTTPException, OSError) as error:
                raise oauth.ProviderUnavailable(
                    f"Google Calendar unreachable: {type(error).__name__}"
                ) from None


def _request(resource: str, method: str, params: dict[str, Any]) -> Callable[[Any], Any]:
    """`service.<resource>().<method>(**params)`, made later, in the worker thread."""
    return lambda service: getattr(getattr(service, resource)(), method)(**params)


def _execute(make: Callable[[Any], Any], service: Any) -> Any:
    """In a worker thread: build the request and run it (no retries of the library's own)."""
    return make(service).execute(num_retries=0)


async def list_calendars(
    grant: Grant, settings: IntegrationsSettings, refresh: Callable[[], Awaitable[Grant]] | None = None
) -> list[Calendar]:
    """The calendars the grant's user can write to (owner or writer), primary first."""
    api = GoogleCalendar(grant, settings, refresh)
    found: list[Calendar] = []
    page_token: str | None = None
    while True:
        params: dict[str, Any] = {"maxResults": PAGE_SIZE, "minAccessRole": "writer"}
        if page_token:
            params["pageToken"] = page_token
        answer = await api.call(_request("calendarList", "list", params))
        for item in answer.get("items", []):
            found.append(
                Calendar(
                    id=str(item["id"]),
                    summary=str(item.get("summaryOverride") or item.get("summary") or item["id"]),
                    primary=bool(item.get("primary", False)),
                    access_role=str(item.get("accessRole", "")),
                )
            )
        page_token = answer.get("nextPageToken")
        if not page_token:
            return sorted(found, key=lambda c: (not c.primary, c.summary.lower()))


# --- the cursor ---------------------------------------------------------------------------------


@dataclass
class Cursor:
    push: datetime | None = None
    sync_token: str = ""
    full_at: datetime | None = None
    teams: str = ""

    @classmethod
    def parse(cls, text: str) -> Cursor:
        try:
            raw = json.loads(text) if text else {}
        except ValueError:
            return cls()
        if not isinstance(raw, dict):
            return cls()

        def moment(name: str) -> datetime | None:
            try:
                return datetime.fromisoformat(str(raw[name])) if raw.get(name) else None
            except ValueError:
                return None

        return cls(
            moment("push"), str(raw.get("sync_token", "")), moment("full_at"), str(raw.get("teams", ""))
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "push": self.push.isoformat() if self.push else "",
                "sync_token": self.sync_token,
                "full_at": self.full_at.isoformat() if self.full_at else "",
                "teams": self.teams,
            },
            sort_keys=True,
        )


# --- one pass -----------------------------------------------------------------------------------


@dataclass
class Pass:
    ctx: SyncContext
    api: GoogleCalendar
    calendar_id: str
    lo: datetime
    hi: datetime
    teams: dict[str, str]  # the org's teams, id → name
    busy_teams: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    # Bookings whose own event was edited or deleted in Google: pushed again (the suite wins).
    repush: set[str] = field(default_factory=set)
    # Events Google refused one by one (the pass goes on): the first is the pass's last error.
    errors: list[str] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


async def gcal_pass(ctx: SyncContext) -> PassResult:
    settings = ctx.settings
    calendar_id = ctx.grant.account_id
    cursor = Cursor.parse(ctx.state.cursor)
    teams = await _teams(ctx)
    busy_teams = [str(ctx.grant.busy_team_id)] if ctx.grant.busy_team_id else sorted(teams)
    busy_teams = [team for team in busy_teams if team in teams]
    fingerprint = hashlib.sha256(",".join(busy_teams).encode()).hexdigest()[:16]
    run = Pass(
        ctx=ctx,
        api=GoogleCalendar(ctx.grant, settings, ctx.refresh_grant),
        calendar_id=calendar_id,
        lo=ctx.now - timedelta(days=settings.gcal_sync_initial_days),
        hi=ctx.now + timedelta(days=settings.gcal_sync_future_days),
        teams=teams,
        busy_teams=busy_teams,
    )
    full = (
        not cursor.sync_token
        or cursor.full_at is None
        or ctx.now - cursor.full_at >= FULL_EVERY
        or cursor.teams != fingerprint
    )
    # Another calendar chosen since: its busy time no longer blocks anyone.
    await remove_busy_time(ctx.db, ctx.peers, ctx.org_id, keep_calendar=calendar_id)
    if cursor.teams and cursor.teams != fingerprint:
        await _forget_busy(run)  # the busy team changed: every blackout is made again below
    sync_token, full = await _pull(run, "" if full else cursor.sync_token)
    await _push(run, cursor, full)
    run.count("requests", run.api.requests)
    if run.api.waits:
        run.count("rate_limit_waits", run.api.waits)
    done = Cursor(
        # An event Google refused is tried again next pass: the changes since the last good pass are
        # read again (those pushed meanwhile are skipped by their hash).
        push=cursor.push if run.errors else ctx.now,
        sync_token=sync_token,
        full_at=ctx.now if full else cursor.full_at,
        teams=fingerprint,
    )
    error = ""
    if run.errors:
        more = f" (and {len(run.errors) - 1} more)" if len(run.errors) > 1 else ""
        error = (run.errors[0] + more)[:500]
    return PassResult(cursor=done.dump(), counts=run.counts, error=error)


async def remove_busy_time(db: Database, peers: Peers, org_id: uuid.UUID, keep_calendar: str = "") -> int:
    """Every blackout the org's Google calendars put in booking, but those of `keep_calendar`:
    for a disconnect (nothing keeps them current any more) and a change of calendar. Returns how
    many blackouts booking deleted."""
    async with unit_of_work(db, org_id) as uow:
        rows = (
            await uow.session.execute(
                select(gcal_busy.c.calendar_id, gcal_busy.c.event_id).where(
                    gcal_busy.c.org_id == org_id, gcal_busy.c.calendar_id != keep_calendar
                )
            )
        ).all()
    deleted = 0
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        with peers.acting(org_id), peer_answers("booking"):
            answer = await peers.booking.stub.DeleteExternalBlackouts(
                booking_pb2.DeleteExternalBlackoutsRequest(
                    external_keys=[f"gcal:{r.calendar_id}:{r.event_id}" for r in chunk]
                )
            )
        deleted += answer.deleted
        async with unit_of_work(db, org_id) as uow:
            for calendar_id in {r.calendar_id for r in chunk}:
                await uow.session.execute(
                    delete(gcal_busy).where(
                        gcal_busy.c.org_id == org_id,
                        gcal_busy.c.calendar_id == calendar_id,
                        gcal_busy.c.event_id.in_([r.event_id for r in chunk if r.calendar_id == calendar_id]),
                    )
                )
    return deleted


async def _teams(ctx: SyncContext) -> dict[str, str]:
    with ctx.peers.acting(ctx.org_id), peer_answers("booking"):
        listed = await ctx.peers.booking.stub.ListTeams(booking_pb2.ListTeamsRequest())
    return {team.id: team.name for team in listed.teams}


# --- pull: busy time → blackouts ----------------------------------------------------------------


async def _list_events(run: Pass, sync_token: str) -> tuple[list[dict[str, Any]], str, str]:
    """Every page of one listing: (events, next sync token, the calendar's time zone). Raises
    GoogleError 410 when the sync token is no longer valid."""
    events: list[dict[str, Any]] = []
    page_token: str | None = None
    time_zone = "UTC"
    while True:
        params: dict[str, Any] = {
            "calendarId": run.calendar_id,
            "singleEvents": True,
            "maxResults": PAGE_SIZE,
        }
        if page_token:
            params["pageToken"] = page_token
        if sync_token:
            params["syncToken"] = sync_token
        else:
            params.update(timeMin=_rfc3339(run.lo), timeMax=_rfc3339(run.hi), showDeleted=False)
        answer = await run.api.call(_request("events", "list", params))
        run.count("pages")
        events.extend(answer.get("items", []))
        time_zone = str(answer.get("timeZone") or time_zone)
        page_token = answer.get("nextPageToken")
        if not page_token:
            return events, str(answer.get("nextSyncToken", "")), time_zone


async def _pull(run: Pass, sync_token: str) -> tuple[str, bool]:
    """Returns (the next sync token, whether this was a full listing)."""
    full = not sync_token
    try:
        events, next_token, time_zone = await _list_events(run, sync_token)
    except GoogleError as error:
        if error.status != 410:
            raise oauth.ProviderUnavailable(f"Google Calendar refused the listing: {error}") from None
        run.count("full_resyncs")
        full = True
        events, next_token, time_zone = await _list_events(run, "")
    known = await _busy_rows(run)
    own = await _own_rows(run, events)
    seen: set[str] = set()
    for event in events:
        event_id = str(event.get("id", ""))
        if not event_id:
            continue
        seen.add(event_id)
        booking_id = _own_booking(event)
        if booking_id is not None:
            _check_own(run, event, booking_id, own.get(booking_id))
            continue
        period = _busy_period(event, time_zone, run.lo, run.hi)
        row = known.get(event_id)
        if period is None:
            if row is not None:
                await _drop_busy(run, [event_id])
            continue
        if row is not None and (row.starts_at, row.ends_at) == period:
            run.count("busy_unchanged")
            continue
        await _put_busy(run, event_id, period)
    if full:
        gone = [event_id for event_id in known if event_id not in seen]
        if gone:
            await _drop_busy(run, gone)
    return next_token, full


def _own_booking(event: dict[str, Any]) -> str | None:
    private = (event.get("extendedProperties") or {}).get("private") or {}
    value = private.get("cws_booking_id")
    return str(value) if value else None


def _check_own(run: Pass, event: dict[str, Any], booking_id: str, row: Any) -> None:
    """One of our events came back in the listing: unchanged (our own write) or edited in Google,
    where the suite wins: the booking is pushed again."""
    if row is None:
        return  # ours, but not recorded (a pass died after writing it): the push finds it by id
    if row.pushed_hash == CANCELLED_HASH and event.get("status") == "cancelled":
        return
    if event.get("etag") != row.etag:
        run.count("own_edited_in_google")
        run.repush.add(booking_id)


def _parse_time(value: dict[str, Any], time_zone: str) -> datetime:
    if value.get("dateTime"):
        return datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00")).astimezone(UTC)
    day = datetime.fromisoformat(str(value["date"]))
    try:
        zone = ZoneInfo(str(value.get("timeZone") or time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return day.replace(tzinfo=zone).astimezone(UTC)


def _busy_period(
    event: dict[str, Any], time_zone: str, lo: datetime, hi: datetime
) -> tuple[datetime, datetime] | None:
    """The time the event blocks, or None when it blocks nothing we show (cancelled, marked free,
    outside the window, or unreadable)."""
    if event.get("status") == "cancelled" or event.get("transparency") == "transparent":
        return None
    try:
        start, end = _parse_time(event["start"], time_zone), _parse_time(event["end"], time_zone)
    except (KeyError, TypeError, ValueError):
        return None
    if end <= start or end <= lo or start >= hi:
        return None
    return start, end


async def _busy_rows(run: Pass) -> dict[str, Any]:
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        rows = await uow.session.execute(
            select(gcal_busy).where(
                gcal_busy.c.org_id == run.ctx.org_id, gcal_busy.c.calendar_id == run.calendar_id
            )
        )
        return {row.event_id: row for row in rows}


async def _own_rows(run: Pass, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    ids = []
    for event in events:
        booking_id = _own_booking(event)
        if booking_id is not None:
            try:
                ids.append(uuid.UUID(booking_id))
            except ValueError:
                continue
    if not ids:
        return {}
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        rows = await uow.session.execute(
            select(gcal_events).where(
                gcal_events.c.org_id == run.ctx.org_id,
                gcal_events.c.calendar_id == run.calendar_id,
                gcal_events.c.booking_id.in_(ids),
            )
        )
        return {str(row.booking_id): row for row in rows}


def _key(run: Pass, event_id: str) -> str:
    return f"gcal:{run.calendar_id}:{event_id}"


async def _put_busy(run: Pass, event_id: str, period: tuple[datetime, datetime]) -> None:
    start, end = period
    # Booking keeps blackouts up to a year long: a longer event blocks the year from its visible start.
    start = max(start, run.lo)
    end = min(end, start + MAX_BLACKOUT)
    stub = run.ctx.peers.booking.stub
    for team_id in run.busy_teams:
        request = booking_pb2.PutExternalBlackoutRequest(
            external_key=_key(run, event_id),
            team_id=team_id,
            starts_at=to_ts(start),
            ends_at=to_ts(end),
            reason=BUSY_REASON,
        )
        try:
            with run.ctx.peers.acting(run.ctx.org_id):
                answer = await stub.PutExternalBlackout(request)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                run.count("busy_skipped")  # the team went meanwhile, or a time booking refuses
                log.info("gcal_busy_skipped", event_id=event_id, team_id=team_id, code=error.code().name)
                continue
            with peer_answers("booking"):
                raise
        run.count(
            "busy_created" if answer.created else "busy_updated" if answer.changed else "busy_unchanged"
        )
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        values = {"starts_at": period[0], "ends_at": period[1], "updated_at": run.ctx.now}
        await uow.session.execute(
            pg_insert(gcal_busy)
            .values(org_id=run.ctx.org_id, calendar_id=run.calendar_id, event_id=event_id, **values)
            .on_conflict_do_update(index_elements=["org_id", "calendar_id", "event_id"], set_=values)
        )


async def _drop_busy(run: Pass, event_ids: list[str]) -> None:
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        with run.ctx.peers.acting(run.ctx.org_id), peer_answers("booking"):
            answer = await run.ctx.peers.booking.stub.DeleteExternalBlackouts(
                booking_pb2.DeleteExternalBlackoutsRequest(external_keys=[_key(run, e) for e in chunk])
            )
        run.count("busy_deleted", answer.deleted)
        async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
            await uow.session.execute(
                delete(gcal_busy).where(
                    gcal_busy.c.org_id == run.ctx.org_id,
                    gcal_busy.c.calendar_id == run.calendar_id,
                    gcal_busy.c.event_id.in_(chunk),
                )
            )


async def _forget_busy(run: Pass) -> None:
    """The teams busy time goes to changed: every blackout of this calendar goes, and the full
    listing that follows puts them on the teams it goes to now."""
    known = await _busy_rows(run)
    if known:
        await _drop_busy(run, list(known))


# --- push: bookings → events --------------------------------------------------------------------


async def _bookings(run: Pass, **query: Any) -> list[booking_pb2.Booking]:
    found: list[booking_pb2.Booking] = []
    offset = 0
    while True:
        with run.ctx.peers.acting(run.ctx.org_id), peer_answers("booking"):
            page = await run.ctx.peers.booking.stub.ListBookings(
                booking_pb2.ListBookingsRequest(limit=BOOKINGS_PAGE, offset=offset, **query)
            )
        found.extend(page.bookings)
        offset += len(page.bookings)
        if not page.bookings or offset >= page.total:
            return found


async def _to_push(run: Pass, cursor: Cursor, full: bool) -> list[booking_pb2.Booking]:
    window = {"from_time": to_ts(run.lo), "to_time": to_ts(run.hi)}
    if full or cursor.push is None:
        listed = await _bookings(run, **window)
    else:
        backfill = timedelta(minutes=run.ctx.settings.gcal_sync_backfill_minutes)
        listed = await _bookings(run, updated_since=to_ts(cursor.push - backfill))
        # Unchanged bookings that came into the future window since the last pass.
        entered = cursor.push + timedelta(days=run.ctx.settings.gcal_sync_future_days) - backfill
        if entered < run.hi:
            listed += await _bookings(run, from_time=to_ts(max(entered, run.lo)), to_time=to_ts(run.hi))
    by_id = {booking.id: booking for booking in listed}
    for booking_id in sorted(run.repush - set(by_id)):
        try:
            with run.ctx.peers.acting(run.ctx.org_id), peer_answers("booking"):
                got = await run.ctx.peers.booking.stub.GetBooking(
                    booking_pb2.GetBookingRequest(booking_id=booking_id)
                )
        except NotFound:
            continue  # the booking is gone: nothing to restore
        by_id[got.booking.id] = got.booking
    return list(by_id.values())


async def _push(run: Pass, cursor: Cursor, full: bool) -> None:
    bookings = await _to_push(run, cursor, full)
    if full:
        await _sweep_deleted(run, {b.id for b in bookings})
    if not bookings:
        return
    rows = await _event_rows(run, [uuid.UUID(b.id) for b in bookings])
    for booking in bookings:
        try:
            await _push_one(run, booking, rows.get(booking.id))
        except GoogleError as error:
            # Google refused this one event (a 400, or a 403 that is not a rate limit): the others
            # go on; it is retried on the next pass, and the error shows as the pass's last error.
            run.count("events_failed")
            run.errors.append(f"booking {booking.id}: Google Calendar answered {error}")
            log.warning("gcal_event_refused", booking_id=booking.id, error=str(error))


async def _push_one(run: Pass, booking: booking_pb2.Booking, row: Any) -> None:
    if booking.status not in PUSHED_STATUSES:
        await _push_cancelled(run, booking, row)
        return
    starts, ends = from_ts(booking.starts_at, "starts_at"), from_ts(booking.ends_at, "ends_at")
    in_window = ends > run.lo and starts < run.hi
    if row is None and not in_window:
        return
    body = _event_body(run, booking)
    digest = _hash(body)
    if row is not None and row.pushed_hash == digest and booking.id not in run.repush:
        run.count("events_unchanged")
        return
    event_id = uuid.UUID(booking.id).hex
    if row is not None and row.pushed_hash != CANCELLED_HASH:
        written = await _update_or_insert(run, event_id, body)
    else:
        written = await _insert_or_update(run, event_id, body)
    await _record_event(run, booking.id, event_id, digest, str(written.get("etag", "")))


async def _sweep_deleted(run: Pass, listed: set[str]) -> None:
    """On a full pass: events of bookings that no longer exist (an abandoned pending booking removed
    by cleanup) are deleted. The candidates are events pushed recently enough to be in the window
    and not among the window's bookings; booking confirms each is gone."""
    horizon = run.ctx.now - timedelta(
        days=run.ctx.settings.gcal_sync_initial_days + run.ctx.settings.gcal_sync_future_days + 1
    )
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        rows = await uow.session.execute(
            select(gcal_events.c.booking_id, gcal_events.c.event_id).where(
                gcal_events.c.org_id == run.ctx.org_id,
                gcal_events.c.calendar_id == run.calendar_id,
                gcal_events.c.pushed_hash != CANCELLED_HASH,
                gcal_events.c.updated_at >= horizon,
            )
        )
        candidates = [(str(r.booking_id), r.event_id) for r in rows if str(r.booking_id) not in listed]
    for booking_id, event_id in candidates:
        try:
            with run.ctx.peers.acting(run.ctx.org_id), peer_answers("booking"):
                await run.ctx.peers.booking.stub.GetBooking(
                    booking_pb2.GetBookingRequest(booking_id=booking_id)
                )
            continue  # still there (outside the window now): its event stays
        except NotFound:
            pass
        try:
            await run.api.call(
                _request("events", "delete", {"calendarId": run.calendar_id, "eventId": event_id})
            )
            run.count("events_deleted")
        except GoogleError as error:
            if error.status not in (404, 410):
                raise oauth.ProviderUnavailable(f"Google Calendar refused a delete: {error}") from None
        await _record_event(run, booking_id, event_id, CANCELLED_HASH, "")


async def _insert_or_update(run: Pass, event_id: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        made = await run.api.call(lambda s: s.events().insert(calendarId=run.calendar_id, body=body))
    except GoogleError as error:
        if error.status != 409:
            raise
        # Made by a pass that died before recording it (or before a disconnect): the same event.
        run.count("events_recovered")
        return await _update(run, event_id, body)
    run.count("events_created")
    return made  # type: ignore[no-any-return]


async def _update_or_insert(run: Pass, event_id: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        updated = await _update(run, event_id, body)
    except GoogleError as error:
        if error.status != 404:
            raise
        return await _insert_or_update(run, event_id, body)
    return updated


async def _update(run: Pass, event_id: str, body: dict[str, Any]) -> dict[str, Any]:
    updated = await run.api.call(
        lambda s: s.events().update(calendarId=run.calendar_id, eventId=event_id, body=body)
    )
    run.count("events_updated")
    return updated  # type: ignore[no-any-return]


async def _push_cancelled(run: Pass, booking: booking_pb2.Booking, row: Any) -> None:
    if row is not None and row.pushed_hash == CANCELLED_HASH and booking.id not in run.repush:
        return
    event_id = uuid.UUID(booking.id).hex
    try:
        await run.api.call(lambda s: s.events().delete(calendarId=run.calendar_id, eventId=event_id))
        run.count("events_deleted")
    except GoogleError as error:
        if error.status not in (404, 410):
            raise
    await _record_event(run, booking.id, event_id, CANCELLED_HASH, "")


async def _event_rows(run: Pass, booking_ids: list[uuid.UUID]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        for start in range(0, len(booking_ids), 1000):
            rows = await uow.session.execute(
                select(gcal_events).where(
                    gcal_events.c.org_id == run.ctx.org_id,
                    gcal_events.c.calendar_id == run.calendar_id,
                    gcal_events.c.booking_id.in_(booking_ids[start : start + 1000]),
                )
            )
            found.update({str(row.booking_id): row for row in rows})
    return found


async def _record_event(run: Pass, booking_id: str, event_id: str, digest: str, etag: str) -> None:
    """At once, in its own transaction: a pass that dies later keeps what it did."""
    values = {"event_id": event_id, "pushed_hash": digest, "etag": etag, "updated_at": run.ctx.now}
    async with unit_of_work(run.ctx.db, run.ctx.org_id) as uow:
        await uow.session.execute(
            pg_insert(gcal_events)
            .values(
                org_id=run.ctx.org_id, calendar_id=run.calendar_id, booking_id=uuid.UUID(booking_id), **values
            )
            .on_conflict_do_update(index_elements=["org_id", "calendar_id", "booking_id"], set_=values)
        )


def _event_body(run: Pass, booking: booking_pb2.Booking) -> dict[str, Any]:
    """The event for a booking: enough for a crew (who, where, which team, status), no contact details."""
    team = run.teams.get(booking.team_id, "") if booking.team_id else ""
    status = booking.status.replace("_", " ")
    summary = f"Cleaning: {booking.client_name}"
    if booking.status == "pending":
        summary += " (pending)"
    lines = [
        f"Status: {status}",
        f"Team: {team or 'not assigned'}",
        f"Type: {booking.cleaning_type.replace('_', ' ')}",
    ]
    if booking.address:
        lines.append(f"Address: {booking.address}")
    lines.append(f"Booking {booking.id}")
    zone = booking.time_zone or "UTC"
    return {
        "id": uuid.UUID(booking.id).hex,
        "summary": summary,
        "description": "\n".join(lines),
        "location": booking.address,
        "start": {"dateTime": _rfc3339(from_ts(booking.starts_at, "starts_at")), "timeZone": zone},
        "end": {"dateTime": _rfc3339(from_ts(booking.ends_at, "ends_at")), "timeZone": zone},
        "status": "tentative" if booking.status == "pending" else "confirmed",
        "transparency": "opaque",
        "extendedProperties": {"private": {"cws_booking_id": booking.id, "cws_org_id": str(run.ctx.org_id)}},
    }


def _hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
