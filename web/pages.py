"""Rendering pages and reading forms, the same way on every page.

`render` gives every template the session's CSRF token, the signed-in person, the read-only state and
the one-time flash message. `read_form` checks the CSRF proof first. `form_error` turns a gateway
Problem+JSON into the page's errors: by field where the problem names one, else one message on top."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from web.api import ApiError, gateway_of
from web.security import check_form_origin
from web.session import Session
from web.settings import WebSettings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _when(value: Any, tz: str = "UTC", fmt: str = "%a %d %b %Y %H:%M") -> str:
    """An ISO timestamp shown in a time zone (the org's where known)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(ZoneInfo(tz or "UTC")).strftime(fmt)
    except (KeyError, ValueError):
        return moment.strftime(fmt)


def _money(cents: Any, currency: str = "") -> str:
    try:
        amount = int(cents) / 100
    except (TypeError, ValueError):
        return ""
    return f"{amount:,.2f} {currency.upper()}".strip()


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["money"] = _money


def settings_of(request: Request) -> WebSettings:
    settings: WebSettings = request.app.state.settings
    return settings


def session_of(request: Request) -> Session:
    return request.state.session  # type: ignore[no-any-return]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = session_of(request)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "csrf": session.csrf,
            "staff": session.staff,
            "read_only": request.state.read_only,
            "unavailable": getattr(request.state, "unavailable", []),
            "break_glass": session.get("break_glass"),
            "flash": session.pop_flash(),
            "errors": {},
            "problem": None,
            "values": {},
            **context,
        },
        status_code=status,
    )


async def read_form(request: Request) -> dict[str, Any]:
    """The posted form as a dict (a repeated field as a list), after the CSRF check."""
    form = await request.form()
    check_form_origin(request, str(form.get("csrf") or ""))
    values: dict[str, Any] = {}
    for key in form:
        items = form.getlist(key)
        values[key] = items if len(items) > 1 else items[0]
    values.pop("csrf", None)
    return values


def form_error(error: ApiError) -> dict[str, Any]:
    """Template context for a refused form: errors by field, and the problem itself."""
    return {"errors": error.field_errors, "problem": error}


def redirect(url: str) -> RedirectResponse:
    """After a successful post: 303 so a reload does not post again."""
    return RedirectResponse(url, status_code=303)


async def fetch_one(request: Request, path: str, what: str) -> dict[str, Any]:
    """One resource for a page; an id that is not even well formed is no such page either (the
    gateway's 422 for a path parameter), as another org's id is (the gateway's 404)."""
    try:
        found: dict[str, Any] = await gateway_of(request).call(request, "GET", path)
    except ApiError as error:
        if error.status == 422:
            raise ApiError(404, {"code": "not_found", "detail": f"There is no such {what}."}) from None
        raise
    return found


def status_of(error: ApiError) -> int:
    """The status a page answers with when the gateway refused its form: the gateway's 4xx, else 503."""
    return error.status if 400 <= error.status < 500 else 503


def public_photo_url(request: Request, url: str) -> str:
    """The gateway mints links on the host the web reached it by (server to server); the browser must
    load them from the gateway as it sees it: WEB_GATEWAY_PUBLIC_URL, or this origin when empty."""
    parts = urlsplit(url)
    base = str(settings_of(request).web_gateway_public_url or "").rstrip("/")
    return base + parts.path + ("?" + parts.query if parts.query else "")
