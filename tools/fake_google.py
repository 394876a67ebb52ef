"""A local Google Calendar (API v3, the subset google-api-python-client calls for gcal-sync) with
Google's OAuth 2.0 server beside it (tools/fake_oauth.py), for the integrations tests and `make dev`.

    google = FakeGoogle(log_dir).start()     # one process on a free port, logging to log_dir
    google.base_url                          # GOOGLE_CALENDAR_API_URL and the OAuth URLs' root
    google.control("rate-limit", {"count": 2, "retry_after": 1})
    google.stop() / google.kill()

Point GOOGLE_CALENDAR_API_URL at `base_url + "/"` (googleapiclient then calls `<it>calendar/v3/...`,
as it calls https://www.googleapis.com/calendar/v3/...) and GOOGLE_OAUTH_{AUTH,TOKEN,REVOKE}_URL at
`base_url + /oauth/{authorize,token,revoke}`.

Accounts: every OAuth grant is one Google user, with two calendars made on its first API call: its
primary calendar (id `owner-<grant>@fake-google.test`, also reachable as `primary`) and
`jobs-<grant>@group.calendar.google.com` ("Cleaning jobs"). Calendar ids are unique across grants, so
the control routes name a calendar alone. A refreshed access token is the same user.

API (under /calendar/v3; JSON; `Authorization: Bearer` checked against the OAuth server, else 401):
- `GET users/me/calendarList` (maxResults, pageToken).
- `GET calendars/{cal}/events`: timeMin (event ends after) / timeMax (starts before), showDeleted,
  singleEvents (accepted; recurrences are not expanded), maxResults (capped by the page size, 4 by
  default so every sync pages), pageToken, syncToken (then timeMin/timeMax/orderBy/q/updatedMin are
  a 400, deleted events are always included, and a token that is unknown, from another calendar or
  invalidated answers 410 `fullSyncRequired`). The last page carries `nextSyncToken`.
- `POST calendars/{cal}/events`: a client-supplied `id` (base32hex, 5-1024 characters) is kept; an id
  that exists (deleted events too) answers 409 `duplicate`.
- `GET|PUT|PATCH|DELETE calendars/{cal}/events/{id}`: a deleted event is still got (status
  cancelled); PUT replaces (and may restore a deleted event), PATCH merges objects; If-Match on an
  old etag is a 412; deleting a deleted event is a 410.
Every change bumps the event's `updated`, `etag` and `sequence`.

Control routes for tests (JSON): `POST /_control/rate-limit {"count", "retry_after", "status": 429 |
403, "after"}` (the next `count` API calls answer 429, or 403 rateLimitExceeded, with Retry-After;
after `after` more calls answered normally; with "method": only calls of that method, e.g. insert,
count); `POST /_control/fail {"count", "status", "after", "method"}` (the same with e.g. 503); `POST /_control/drop
{"method": "insert", "count"}` (the next `count` calls of that method are done, then the connection is
closed without an answer: the client never learns it worked); `POST /_control/delay {"method",
"seconds"}` (calls of that method are done, marked `done` in the call log, then answered after the
delay: time for a test to kill the caller); `POST /_control/expire-tokens`;
`POST /_control/revoke-grants`; `POST /_control/invalidate-sync-tokens {"calendar_id"}`;
`POST /_control/config {"page_size"}`; `POST /_control/events {"calendar_id", "summary", "start",
"end", "transparency", "status", "all_day", "id"}` (an event made by the user in Google's own UI);
`PATCH /_control/events/{cal}/{id}` (fields as the API's PATCH), `DELETE /_control/events/{cal}/{id}`;
`GET /_control/events?calendar_id=` (every event, deleted ones too); `GET /_control/calendars`;
`GET /_control/calls` (the API calls so far: method, operation, path, query, status, at);
`POST /_control/clear-faults` (rate limits, failures, drops and delays);
`POST /_control/reset` (calendars, events, faults, OAuth grants: all gone); `GET /_control/healthz`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from aiohttp import web

from tools.fake_oauth import FakeServer, OAuthServer

API = "/calendar/v3"
CONTROL = "/_control"
DEFAULT_PAGE_SIZE = 4
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
SYNC_TOKEN_FORBIDDEN = ("timeMin", "timeMax", "orderBy", "q", "updatedMin", "iCalUID")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rfc3339(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(moment * 1000) % 1000:03d}Z"
    )


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (Z or an offset) or a date (all-day events: midnight UTC here)."""
    text = value.strip()
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _when(value: Any) -> datetime:
    if not isinstance(value, dict):
        raise ValueError("start and end must be objects")
    if value.get("dateTime"):
        return parse_time(str(value["dateTime"]))
    if value.get("date"):
        return parse_time(str(value["date"]))
    raise ValueError("start and end need dateTime or date")


def google_error(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Google's JSON error body (what googleapiclient's HttpError parses)."""
    statuses = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
        410: "FAILED_PRECONDITION",
        412: "FAILED_PRECONDITION",
        429: "RESOURCE_EXHAUSTED",
    }
    domain = "usageLimits" if reason in ("rateLimitExceeded", "userRateLimitExceeded") else "global"
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "status": statuses.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN"),
        }
    }
    return web.json_response(body, status=status, headers=headers or {})


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Calendar:
    id: str
    summary: str
    owner: str  # the grant id
    primary: bool = False
    time_zone: str = "UTC"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Sync tokens issued before this change sequence answer 410 (invalidate-sync-tokens).
    tokens_valid_from: int = 0


@dataclass
class Fault:
    status: int
    count: int
    retry_after: float | None = None
    reason: str = ""
    # API calls answered normally before this fault begins.
    after: int = 0
    # Only calls of this method (insert, list, update...): "" = every call.
    method: str = ""


@dataclass
class GoogleState:
    oauth: OAuthServer
    page_size: int = DEFAULT_PAGE_SIZE
    calendars: dict[str, Calendar] = field(default_factory=dict)
    primary_of: dict[str, str] = field(default_factory=dict)  # grant id → primary calendar id
    faults: list[Fault] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)  # operation → calls to drop after doing them
    delays: dict[str, float] = field(default_factory=dict)  # operation → seconds before answering
    calls: list[dict[str, Any]] = field(default_factory=list)
    sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    last_sequence: int = 0
    initial_page_size: int = 0

    def __post_init__(self) -> None:
        self.initial_page_size = self.page_size

    def next_sequence(self) -> int:
        self.last_sequence = next(self.sequence)
        return self.last_sequence

    def reset(self) -> None:
        self.oauth.reset()
        self.calendars.clear()
        self.primary_of.clear()
        self.faults.clear()
        self.drops.clear()
        self.delays.clear()
        self.calls.clear()
        self.page_size = self.initial_page_size

    # --- accounts ---------------------------------------------------------------------------

    def account(self, grant_id: str) -> None:
        if grant_id in self.primary_of:
            return
        primary = Calendar(
            f"owner-{grant_id}@fake-google.test", f"owner-{grant_id}@fake-google.test", grant_id, True
        )
        jobs = Calendar(f"jobs-{grant_id}@group.calendar.google.com", "Cleaning jobs", grant_id)
        for calendar in (primary, jobs):
            self.calendars[calendar.id] = calendar
        self.primary_of[grant_id] = primary.id

    def calendar(self, calendar_id: str, grant_id: str | None) -> Calendar:
        """The calendar, as the grant's user sees it (None: the test's control routes see all)."""
        if grant_id is not None and calendar_id == "primary":
            calendar_id = self.primary_of[grant_id]
        found = self.calendars.get(calendar_id)
        if found is None or (grant_id is not None and found.owner != grant_id):
            raise ApiError(404, "notFound", "Not Found")
        return found

    # --- events -----------------------------------------------------------------------------

    def _stamp(self, event: dict[str, Any], *, new: bool = False) -> None:
        now = time.time()
        seq = self.next_sequence()
        event["updated"] = rfc3339(now)
        if new:
            event["created"] = event["updated"]
            event["sequence"] = 0
        else:
            event["sequence"] = int(event.get("sequence", 0)) + 1
        event["etag"] = f'"{seq}{secrets.randbelow(1000):03d}"'
        event["_seq"] = seq

    def _check(self, event: dict[str, Any]) -> None:
        try:
            start, end = _when(event.get("start")), _when(event.get("end"))
        except (ValueError, TypeError) as error:
            raise ApiError(400, "invalid", f"Invalid start or end: {error}") from error
        if end < start:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.")
        status = event.get("status", "confirmed")
        if status not in ("confirmed", "tentative", "cancelled"):
            raise ApiError(400, "invalid", "Invalid status")
        if event.get("transparency", "opaque") not in ("opaque", "transparent"):
            raise ApiError(400, "invalid", "Invalid transparency")

    def insert(self, calendar: Calendar, body: dict[str, Any]) -> dict[str, Any]:
        event_id = str(body.get("id") or secrets.token_hex(13))
        if not EVENT_ID.match(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id in calendar.events:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        event = {k: copy.deepcopy(v) for k, v in body.items() if not k.startswith("_")}
        event.update(
            kind="calendar#event",
            id=event_id,
            status=body.get("status", "confirmed"),
            iCalUID=f"{event_id}@google.com",
            htmlLink=f"https://calendar.google.com/event?eid={event_id}",
            organizer={"email": calendar.id, "self": True},
        )
        self._check(event)
        self._stamp(event, new=True)
        calendar.events[event_id] = event
        return event

    def event(self, calendar: Calendar, event_id: str) -> dict[str, Any]:
        found = calendar.events.get(event_id)
        if found is None:
            raise ApiError(404, "notFound", "Not Found")
        return found

    def replace(
        self, calendar: Calendar, event_id: str, body: dict[str, Any], if_match: str = ""
    ) -> dict[str, Any]:
        old = self.event(calendar, event_id)
        if if_match and if_match != old["etag"]:
            raise ApiError(412, "conditionNotMet", "Precondition Failed")
        event = {k: copy.deepcopy(v) for k, v in body.items() if not k.startswith("_")}
        for kept in ("kind", "iCalUID", "htmlLink", "organizer", "created", "sequence", "etag", "_seq"):
            event[kept] = old[kept]
        event["id"] = event_id
        event.setdefault("status", "confirmed")
        self._check(event)
        self._stamp(event)
        calendar.events[event_id] = event
        return event

    def patch(
        self, calendar: Calendar, event_id: str, body: dict[str, Any], if_match: str = ""
    ) -> dict[str, Any]:
        old = self.event(calendar, event_id)
        if if_match and if_match != old["etag"]:
            raise ApiError(412, "conditionNotMet", "Precondition Failed")
        event = copy.deepcopy(old)
        _merge(
            event,
            {
                k: v
                for k, v in body.items()
                if k not in ("id", "etag", "updated", "created") and not k.startswith("_")
            },
        )
        self._check(event)
        self._stamp(event)
        calendar.events[event_id] = event
        return event

    def delete(self, calendar: Calendar, event_id: str) -> None:
        event = self.event(calendar, event_id)
        if event["status"] == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        event["status"] = "cancelled"
        self._stamp(event)

    def listing(self, calendar: Calendar, query: Any) -> dict[str, Any]:
        sync_token, page_token = query.get("syncToken", ""), query.get("pageToken", "")
        if sync_token:
            forbidden = [name for name in SYNC_TOKEN_FORBIDDEN if name in query]
            if forbidden:
                raise ApiError(400, "invalid", f"Sync token cannot be used with {', '.join(forbidden)}")
        if page_token:
            state = _unpack(page_token, "p")
            if state is None or state.get("calendar") != calendar.id:
                raise ApiError(400, "invalid", "Invalid page token")
            since, snapshot, offset = state["since"], state["snapshot"], state["offset"]
            time_min, time_max, show_deleted = state["time_min"], state["time_max"], state["show_deleted"]
        else:
            snapshot, offset = self.last_sequence, 0
            time_min, time_max = query.get("timeMin", ""), query.get("timeMax", "")
            show_deleted = query.get("showDeleted", "false") == "true"
            since = 0
            if sync_token:
                token = _unpack(sync_token, "s")
                if (
                    token is None
                    or token.get("calendar") != calendar.id
                    or token["seq"] < calendar.tokens_valid_from
                ):
                    raise ApiError(
                        410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
                    )
                since, show_deleted = token["seq"], True
        try:
            lower = parse_time(time_min) if time_min else None
            upper = parse_time(time_max) if time_max else None
        except ValueError as error:
            raise ApiError(400, "invalid", f"Invalid timeMin or timeMax: {error}") from error
        matched = []
        for event in sorted(calendar.events.values(), key=lambda e: (e["_seq"], e["id"])):
            if not since < event["_seq"] <= snapshot:
                continue
            if event["status"] == "cancelled" and not show_deleted:
                continue
            if lower is not None and _when(event["end"]) <= lower:
                continue
            if upper is not None and _when(event["start"]) >= upper:
                continue
            matched.append(event)
        try:
            asked = int(query.get("maxResults", "250"))
        except ValueError as error:
            raise ApiError(400, "invalid", "Invalid maxResults") from error
        size = max(1, min(asked, self.page_size))
        page = matched[offset : offset + size]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": calendar.summary,
            "timeZone": calendar.time_zone,
            "updated": rfc3339(time.time()),
            "items": [_public(e) for e in page],
        }
        if offset + size < len(matched):
            body["nextPageToken"] = _pack(
                "p",
                calendar=calendar.id,
                since=since,
                snapshot=snapshot,
                offset=offset + size,
                time_min=time_min,
                time_max=time_max,
                show_deleted=show_deleted,
            )
        else:
            body["nextSyncToken"] = _pack("s", calendar=calendar.id, seq=snapshot)
        return body


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)


def _public(event: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in event.items() if not k.startswith("_")}


def _pack(kind: str, **values: Any) -> str:
    raw = json.dumps({"k": kind, **values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(token: str, kind: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(value, dict) or value.get("k") != kind:
        return None
    return value


# --- the HTTP front ------------------------------------------------------------------------------


class FakeGoogleApp:
    def __init__(self, state: GoogleState) -> None:
        self.state = state

    def app(self) -> web.Application:
        app = web.Application()
        self.state.oauth.add_routes(app)
        api = [
            ("GET", "/users/me/calendarList", "calendarList.list", self.calendar_list),
            ("GET", "/calendars/{cal}/events", "events.list", self.events_list),
            ("POST", "/calendars/{cal}/events", "events.insert", self.events_insert),
            ("GET", "/calendars/{cal}/events/{event}", "events.get", self.events_get),
            ("PUT", "/calendars/{cal}/events/{event}", "events.update", self.events_update),
            ("PATCH", "/calendars/{cal}/events/{event}", "events.patch", self.events_patch),
            ("DELETE", "/calendars/{cal}/events/{event}", "events.delete", self.events_delete),
        ]
        for method, path, operation, handler in api:
            app.router.add_route(method, API + path, self._api(operation, handler))
        control: list[tuple[str, str, Handler]] = [
            ("GET", "/healthz", self.c_health),
            ("POST", "/rate-limit", self.c_rate_limit),
            ("POST", "/fail", self.c_fail),
            ("POST", "/drop", self.c_drop),
            ("POST", "/delay", self.c_delay),
            ("POST", "/expire-tokens", self.c_expire),
            ("POST", "/revoke-grants", self.c_revoke),
            ("POST", "/invalidate-sync-tokens", self.c_invalidate),
            ("POST", "/config", self.c_config),
            ("POST", "/events", self.c_add_event),
            ("PATCH", "/events/{cal}/{event}", self.c_edit_event),
            ("DELETE", "/events/{cal}/{event}", self.c_delete_event),
            ("GET", "/events", self.c_events),
            ("GET", "/calendars", self.c_calendars),
            ("GET", "/calls", self.c_calls),
            ("POST", "/reset", self.c_reset),
            ("POST", "/clear-faults", self.c_clear_faults),
        ]
        for method, path, serve in control:
            app.router.add_route(method, CONTROL + path, serve)
        return app

    # --- the API's common part: auth, faults, the call log, errors ---------------------------

    def _api(
        self, operation: str, handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]]
    ) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            call = {
                "method": request.method,
                "operation": operation,
                "path": request.path,
                "query": dict(request.query),
                "at": time.time(),
            }
            self.state.calls.append(call)
            response = await self._answer(request, operation, handler, call)
            call["status"] = response.status
            return response

        return serve

    async def _answer(
        self,
        request: web.Request,
        operation: str,
        handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]],
        call: dict[str, Any],
    ) -> web.StreamResponse:
        verb = operation.split(".")[-1]
        fault = next((f for f in self.state.faults if f.method in ("", verb)), None)
        if fault is not None and fault.after > 0:
            fault.after -= 1
        elif fault is not None:
            fault.count -= 1
            if fault.count <= 0:
                self.state.faults.remove(fault)
            headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after is not None else {}
            if fault.status in (403, 429):
                reason = fault.reason or "rateLimitExceeded"
                return google_error(fault.status, reason, "Rate Limit Exceeded", headers)
            return google_error(fault.status, "backendError", "Backend Error", headers)
        token = self.state.oauth.bearer(request)
        if token is None:
            return google_error(
                401,
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        self.state.account(token.grant.grant_id)
        try:
            response = await handler(request, token.grant.grant_id)
        except ApiError as error:
            return google_error(error.status, error.reason, error.message)
        if self.state.delays.get(verb):
            call["done"] = True  # done at Google, not yet answered (a test may kill the caller now)
            await asyncio.sleep(self.state.delays[verb])
        if self.state.drops.get(verb, 0) > 0:
            self.state.drops[verb] -= 1
            # Done, but the client never hears it: the connection goes away without an answer.
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()
        return response

    async def calendar_list(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        items = [
            {
                "kind": "calendar#calendarListEntry",
                "id": c.id,
                "summary": c.summary,
                "timeZone": c.time_zone,
                "accessRole": "owner",
                **({"primary": True} if c.primary else {}),
            }
            for c in self.state.calendars.values()
            if c.owner == grant_id
        ]
        return web.json_response({"kind": "calendar#calendarList", "items": items, "nextSyncToken": "cl"})

    async def events_list(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        calendar = self.state.calendar(request.match_info["cal"], grant_id)
        return web.json_response(self.state.listing(calendar, request.query))

    async def events_insert(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        calendar = self.state.calendar(request.match_info["cal"], grant_id)
        event = self.state.insert(calendar, await _body(request))
        return web.json_response(_public(event))

    async def events_get(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        calendar = self.state.calendar(request.match_info["cal"], grant_id)
        return web.json_response(_public(self.state.event(calendar, request.match_info["event"])))

    async def events_update(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        calendar = self.state.calendar(request.match_info["cal"], grant_id)
        event = self.state.replace(
            calendar, request.match_info["event"], await _body(request), request.headers.get("If-Match", "")
        )
        return web.json_response(_public(event))

    async def events_patch(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        calendar = self.state.calendar(request.match_info["cal"], grant_id)
        event = self.state.patch(
            calendar, request.match_info["event"], await _body(request), request.headers.get("If-Match", "")
        )
        return web.json_response(_public(event))

    async def events_delete(self, request: web.Request, grant_id: str) -> web.StreamResponse:
        calendar = self.state.calendar(request.match_info["cal"], grant_id)
        self.state.delete(calendar, request.match_info["event"])
        return web.Response(status=204)

    # --- control ------------------------------------------------------------------------------

    async def c_health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def c_rate_limit(self, request: web.Request) -> web.Response:
        body = await _body(request)
        status = int(body.get("status", 429))
        reason = "rateLimitExceeded" if status == 403 else str(body.get("reason", "rateLimitExceeded"))
        retry_after = body.get("retry_after", 1)
        self.state.faults.append(
            Fault(
                status, int(body.get("count", 1)), None if retry_after is None else float(retry_after), reason
            )
        )
        return web.json_response({"faults": len(self.state.faults)})

    async def c_fail(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.state.faults.append(
            Fault(
                int(body.get("status", 503)),
                int(body.get("count", 1)),
                after=int(body.get("after", 0)),
                method=str(body.get("method", "")),
            )
        )
        return web.json_response({"faults": len(self.state.faults)})

    async def c_drop(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.state.drops[str(body.get("method", "insert"))] = int(body.get("count", 1))
        return web.json_response({"drops": self.state.drops})

    async def c_delay(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.state.delays[str(body.get("method", "insert"))] = float(body.get("seconds", 0))
        return web.json_response({"delays": self.state.delays})

    async def c_expire(self, _: web.Request) -> web.Response:
        return web.json_response({"expired": self.state.oauth.expire_access_tokens()})

    async def c_revoke(self, _: web.Request) -> web.Response:
        return web.json_response({"revoked": self.state.oauth.revoke_all()})

    async def c_invalidate(self, request: web.Request) -> web.Response:
        body = await _body(request)
        wanted = body.get("calendar_id")
        for calendar in self.state.calendars.values():
            if wanted in (None, calendar.id):
                calendar.tokens_valid_from = self.state.next_sequence()
        return web.json_response({})

    async def c_config(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if "page_size" in body:
            self.state.page_size = max(1, int(body["page_size"]))
        return web.json_response({"page_size": self.state.page_size})

    async def c_add_event(self, request: web.Request) -> web.Response:
        body = await _body(request)
        calendar = self._control_calendar(str(body.get("calendar_id", "")))
        event: dict[str, Any] = {
            "summary": body.get("summary", "Busy"),
            "start": _control_when(body.get("start"), bool(body.get("all_day"))),
            "end": _control_when(body.get("end"), bool(body.get("all_day"))),
            "transparency": body.get("transparency", "opaque"),
            "status": body.get("status", "confirmed"),
        }
        for name in ("id", "description", "location", "extendedProperties"):
            if name in body:
                event[name] = body[name]
        try:
            made = self.state.insert(calendar, event)
        except ApiError as error:
            return google_error(error.status, error.reason, error.message)
        return web.json_response(_public(made))

    async def c_edit_event(self, request: web.Request) -> web.Response:
        calendar = self._control_calendar(request.match_info["cal"])
        body = await _body(request)
        for name in ("start", "end"):
            if name in body and not isinstance(body[name], dict):
                body[name] = _control_when(body[name], False)
        try:
            event = self.state.patch(calendar, request.match_info["event"], body)
        except ApiError as error:
            return google_error(error.status, error.reason, error.message)
        return web.json_response(_public(event))

    async def c_delete_event(self, request: web.Request) -> web.Response:
        calendar = self._control_calendar(request.match_info["cal"])
        try:
            self.state.delete(calendar, request.match_info["event"])
        except ApiError as error:
            return google_error(error.status, error.reason, error.message)
        return web.json_response({})

    async def c_events(self, request: web.Request) -> web.Response:
        calendar = self._control_calendar(request.query.get("calendar_id", ""))
        events = sorted(calendar.events.values(), key=lambda e: e["_seq"])
        return web.json_response({"items": [_public(e) for e in events]})

    async def c_calendars(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "items": [
                    {"id": c.id, "summary": c.summary, "owner": c.owner, "primary": c.primary}
                    for c in self.state.calendars.values()
                ]
            }
        )

    async def c_calls(self, _: web.Request) -> web.Response:
        return web.json_response({"calls": self.state.calls})

    async def c_clear_faults(self, _: web.Request) -> web.Response:
        self.state.faults.clear()
        self.state.drops.clear()
        self.state.delays.clear()
        return web.json_response({})

    async def c_reset(self, _: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({})

    def _control_calendar(self, calendar_id: str) -> Calendar:
        found = self.state.calendars.get(calendar_id)
        if found is None:
            raise web.HTTPNotFound(
                text=f"no calendar {calendar_id!r} (calendars appear on a grant's first API call)"
            )
        return found


def _control_when(value: Any, all_day: bool) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str) or not value:
        raise web.HTTPBadRequest(text="start and end are required (RFC 3339, or a date with all_day)")
    return {"date": value[:10]} if all_day else {"dateTime": value}


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise ApiError(400, "parseError", "Parse Error") from None
    if not isinstance(body, dict):
        raise ApiError(400, "parseError", "a JSON object expected")
    return body


# --- the process ---------------------------------------------------------------------------------


@dataclass
class FakeGoogle(FakeServer):
    """`python -m tools.fake_google` on a free port: `FakeGoogle(log_dir).start()`, `.base_url`,
    `.control(action, body)` for the /_control routes, `.stop()`, `.kill()`."""

    name: ClassVar[str] = "fake-google"
    module: ClassVar[str] = "tools.fake_google"
    health_path: ClassVar[str] = f"{CONTROL}/healthz"

    @property
    def api_url(self) -> str:
        """GOOGLE_CALENDAR_API_URL (the root googleapiclient adds calendar/v3/ to)."""
        return f"{self.base_url}/"

    def control(self, action: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        response = httpx.request(method, f"{self.base_url}{CONTROL}/{action}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    async def acontrol(self, action: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.request(method, f"{self.base_url}{CONTROL}/{action}", json=body)
        response.raise_for_status()
        return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local Google Calendar + OAuth (see the module docstring)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    state = GoogleState(oauth=OAuthServer(), page_size=args.page_size)
    web.run_app(
        FakeGoogleApp(state).app(),
        host="127.0.0.1",
        port=args.port,
        print=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
