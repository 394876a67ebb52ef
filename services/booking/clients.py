"""The org's clients (issue 16). A client is not stored anywhere: it is the org's bookings that share
a lower-cased client_email, with the name and phone of the latest of them (by start). Bookings
without an email (typed in by hand, or erased) belong to no client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from libs.common.db import UnitOfWork
from libs.common.errors import invalid

MAX_QUERY = 200

# `org_id = :org` besides row-level security, as analytics' cohorts do: a plain predicate the
# planner matches to an org_id index (the policy's current_setting() is only a one-time filter). The
# org's bookings are grouped on each call; no index of its own (1,000 bookings of one org among
# 200,000: about 5 ms). The search is on the email and the name shown (the latest booking's), both
# lower-cased, with LIKE's wildcards escaped.
_CLIENTS = """
    WITH clients AS (
        SELECT lower(client_email) AS email,
               (array_agg(client_name ORDER BY starts_at DESC, created_at DESC, id))[1] AS name,
               (array_agg(client_phone ORDER BY starts_at DESC, created_at DESC, id))[1] AS phone,
               count(*) AS bookings,
               min(starts_at) AS first_at,
               max(starts_at) AS last_at,
               count(*) FILTER (WHERE status IN ('pending', 'confirmed') AND starts_at >= now()) AS upcoming
          FROM booking.bookings
         WHERE org_id = :org AND client_email <> ''
         GROUP BY lower(client_email)
    )
"""
_SEARCH = " WHERE (email LIKE :pattern ESCAPE '\\' OR lower(name) LIKE :pattern ESCAPE '\\')"
_ORDER = " ORDER BY last_at DESC, email LIMIT :limit OFFSET :offset"
_PAGE = text(_CLIENTS + "SELECT * FROM clients" + _SEARCH + _ORDER)
_PAGE_ALL = text(_CLIENTS + "SELECT * FROM clients" + _ORDER)
_COUNT = text(_CLIENTS + "SELECT count(*) FROM clients" + _SEARCH)
_COUNT_ALL = text(_CLIENTS + "SELECT count(*) FROM clients")


@dataclass(frozen=True)
class Client:
    email: str
    name: str
    phone: str
    bookings: int
    first_booking_at: datetime
    last_booking_at: datetime
    upcoming_bookings: int


def like_pattern(query: str) -> str:
    """A case-insensitive substring pattern: `%`, `_` and `\\` in the query match themselves."""
    escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_clients(uow: UnitOfWork, *, q: str, limit: int, offset: int) -> tuple[list[Client], int]:
    q = q.strip()
    if len(q) > MAX_QUERY:
        raise invalid("q", f"must be at most {MAX_QUERY} characters")
    params: dict[str, object] = {"org": uow.org_id, "limit": limit, "offset": offset}
    if q:
        params["pattern"] = like_pattern(q)
    rows = (await uow.session.execute(_PAGE if q else _PAGE_ALL, params)).all()
    total = await uow.session.scalar(_COUNT if q else _COUNT_ALL, params)
    found = [
        Client(
            email=row.email,
            name=row.name,
            phone=row.phone,
            bookings=int(row.bookings),
            first_booking_at=row.first_at,
            last_booking_at=row.last_at,
            upcoming_bookings=int(row.upcoming),
        )
        for row in rows
    ]
    return found, int(total or 0)
