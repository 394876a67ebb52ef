"""What the notify consumer, reminder and digest tests share: staff sign-in and bookings over the
gateway, signed gRPC contexts for notify itself, and reading the outbox as an operator would (the
superuser connection of the run's database, which RLS does not restrict)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tools.processes import wait_until


async def owner_headers(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, str]:
    response = await http.post(
        f"{url}/v1/auth/login", json={"email": org.owner_email, "password": org.owner_password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def slot(hours_from_now: float) -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=hours_from_now)


async def new_booking(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    starts_at: datetime,
    confirm: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    body = {
        "starts_at": starts_at.isoformat(),
        "duration_minutes": 120,
        "client_name": "Casey Client",
        "client_email": f"client-{uuid.uuid4().hex[:10]}@example.com",
        "address": "1 Main Street",
        "cleaning_type": "standard",
        "beds": 2,
        "baths": 1,
        **fields,
    }
    created = await http.post(f"{url}/v1/admin/bookings", headers=headers, json=body)
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    if confirm:
        done = await http.post(f"{url}/v1/admin/bookings/{result['id']}/confirm", headers=headers)
        assert done.status_code == 200, done.text
        result = done.json()
    return result


def outbox(admin_url: str, org_id: str, key_prefix: str = "") -> list[dict[str, Any]]:
    with psycopg.connect(admin_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM notify.outbox_events WHERE org_id = %s AND dedupe_key LIKE %s ORDER BY created_at",
            (org_id, key_prefix.replace("%", r"\%").replace("_", r"\_") + "%"),
        ).fetchall()


def wait_outbox(
    admin_url: str, org_id: str, key_prefix: str, count: int = 1, timeout: float = 15
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = outbox(admin_url, org_id, key_prefix)
        return len(found) >= count

    wait_until(enough, timeout, f"{count} outbox row(s) {key_prefix!r}")
    return found
