"""What billing's usage counters are fed by and checked against, at booking (real booking process):
the worker events (added on create and reactivate; deactivated with `was_active`, so deleting an
already inactive worker is not a second departure), the created_at that BookingChanged carries, and
CountUsage (active workers, bookings created in a period, the caller's org only, services only)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.booking.v1 import events_pb2 as booking_events

from libs.common.convert import to_ts
from services.booking.events import BOOKING_CREATED, BOOKING_WORKER_ADDED, BOOKING_WORKER_DEACTIVATED
from services.booking.tests.helpers import create_booking
from services.booking.tests.test_scheduling import make_worker
from tools import testkit
from tools.testkit import as_role, as_service, rpc_error, signing_channel, sql


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[booking_pb2_grpc.BookingServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


async def worker_events(stack: Any, org_id: str) -> list[tuple[str, str, str, bool]]:
    """(subject, worker_id, reason, was_active) of the org's worker events, in the order raised."""
    rows = await sql(
        stack.admin_url,
        "SELECT subject, payload FROM booking.event_outbox WHERE org_id = %s AND subject = ANY(%s) "
        "ORDER BY created_at, id",
        (uuid.UUID(org_id), [BOOKING_WORKER_ADDED.subject, BOOKING_WORKER_DEACTIVATED.subject]),
    )
    found = []
    for subject, payload in rows:
        if subject == BOOKING_WORKER_ADDED.subject:
            added = booking_events.WorkerAdded.FromString(bytes(payload))
            found.append((subject, added.worker_id, added.reason, True))
        else:
            left = booking_events.WorkerDeactivated.FromString(bytes(payload))
            found.append((subject, left.worker_id, left.reason, left.was_active))
    return found


async def test_worker_events_say_when_the_active_count_changes(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    wren = (await make_worker(http, url, owner, "Wren"))["id"]
    robin = (await make_worker(http, url, owner, "Robin"))["id"]
    path = f"{url}/v1/admin/workers"
    for worker, body in ((wren, {"active": False}), (wren, {"active": True}), (robin, {"active": False})):
        assert (await http.patch(f"{path}/{worker}", headers=owner, json=body)).status_code == 200
    # Edits that do not change the active state raise no worker event.
    assert (await http.patch(f"{path}/{robin}", headers=owner, json={"active": False})).status_code == 200
    assert (await http.patch(f"{path}/{wren}", headers=owner, json={"role": "windows"})).status_code == 200
    for worker in (robin, wren):
        assert (await http.delete(f"{path}/{worker}", headers=owner)).status_code in (200, 204)

    added, left = BOOKING_WORKER_ADDED.subject, BOOKING_WORKER_DEACTIVATED.subject
    assert await worker_events(stack, org.org_id) == [
        (added, wren, "created", True),
        (added, robin, "created", True),
        (left, wren, "deactivated", True),
        (added, wren, "reactivated", True),
        (left, robin, "deactivated", True),
        (left, robin, "deleted", False),  # already inactive: IAM still hears it, billing counts nothing
        (left, wren, "deleted", True),
    ]


async def test_booking_created_carries_the_rows_created_at(gateway, http, make_org, stack):
    org = await make_org()
    made = await create_booking(http, gateway.url, await testkit.owner(http, gateway.url, org))
    [(payload, created_at)] = await sql(
        stack.admin_url,
        "SELECT o.payload, b.created_at FROM booking.event_outbox o JOIN booking.bookings b ON b.id = %s "
        "WHERE o.org_id = %s AND o.subject = %s",
        (uuid.UUID(made["id"]), uuid.UUID(org.org_id), BOOKING_CREATED.subject),
    )
    event = booking_events.BookingChanged.FromString(bytes(payload))
    assert event.booking_id == made["id"]
    assert event.created_at.ToDatetime(tzinfo=UTC) == created_at


async def test_count_usage_counts_the_callers_org_for_services_only(stub, gateway, http, make_org, stack):
    url = gateway.url
    org, other = await make_org(), await make_org()
    owner = await testkit.owner(http, url, org)
    workers = [(await make_worker(http, url, owner, name))["id"] for name in ("A", "B", "C")]
    patched = await http.patch(f"{url}/v1/admin/workers/{workers[0]}", headers=owner, json={"active": False})
    assert patched.status_code == 200
    old = await create_booking(http, url, owner, client_email="old@example.com")
    await create_booking(http, url, owner, client_email="new@example.com")
    other_owner = await testkit.owner(http, url, other)
    await make_worker(http, url, other_owner, "Theirs")
    await create_booking(http, url, other_owner, client_email="theirs@example.com")
    last_month = datetime(2026, 1, 15, 12, tzinfo=UTC)
    await sql(
        stack.admin_url, "UPDATE booking.bookings SET created_at = %s WHERE id = %s", (last_month, old["id"])
    )

    now = datetime.now(UTC)
    counts = await stub.CountUsage(
        booking_pb2.CountUsageRequest(
            month_start=to_ts(now - timedelta(hours=1)), month_end=to_ts(now + timedelta(hours=1))
        ),
        metadata=as_service(org.org_id, "billing"),
    )
    assert (counts.active_workers, counts.bookings_created) == (2, 1)
    january = await stub.CountUsage(
        booking_pb2.CountUsageRequest(
            month_start=to_ts(datetime(2026, 1, 1, tzinfo=UTC)),
            month_end=to_ts(datetime(2026, 2, 1, tzinfo=UTC)),
        ),
        metadata=as_service(org.org_id, "billing"),
    )
    assert (january.active_workers, january.bookings_created) == (2, 1)

    # A user of the org, even its owner, may not call it: the report goes through billing.
    refused = await rpc_error(
        stub.CountUsage(
            booking_pb2.CountUsageRequest(month_start=to_ts(now), month_end=to_ts(now + timedelta(days=1))),
            metadata=as_role(org.org_id, "OWNER"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert refused.reason == "service_only"
    backwards = await rpc_error(
        stub.CountUsage(
            booking_pb2.CountUsageRequest(month_start=to_ts(now), month_end=to_ts(now)),
            metadata=as_service(org.org_id, "billing"),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [v.field for v in backwards.violations] == ["month_end"]
