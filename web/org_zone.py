"""The org's time zone, for pages that show or read local times.

The gateway has no call for the org's profile, but every booking states its org's zone: the first one
seen is kept in the session (per org, so switching accounts cannot mix them up). While an org has no
booking yet, None (the pages say their times are UTC)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request

from web.api import ApiError, gateway_of
from web.pages import session_of

KEY = "org_tz"


def zone_of(name: str) -> ZoneInfo:
    """A zone by name; UTC for an empty or unknown name."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def remember_zone(request: Request, bookings: list[dict[str, Any]]) -> None:
    session = session_of(request)
    org_id = (session.staff or {}).get("org_id", "")
    found = next((str(b["time_zone"]) for b in bookings if b.get("time_zone")), "")
    if found and session.get(KEY) != {"org": org_id, "tz": found}:
        session.set(KEY, {"org": org_id, "tz": found})


async def known_zone(request: Request) -> str | None:
    """The org's zone name, remembered or read off one booking; None while it has none (or the role
    may not read bookings)."""
    session = session_of(request)
    org_id = (session.staff or {}).get("org_id", "")
    cached = session.get(KEY)
    if isinstance(cached, dict) and cached.get("org") == org_id and cached.get("tz"):
        return str(cached["tz"])
    try:
        found = await gateway_of(request).call(request, "GET", "/v1/admin/bookings", params={"limit": 1})
    except ApiError as error:
        if error.status == 403:
            return None
        raise
    bookings = found.get("bookings") or []
    remember_zone(request, bookings)
    return str(bookings[0].get("time_zone") or "UTC") if bookings else None


async def org_zone(request: Request) -> ZoneInfo:
    return zone_of(await known_zone(request) or "UTC")
