"""What the notify consumer, reminder and digest tests share: bookings over the gateway, reading the
outbox as an operator would (the superuser connection of the run's database, which RLS does not
restrict), and waiting for outbox rows without blocking the loop (mail: SmtpSink.delivered)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tools.testkit import eventually


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


def org_profile(admin_url: str, org_id: str) -> tuple[str, str] | None:
    """The name and time zone notify holds for the org, if any."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT name, time_zone FROM notify.org_profiles WHERE org_id = %s", (org_id,)
        ).fetchone()
    return (row[0], row[1]) if row else None


async def forget_org(admin_url: str, org_id: str) -> None:
    """As if the org event had not reached notify yet: once it has, its profile row goes."""
    await eventually(lambda: org_profile(admin_url, org_id) is not None, message="the org event")
    with psycopg.connect(admin_url) as conn:
        conn.execute("DELETE FROM notify.org_profiles WHERE org_id = %s", (org_id,))


async def wait_outbox(
    admin_url: str, org_id: str, key_prefix: str, count: int = 1, timeout: float = 15
) -> list[dict[str, Any]]:
    """The org's outbox rows under `key_prefix`, once there are `count` of them."""

    def enough() -> list[dict[str, Any]]:
        found = outbox(admin_url, org_id, key_prefix)
        assert len(found) >= count, found
        return found

    return await eventually(enough, timeout=timeout, message=f"{count} outbox row(s) {key_prefix!r}")
