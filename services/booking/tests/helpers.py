"""Small helpers shared by the booking tests: staff sign-in and booking creation over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx


async def owner_headers(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, str]:
    response = await http.post(
        f"{url}/v1/auth/login", json={"email": org.owner_email, "password": org.owner_password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def staff_headers(
    http: httpx.AsyncClient, url: str, owner: dict[str, str], role: str
) -> dict[str, str]:
    """A new user of the owner's org with `role`, signed in with the temporary password."""
    import uuid

    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    created = await http.post(f"{url}/v1/iam/users", headers=owner, json={"email": email, "role": role})
    assert created.status_code == 201, created.text
    login = await http.post(
        f"{url}/v1/auth/login", json={"email": email, "password": created.json()["temp_password"]}
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


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
