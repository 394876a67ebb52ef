"""The org's integrations (/admin/settings/integrations): Google Calendar and QuickBooks Online.

The page lists both providers with what the integrations service knows of each (configured here or
not, connected or not, the account, the last sync and its counts and error), and an OWNER or ADMIN
connects, chooses the calendar, syncs now and disconnects from it. It is also the OAuth redirect URI
both providers send the person back to (the seed's path, outside /console on purpose), so a GET with
`?code=&state=` (or `?error=`) completes the connection first and then redirects to itself without
the query, with the outcome shown once.

Connect posts here, asks the gateway for an authorization URL and answers 303 to it: the CSP's
`form-action` allows https (and the local fakes' http://127.0.0.1 in dev and test)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from web.api import ApiError, gateway_of
from web.org_zone import org_zone
from web.pages import form_error, read_form, redirect, render, session_of

router = APIRouter()

PAGE = "/admin/settings/integrations"
API = "/v1/admin/integrations"
PROVIDERS = ("google_calendar", "quickbooks")
NAMES = {"google_calendar": "Google Calendar", "quickbooks": "QuickBooks Online"}
# The settings the integrations service needs before a provider can be connected.
SETTINGS = {
    "google_calendar": ("GOOGLE_OAUTH_CLIENT_ID", "GOOGLE_OAUTH_CLIENT_SECRET", "GOOGLE_OAUTH_REDIRECT_URI"),
    "quickbooks": (
        "QUICKBOOKS_OAUTH_CLIENT_ID",
        "QUICKBOOKS_OAUTH_CLIENT_SECRET",
        "QUICKBOOKS_OAUTH_REDIRECT_URI",
    ),
}
MANAGERS = frozenset({"OWNER", "ADMIN"})
# Why a "sync now" did nothing, in words (SyncResponse.skip_reason).
SKIPPED = {
    "not_configured": "it is not configured on the server",
    "not_connected": "it is not connected",
    "not_due": "the last pass was too recent",
    "no_calendar": "no calendar is chosen yet",
    "breaker_open": "the provider failed several times in a row; the next try is in a minute",
    "revoked": "the grant was revoked; connect again",
}
# Refusals a person can fix on the same page (a calendar that is not theirs, a team of another org).
FIXABLE = frozenset({400, 404, 409, 422})
# The one-time problem a redirect carries to the page (the outcome of a provider's redirect back).
PROBLEM_KEY = "integrations_problem"


def _provider(name: str) -> str:
    """A provider this page knows, else the web's 404 (never a gateway call with a made-up name)."""
    if name not in PROVIDERS:
        raise ApiError(404, {"code": "not_found", "detail": "There is no such integration."})
    return name


def _counts(counts: Any) -> str:
    if not isinstance(counts, dict) or not counts:
        return ""
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(counts.items()))


def _view(found: dict[str, Any]) -> dict[str, Any]:
    """One provider's row, with both providers always present (an older service answering one)."""
    provider = str(found.get("provider") or "")
    sync = found.get("sync") or {}
    return {
        **found,
        "provider": provider,
        "name": NAMES.get(provider, provider),
        "status": str(found.get("status") or "disconnected"),
        "settings": SETTINGS.get(provider, ()),
        "sync": sync,
        "counts_text": _counts(sync.get("counts")),
    }


async def _page(request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    gateway = gateway_of(request)
    # The first read alone: it refreshes an expiring token before the others go out together.
    listed = await gateway.call(request, "GET", API)
    by_provider = {str(i.get("provider")): i for i in listed.get("integrations") or []}
    rows = [_view(by_provider.get(p) or {"provider": p, "status": "disconnected"}) for p in PROVIDERS]
    staff = session_of(request).staff or {}
    manager = str(staff.get("role", "")) in MANAGERS
    google = rows[0]
    calendars: list[dict[str, Any]] = []
    calendars_problem: ApiError | None = None
    teams: list[dict[str, Any]] = []
    if manager and google["status"] == "connected":

        async def calendar_list() -> list[dict[str, Any]]:
            answer = await gateway.call(request, "GET", f"{API}/google_calendar/calendars")
            return list(answer.get("calendars") or [])

        results = await asyncio.gather(
            calendar_list(), gateway.call(request, "GET", "/v1/admin/teams"), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ApiError):
                raise result
        calendar_answer, team_answer = results
        if isinstance(calendar_answer, ApiError):
            # Google down, or the grant gone: the rest of the page still shows (and says why).
            calendars_problem = calendar_answer
        else:
            calendars = calendar_answer  # type: ignore[assignment]
        if isinstance(team_answer, ApiError):
            if team_answer.status >= 500:
                raise team_answer
        else:
            teams = list(team_answer.get("teams") or [])  # type: ignore[union-attr]
    stored = session_of(request).get(PROBLEM_KEY)
    if isinstance(stored, dict) and "problem" not in context:
        session_of(request).drop(PROBLEM_KEY)
        context["problem"] = ApiError(int(stored.get("status") or 400), dict(stored.get("problem") or {}))
    zone = await org_zone(request)
    context.setdefault("failed", "")
    return render(
        request,
        "integrations.html",
        status=status,
        integrations=rows,
        manager=manager,
        calendars=calendars,
        calendars_problem=calendars_problem,
        teams=teams,
        team_names={t["id"]: t["name"] for t in teams},
        tz=zone.key,
        **context,
    )


async def _complete(request: Request) -> RedirectResponse:
    """The provider sent the person back here. A GET that changes state is acceptable here, unlike
    anywhere else in the console: the state it carries is single-use, expires in minutes, and is bound
    to the user (and org) who pressed Connect, so a forged link completes nothing for anyone else; and
    it is the only way the provider can come back. The redirect then drops code and state from the
    address bar (and from the history)."""
    query = request.query_params
    body = {
        "state": query.get("state", ""),
        "code": query.get("code", ""),
        "realm_id": query.get("realmId", ""),
        "error": query.get("error", ""),
    }
    session = session_of(request)
    try:
        answer = await gateway_of(request).call(request, "POST", f"{API}/callback", json=body)
    except ApiError as error:
        session.set(PROBLEM_KEY, {"status": error.status, "problem": error.problem})
        return redirect(PAGE)
    integration = answer.get("integration") or {}
    provider = str(integration.get("provider") or "")
    name = NAMES.get(provider, "The integration")
    if provider == "google_calendar":
        session.flash(f"{name} connected. Choose the calendar to sync below.")
    elif integration.get("account_name"):
        session.flash(f"{name} connected to {integration['account_name']}.")
    else:
        session.flash(f"{name} connected.")
    return redirect(PAGE)


@router.get(PAGE, response_model=None)
async def integrations_page(request: Request) -> Response:
    query = request.query_params
    if any(key in query for key in ("code", "state", "error")):
        return await _complete(request)
    return await _page(request)


@router.post(PAGE + "/{provider}/connect", response_model=None)
async def connect(request: Request, provider: str) -> Response:
    form = await read_form(request)
    provider = _provider(provider)
    try:
        started = await gateway_of(request).call(request, "POST", f"{API}/{provider}/connect")
    except ApiError as error:
        if error.status not in FIXABLE:
            raise
        return await _page(request, status=error.status, failed=provider, values=form, **form_error(error))
    # To the provider's consent page (https, or the local fakes in dev and test: web/security.py).
    return RedirectResponse(str(started["authorization_url"]), status_code=303)


@router.post(PAGE + "/google_calendar/calendar", response_model=None)
async def choose_calendar(request: Request) -> Response:
    form = await read_form(request)
    body = {
        "calendar_id": str(form.get("calendar_id") or "").strip(),
        "busy_team_id": str(form.get("busy_team_id") or "").strip() or None,
    }
    if not body["calendar_id"]:
        return await _page(
            request,
            status=422,
            failed="calendar",
            values=form,
            errors={"calendar_id": "choose a calendar"},
        )
    try:
        chosen = await gateway_of(request).call(request, "PUT", f"{API}/google_calendar/calendar", json=body)
    except ApiError as error:
        if error.status not in FIXABLE:
            raise
        return await _page(request, status=error.status, failed="calendar", values=form, **form_error(error))
    integration = chosen.get("integration") or {}
    account = integration.get("account_name") or integration.get("account_id") or body["calendar_id"]
    session_of(request).flash(f"Bookings now sync with the calendar {account}.")
    return redirect(PAGE)


@router.post(PAGE + "/{provider}/sync", response_model=None)
async def sync_now(request: Request, provider: str) -> Response:
    form = await read_form(request)
    provider = _provider(provider)
    try:
        answer = await gateway_of(request).call(request, "POST", f"{API}/{provider}/sync")
    except ApiError as error:
        # The provider down (503) or rate limiting us beyond the wait: the pass's error is recorded
        # and shown in the row; this says so beside the button, not on an error page.
        return await _page(request, status=_status(error), failed=provider, values=form, **form_error(error))
    name = NAMES[provider]
    if answer.get("skipped"):
        # Not an error of the request, but nothing was done: shown as a problem, not a success.
        reason = str(answer.get("skip_reason") or "")
        detail = f"{name} did not sync: {SKIPPED.get(reason, reason or 'skipped')}."
        session_of(request).set(PROBLEM_KEY, {"status": 409, "problem": {"detail": detail}})
    else:
        counts = _counts(answer.get("counts"))
        session_of(request).flash(f"{name} synced" + (f": {counts}." if counts else "."))
    return redirect(PAGE)


@router.post(PAGE + "/{provider}/disconnect", response_model=None)
async def disconnect(request: Request, provider: str) -> Response:
    form = await read_form(request)
    provider = _provider(provider)
    try:
        answer = await gateway_of(request).call(request, "POST", f"{API}/{provider}/disconnect")
    except ApiError as error:
        if error.status not in FIXABLE:
            raise
        return await _page(request, status=error.status, failed=provider, values=form, **form_error(error))
    name = NAMES[provider]
    if answer.get("revoked_at_provider") is False:
        session_of(request).flash(
            f"{name} disconnected. The provider could not be reached to revoke the grant: "
            "remove the app from the account's connected apps there."
        )
    else:
        session_of(request).flash(f"{name} disconnected.")
    return redirect(PAGE)


def _status(error: ApiError) -> int:
    return error.status if 400 <= error.status < 600 else 502
