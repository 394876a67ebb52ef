"""The clients list (issue 16). The suite stores no client: the gateway's /v1/admin/clients groups the
org's bookings by client email (name and phone from the latest booking), latest booking first. Search
by part of the email or name, a page at a time."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from web.api import gateway_of
from web.org_zone import known_zone
from web.pages import render

router = APIRouter(prefix="/console")

CLIENTS_PER_PAGE = 25
# As the gateway allows: a longer search is cut (not refused), an offset out of range starts over.
MAX_QUERY = 200
MAX_OFFSET = 1_000_000


def _offset(typed: str) -> int:
    try:
        value = int(typed)
    except ValueError:
        return 0
    return value if 0 <= value <= MAX_OFFSET else 0


@router.get("/clients", response_class=HTMLResponse)
async def clients_list(request: Request, q: str = "", offset: str = "0") -> HTMLResponse:
    query = q.strip()[:MAX_QUERY]
    start = _offset(offset)
    params: dict[str, str | int] = {"limit": CLIENTS_PER_PAGE, "offset": start}
    if query:
        params["q"] = query
    found = await gateway_of(request).call(request, "GET", "/v1/admin/clients", params=params)
    total = int(found.get("total") or 0)
    return render(
        request,
        "clients_list.html",
        clients=found.get("clients") or [],
        total=total,
        offset=start,
        values={"q": query},
        newer=max(start - CLIENTS_PER_PAGE, 0) if start else None,
        older=start + CLIENTS_PER_PAGE if start + CLIENTS_PER_PAGE < total else None,
        tz=(await known_zone(request) or "UTC"),
    )
