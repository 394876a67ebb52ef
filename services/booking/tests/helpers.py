"""Small helpers shared by the booking tests: booking creation over HTTP, and waiting for the org's
booking profile. Signing in is tools.testkit's (`owner`, `staff`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tools.testkit import eventually, sql


def slot(hours_from_now: float, minutes: int = 0) -> str:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours_from_now, minutes=minutes)
    return start.isoformat()


async def create_booking(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    body = {
        "starts_at": slot(48),
        "duration_minutes": 120,
        "client_name": "Casey Client",
        "client_email": "casey@example.com",
        "cleaning_type": "standard",
        "beds": 2,
        "baths": 1,
        **fields,
    }
    response = await http.post(f"{url}/v1/admin/bookings", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def applied_profile(stack: Any, org_id: str) -> tuple[str, str, str]:
    """(public_key, time_zone, name) of the org's booking profile, once booking has applied the org's
    cws.iam.org.created event (a profile made lazily before it has no name yet). As superuser: the
    test reads across RLS, as the consumer writes."""

    async def named() -> tuple[str, str, str] | None:
        rows = await sql(
            stack.admin_url,
            "SELECT public_key, time_zone, name FROM booking.org_profiles WHERE org_id = %s AND name <> ''",
            (org_id,),
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    return await eventually(named, message="booking applied the org's cws.iam.org.created event")
