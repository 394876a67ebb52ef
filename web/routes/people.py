"""Teams, workers and blackouts (/console/teams) and the org's users (/console/users).

Each form posts to its own URL and, when the gateway refuses it (422, 409), the page is drawn again
with the errors beside the fields of that one form (`failed` names it: a page of per-row forms would
otherwise show one error on every row). Anything else (another org's id: 404; a role that may not:
403) is the error page. Secrets the gateway shows once (a worker's portal link, a temporary password)
are rendered straight from the POST's answer, never stored, and marked no-store."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from web.api import ApiError, gateway_of
from web.org_zone import org_zone
from web.pages import form_error, read_form, redirect, render, session_of, settings_of
from web.routes.operations import get

router = APIRouter()

ROLES = ("ADMIN", "DISPATCHER", "FINANCE", "VIEWER", "OWNER")
USERS_PAGE = 50
# Refusals a person can fix on the same page; the rest go to the error page.
FIXABLE = frozenset({400, 409, 422})
NO_STORE = {"Cache-Control": "no-store"}


async def call(request: Request, method: str, path: str, body: Any = None) -> Any:
    return await gateway_of(request).call(request, method, path, json=body)


def _text(form: dict[str, Any], name: str) -> str:
    return str(form.get(name) or "").strip()


# --- teams, workers, blackouts ----------------------------------------------------------------


async def _teams_page(request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    # The first read alone: it refreshes an expiring token before the others go out together.
    teams = (await get(request, "/v1/admin/teams")).get("teams") or []
    workers, blackouts = await asyncio.gather(
        get(request, "/v1/admin/workers"), get(request, "/v1/admin/blackouts")
    )
    zone = await org_zone(request)
    context.setdefault("failed", "")
    workers = workers.get("workers") or []
    names = {t["id"]: t["name"] for t in teams} | {w["id"]: w["name"] for w in workers}
    return render(
        request,
        "people_teams.html",
        status=status,
        teams=teams,
        workers=workers,
        team_names={t["id"]: t["name"] for t in teams},
        blackouts=sorted(blackouts.get("blackouts") or [], key=lambda b: str(b.get("starts_at"))),
        names=names,
        tz=zone.key,
        period=default_period(datetime.now(zone)),
        **context,
    )


async def _write(
    request: Request,
    form_id: str,
    values: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    fields: dict[str, str] | None = None,
) -> Response | None:
    """The gateway call; None when it worked, else the page again with the errors of `form_id`.
    `fields` maps the gateway's field names to the form's (the team and worker forms share a page,
    so their `name` inputs are named apart)."""
    try:
        await call(request, method, path, body)
    except ApiError as error:
        if error.status not in FIXABLE:
            raise
        context = form_error(error)
        context["errors"] = {(fields or {}).get(k, k): v for k, v in context["errors"].items()}
        return await _teams_page(request, status=error.status, failed=form_id, values=values, **context)
    return None


@router.get("/console/teams", response_class=HTMLResponse)
async def teams_page(request: Request) -> HTMLResponse:
    return await _teams_page(request)


@router.post("/console/teams", response_model=None)
async def create_team(request: Request) -> Response:
    form = await read_form(request)
    name = _text(form, "team_name")
    body = {"name": name}
    refused = await _write(
        request, "team-new", form, "POST", "/v1/admin/teams", body, fields={"name": "team_name"}
    )
    if refused:
        return refused
    session_of(request).flash(f"Team {name} created.")
    return redirect("/console/teams")


@router.post("/console/teams/{team_id}/rename", response_model=None)
async def rename_team(request: Request, team_id: str) -> Response:
    form = await read_form(request)
    name = _text(form, "name")
    path = f"/v1/admin/teams/{team_id}"
    refused = await _write(request, f"team-{team_id}", form, "PATCH", path, {"name": name})
    if refused:
        return refused
    session_of(request).flash(f"Team renamed to {name}.")
    return redirect("/console/teams")


@router.post("/console/teams/{team_id}/active", response_model=None)
async def set_team_active(request: Request, team_id: str) -> Response:
    form = await read_form(request)
    active = form.get("active") == "true"
    path = f"/v1/admin/teams/{team_id}"
    refused = await _write(request, f"team-{team_id}", form, "PATCH", path, {"active": active})
    if refused:
        return refused
    session_of(request).flash("Team activated." if active else "Team deactivated.")
    return redirect("/console/teams")


@router.post("/console/teams/{team_id}/delete", response_model=None)
async def delete_team(request: Request, team_id: str) -> Response:
    form = await read_form(request)
    refused = await _write(request, f"team-{team_id}", form, "DELETE", f"/v1/admin/teams/{team_id}", None)
    if refused:
        return refused
    session_of(request).flash("Team deleted.")
    return redirect("/console/teams")


@router.post("/console/workers", response_model=None)
async def create_worker(request: Request) -> Response:
    form = await read_form(request)
    body: dict[str, str | None] = {
        "name": _text(form, "worker_name"),
        "email": _text(form, "email"),
        "phone": _text(form, "phone"),
        "role": _text(form, "role"),
        "team_id": _text(form, "team_id") or None,
    }
    refused = await _write(
        request, "worker-new", form, "POST", "/v1/admin/workers", body, fields={"name": "worker_name"}
    )
    if refused:
        return refused
    session_of(request).flash(f"Worker {body['name']} added.")
    return redirect("/console/teams#workers")


@router.post("/console/workers/{worker_id}/team", response_model=None)
async def move_worker(request: Request, worker_id: str) -> Response:
    form = await read_form(request)
    # An empty choice detaches the worker (the gateway takes team_id null for that).
    body = {"team_id": _text(form, "team_id") or None}
    path = f"/v1/admin/workers/{worker_id}"
    refused = await _write(request, f"worker-{worker_id}", form, "PATCH", path, body)
    if refused:
        return refused
    session_of(request).flash("Worker moved." if body["team_id"] else "Worker is in no team now.")
    return redirect("/console/teams#workers")


@router.post("/console/workers/{worker_id}/delete", response_model=None)
async def delete_worker(request: Request, worker_id: str) -> Response:
    form = await read_form(request)
    path = f"/v1/admin/workers/{worker_id}"
    refused = await _write(request, f"worker-{worker_id}", form, "DELETE", path, None)
    if refused:
        return refused
    session_of(request).flash("Worker deleted.")
    return redirect("/console/teams#workers")


def _public_base(request: Request) -> str:
    configured = str(getattr(settings_of(request), "web_public_url", "") or "")
    return (configured or str(request.base_url)).rstrip("/")


@router.post("/console/workers/{worker_id}/portal-link", response_model=None)
async def portal_link(request: Request, worker_id: str) -> Response:
    form = await read_form(request)
    try:
        minted = await call(request, "POST", f"/v1/admin/workers/{worker_id}/portal-link")
    except ApiError as error:
        if error.status not in FIXABLE:
            raise
        return await _teams_page(
            request, status=error.status, failed=f"worker-{worker_id}", values=form, **form_error(error)
        )
    workers = (await get(request, "/v1/admin/workers")).get("workers") or []
    worker = next((w for w in workers if w.get("id") == worker_id), {"name": "the worker"})
    zone = await org_zone(request)
    # The worker portal is served by this web process under /portal; the gateway's link is the
    # callback path it expects there.
    link = f"{_public_base(request)}/portal{minted['link']}"
    response = render(
        request,
        "people_portal_link.html",
        worker=worker,
        link=link,
        expires_at=minted.get("expires_at"),
        tz=zone.key,
    )
    response.headers.update(NO_STORE)
    return response


@router.post("/console/workers/{worker_id}/portal-revoke", response_model=None)
async def portal_revoke(request: Request, worker_id: str) -> Response:
    await read_form(request)
    revoked = await call(request, "POST", f"/v1/admin/workers/{worker_id}/portal/revoke")
    session_of(request).flash(
        f"Portal access ended: {revoked.get('revoked_sessions', 0)} session(s) signed out, "
        f"{revoked.get('revoked_links', 0)} unused link(s) revoked."
    )
    return redirect("/console/teams#workers")


def _local_instant(value: str, zone: Any) -> str | None:
    """A datetime-local field (no offset) read in the org's zone, as the gateway wants (ISO + offset)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).isoformat()


@router.post("/console/blackouts", response_model=None)
async def create_blackout(request: Request) -> Response:
    form = await read_form(request)
    zone = await org_zone(request)
    kind, _, target = _text(form, "target").partition(":")
    errors: dict[str, str] = {}
    if kind not in ("team", "worker") or not target:
        errors["target"] = "choose a team or a worker"
    starts, ends = (
        _local_instant(_text(form, "starts_at"), zone),
        _local_instant(_text(form, "ends_at"), zone),
    )
    if starts is None:
        errors["starts_at"] = "must be a date and time"
    if ends is None:
        errors["ends_at"] = "must be a date and time"
    if errors:
        return await _teams_page(request, status=422, failed="blackout-new", values=form, errors=errors)
    body = {
        "team_id": target if kind == "team" else None,
        "worker_id": target if kind == "worker" else None,
        "starts_at": starts,
        "ends_at": ends,
        "reason": _text(form, "reason"),
    }
    refused = await _write(request, "blackout-new", form, "POST", "/v1/admin/blackouts", body)
    if refused:
        return refused
    session_of(request).flash("Blackout added.")
    return redirect("/console/teams#blackouts")


@router.post("/console/blackouts/{blackout_id}/delete", response_model=None)
async def delete_blackout(request: Request, blackout_id: str) -> Response:
    form = await read_form(request)
    path = f"/v1/admin/blackouts/{blackout_id}"
    refused = await _write(request, f"blackout-{blackout_id}", form, "DELETE", path, None)
    if refused:
        return refused
    session_of(request).flash("Blackout removed.")
    return redirect("/console/teams#blackouts")


def default_period(now: datetime) -> dict[str, str]:
    """The blackout form's starting values: tomorrow, a working day."""
    day = (now + timedelta(days=1)).date()
    return {"starts_at": f"{day.isoformat()}T08:00", "ends_at": f"{day.isoformat()}T17:00"}


# --- users ------------------------------------------------------------------------------------


async def _users_page(request: Request, offset: int = 0, status: int = 200, **context: Any) -> HTMLResponse:
    listed = await gateway_of(request).call(
        request, "GET", "/v1/iam/users", params={"limit": USERS_PAGE, "offset": offset}
    )
    zone = await org_zone(request)
    return render(
        request,
        "people_users.html",
        status=status,
        users=listed.get("users") or [],
        total=int(listed.get("total") or 0),
        offset=offset,
        page=USERS_PAGE,
        role_options=[("", "Choose…")] + [(role, role.title()) for role in ROLES],
        tz=zone.key,
        **context,
    )


@router.get("/console/users", response_class=HTMLResponse)
async def users_page(request: Request, offset: int = 0) -> HTMLResponse:
    return await _users_page(request, offset=max(0, min(offset, 1_000_000)))


def _password_page(request: Request, answer: dict[str, Any], title: str) -> HTMLResponse:
    response = render(
        request, "people_password.html", user=answer["user"], password=answer["temp_password"], title=title
    )
    response.headers.update(NO_STORE)
    return response


@router.post("/console/users", response_model=None)
async def create_user(request: Request) -> Response:
    form = await read_form(request)
    body = {"email": _text(form, "email"), "full_name": _text(form, "full_name"), "role": _text(form, "role")}
    try:
        created = await call(request, "POST", "/v1/iam/users", body)
    except ApiError as error:
        if error.status not in FIXABLE:
            raise
        return await _users_page(request, status=error.status, values=form, **form_error(error))
    return _password_page(request, created, "User created")


@router.post("/console/users/{user_id}/reset-password", response_model=None)
async def reset_password(request: Request, user_id: str) -> Response:
    await read_form(request)
    answer = await call(request, "POST", f"/v1/iam/users/{user_id}/reset-password")
    return _password_page(request, answer, "Password reset")


@router.post("/console/users/{user_id}/sign-out", response_model=None)
async def sign_out_everywhere(request: Request, user_id: str) -> Response:
    await read_form(request)
    revoked = await call(request, "POST", f"/v1/iam/users/{user_id}/logout")
    session_of(request).flash(
        f"Signed out everywhere: {revoked.get('revoked_sessions', 0)} session(s) ended."
    )
    return redirect("/console/users")
