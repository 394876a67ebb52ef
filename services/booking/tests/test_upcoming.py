"""ListUpcomingBookings and RetentionCleanup, the RPCs notify and the scheduler call (real booking
process, contexts signed as the gateway and the services sign them)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common.db import Database, unit_of_work
from services.booking import leads
from services.booking.models import SCHEMA, event_tables
from services.booking.tests.helpers import create_booking, slot
from tools import testkit
from tools.testkit import as_role, as_service, signing_channel


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[booking_pb2_grpc.BookingServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


async def confirmed(
    http: Any, url: str, owner: dict[str, str], hours: float, **fields: Any
) -> dict[str, Any]:
    booking = await create_booking(http, url, owner, starts_at=slot(hours), **fields)
    response = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/confirm", headers=owner)
    assert response.status_code == 200, response.text
    return booking


async def test_upcoming_lists_confirmed_bookings_in_the_window_paged_in_the_callers_org(
    stub, gateway, http, make_org
):
    org = await make_org("Upcoming Org", "America/Edmonton")
    other = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    in_window = [await confirmed(http, gateway.url, owner, hours) for hours in (3, 1, 5, 2, 4)]
    await create_booking(http, gateway.url, owner, starts_at=slot(2.5))  # pending: not a reminder
    await confirmed(http, gateway.url, owner, 30)  # beyond the window
    cancelled = await confirmed(http, gateway.url, owner, 1.5)
    await http.post(f"{gateway.url}/v1/admin/bookings/{cancelled['id']}/cancel", headers=owner, json={})
    await confirmed(http, gateway.url, await testkit.owner(http, gateway.url, other), 2)

    now = datetime.now(UTC)
    request = booking_pb2.ListUpcomingBookingsRequest(
        from_time=ts(now), to_time=ts(now + timedelta(hours=24)), limit=2
    )
    seen: list[booking_pb2.UpcomingBooking] = []
    pages = 0
    while True:
        page = await stub.ListUpcomingBookings(request, metadata=as_service(org.org_id, "notify"))
        pages += 1
        seen.extend(page.bookings)
        if len(page.bookings) < 2:
            break
        request.after_starts_at.CopyFrom(page.bookings[-1].starts_at)
        request.after_id = page.bookings[-1].id
    assert pages == 3
    by_start = sorted(in_window, key=lambda b: b["starts_at"])
    assert [b.id for b in seen] == [b["id"] for b in by_start]
    first = seen[0]
    assert first.client_email == "casey@example.com" and first.client_name == "Casey Client"
    assert first.time_zone == "America/Edmonton"
    assert first.ends_at.ToDatetime() - first.starts_at.ToDatetime() == timedelta(minutes=120)

    # Staff may ask too; the other org sees only its own booking.
    staff = await stub.ListUpcomingBookings(
        booking_pb2.ListUpcomingBookingsRequest(from_time=ts(now), to_time=ts(now + timedelta(hours=24))),
        metadata=as_role(other.org_id, "VIEWER"),
    )
    assert len(staff.bookings) == 1 and staff.bookings[0].id not in {b["id"] for b in in_window}


async def test_upcoming_refuses_bad_windows(stub, make_org):
    org = await make_org()
    now = datetime.now(UTC)
    for request in (
        booking_pb2.ListUpcomingBookingsRequest(from_time=ts(now)),
        booking_pb2.ListUpcomingBookingsRequest(from_time=ts(now), to_time=ts(now - timedelta(hours=1))),
        booking_pb2.ListUpcomingBookingsRequest(
            from_time=ts(now), to_time=ts(now + timedelta(hours=1)), limit=500
        ),
        booking_pb2.ListUpcomingBookingsRequest(
            from_time=ts(now), to_time=ts(now + timedelta(hours=1)), after_id="nope"
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListUpcomingBookings(request, metadata=as_service(org.org_id, "notify"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_retention_cleanup_rpc_is_for_managers_and_off_by_default(stub, make_org):
    org = await make_org()
    response = await stub.RetentionCleanup(
        booking_pb2.RetentionCleanupRequest(), metadata=as_service(org.org_id, "notify")
    )
    assert response.deleted == 0  # RETENTION_LEAD_DAYS=0 keeps every lead
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RetentionCleanup(
            booking_pb2.RetentionCleanupRequest(), metadata=as_role(org.org_id, "DISPATCHER")
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_retention_deletes_only_old_unbooked_leads_of_the_org(stack, gateway, http, make_org):
    org, other = await make_org(), await make_org()
    body = {
        "name": "Old Lead",
        "phone": "780-555-0000",
        "email": "old-lead@example.com",
        "postal_code": "T5J0N3",
        "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
    }

    async def lead(org_id: str) -> str:
        response = await http.post(f"{gateway.url}/v1/leads", json=body, headers={"X-Test-Org": org_id})
        assert response.status_code == 201, response.text
        return str(response.json()["lead_id"])

    old, booked, fresh, foreign = (
        await lead(org.org_id),
        await lead(org.org_id),
        await lead(org.org_id),
        (await lead(other.org_id)),
    )
    owner = await testkit.owner(http, gateway.url, org)
    await create_booking(http, gateway.url, owner, lead_id=booked)
    with psycopg.connect(stack.admin_url) as conn:
        conn.execute(
            "UPDATE booking.leads SET created_at = now() - interval '40 days' WHERE id = ANY(%s)",
            ([uuid.UUID(old), uuid.UUID(booked), uuid.UUID(foreign)],),
        )

    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    try:
        async with unit_of_work(db, org.org_id) as uow:
            assert await leads.retention_cleanup(uow, 30) == 1
    finally:
        await db.dispose()
    with psycopg.connect(stack.admin_url) as conn:
        left = {
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM booking.leads WHERE id = ANY(%s)",
                ([uuid.UUID(x) for x in (old, booked, fresh, foreign)],),
            )
        }
    assert left == {booked, fresh, foreign}
