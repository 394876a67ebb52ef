"""Every admin write of the booking service lands in IAM's admin_audit_logs (through
cws.booking.audit.recorded, written in the same transaction as the change), with the break-glass
reason when one was used; public and anonymous writes are not admin writes."""

from __future__ import annotations

from typing import Any

import httpx

from services.booking.tests.helpers import create_booking
from tools import testkit
from tools.testkit import eventually


async def audit_rows(
    http: httpx.AsyncClient, url: str, owner: dict[str, str], action: str, count: int
) -> list[dict[str, Any]]:
    """The org's audit rows for `action`, once there are at least `count` of them."""

    async def enough() -> tuple[list[dict[str, Any]]]:
        response = await http.get(f"{url}/v1/admin/audit-logs", params={"action": action}, headers=owner)
        rows: list[dict[str, Any]] = response.json()
        assert len(rows) >= count, rows
        return (rows,)  # a tuple, so that no rows at all is an answer too

    (rows,) = await eventually(enough, message=f"{count} audit rows for {action}")
    return rows


async def test_admin_writes_are_audited_by_iam(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, owner)
    await http.post(
        f"{gateway.url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": "Anon",
            "phone": "780-555-0100",
            "email": "anon@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
        },
    )
    await http.post(f"{gateway.url}/v1/admin/bookings/{booking['id']}/confirm", headers=owner)

    confirms = await audit_rows(http, gateway.url, owner, "booking.TransitionBooking", 1)
    assert len(confirms) == 1, confirms
    assert confirms[0]["actor"] == org.owner_id and confirms[0]["role"] == "OWNER"
    assert confirms[0]["resource_type"] == "booking" and confirms[0]["resource_id"] == booking["id"]
    assert len(await audit_rows(http, gateway.url, owner, "booking.CreateBooking", 1)) == 1
    # The anonymous lead was written before the confirmation's row arrived, in the same stream:
    # had it been audited, its row would be here by now.
    assert await audit_rows(http, gateway.url, owner, "booking.CreateLead", 0) == []

    other = await make_org()
    other_owner = await testkit.owner(http, gateway.url, other)
    assert await audit_rows(http, gateway.url, other_owner, "booking.CreateBooking", 0) == []


async def test_writes_under_break_glass_carry_the_reason(gateways, http, make_org):
    gateway = gateways.get(ADMIN_READ_ONLY="true")
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    refused = await http.post(f"{gateway.url}/v1/admin/cleanup", headers=owner)
    assert refused.status_code == 409
    started = await http.post(
        f"{gateway.url}/v1/admin/break-glass/start",
        headers=owner,
        json={"reason": "incident 7: stuck bookings", "ttl_minutes": 5},
    )
    token = started.json()["token"]
    booking = await create_booking(http, gateway.url, {**owner, "X-Break-Glass-Token": token})
    rows = await audit_rows(http, gateway.url, owner, "booking.CreateBooking", 1)
    assert rows and rows[0]["break_glass_reason"] == "incident 7: stuck bookings"
    assert rows[0]["break_glass_session_id"] == started.json()["session_id"]
    assert booking["status"] == "pending"
