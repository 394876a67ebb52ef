"""Booking's consumers of cws.billing.subscription.{paused,resumed}, against the real booking process and
NATS: the events are published as billing's outbox relay publishes them (billing's NATS user and stream,
the same headers), out of order and twice, and the org's entitlement is read back from booking's table
and from what a create answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events

from libs.common.bus import event_headers, stream_name
from libs.common.convert import to_ts
from libs.common.event_types import Event
from services.booking.events import BILLING_SUBSCRIPTION_PAUSED, BILLING_SUBSCRIPTION_RESUMED
from services.booking.tests.helpers import create_booking, slot
from tools import testkit
from tools.testkit import assert_problem, eventually, sql

PAUSED_CONSUMER = "booking-subscription-paused"
RESUMED_CONSUMER = "booking-subscription-resumed"


def change(org_id: str, status: str, at: datetime) -> billing_events.SubscriptionChanged:
    return billing_events.SubscriptionChanged(
        org_id=org_id, status=status, reason_code=f"test_{status}", plan_code="starter", occurred_at=to_ts(at)
    )


async def publish(stack: Any, event: Event[Any], message: billing_events.SubscriptionChanged) -> int:
    """Publish as billing would; the stream sequence."""
    headers = event_headers(
        str(uuid.uuid4()), event.subject, "billing", datetime.now(UTC), message.org_id, "test"
    )
    nc = await stack.nats.connect_as("billing")
    try:
        ack = await nc.jetstream().publish(event.subject, message.SerializeToString(), headers=headers)
    finally:
        await nc.close()
    return int(ack.seq)


async def wait_handled(stack: Any, consumer: str, seq: int) -> None:
    """Until `consumer` has acknowledged billing's stream up to `seq`, a message of its own subject."""
    nc = await stack.nats.connect_as("admin")  # booking's consumers are booking's: only admin may look
    try:
        js = nc.jetstream()

        async def acked() -> bool:
            info = await js.consumer_info(stream_name("billing"), consumer)
            return bool(info.ack_floor.stream_seq >= seq)

        await eventually(acked, timeout=60, message=f"{consumer} acknowledging up to {seq}")
    finally:
        await nc.close()


async def entitlement(stack: Any, org_id: str) -> tuple[bool, datetime] | None:
    # As superuser, across RLS, as the test reads what the consumer wrote.
    rows = await sql(
        stack.admin_url,
        "SELECT paused, changed_at FROM booking.org_entitlements WHERE org_id = %s",
        (uuid.UUID(org_id),),
    )
    return (bool(rows[0][0]), rows[0][1]) if rows else None


async def test_an_older_pause_delivered_late_does_not_pause_again(
    booking: Any, gateway: Any, http: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    now = datetime.now(UTC).replace(microsecond=0)

    # Paused at t0, resumed at t0+1 min: delivered resume first, the pause after it (as a redelivery or
    # another consumer's lag can do). The org must stay active.
    resumed_at, paused_at = now + timedelta(minutes=1), now
    await wait_handled(
        stack,
        RESUMED_CONSUMER,
        await publish(stack, BILLING_SUBSCRIPTION_RESUMED, change(org.org_id, "active", resumed_at)),
    )
    assert await entitlement(stack, org.org_id) == (False, resumed_at)
    late = await publish(stack, BILLING_SUBSCRIPTION_PAUSED, change(org.org_id, "paused", paused_at))
    await wait_handled(stack, PAUSED_CONSUMER, late)
    assert await entitlement(stack, org.org_id) == (False, resumed_at)
    await create_booking(http, gateway.url, owner)

    # A newer pause applies; the same pause again changes nothing; an older resume does not undo it.
    paused_later = now + timedelta(minutes=2)
    message = change(org.org_id, "paused", paused_later)
    await wait_handled(stack, PAUSED_CONSUMER, await publish(stack, BILLING_SUBSCRIPTION_PAUSED, message))
    await wait_handled(stack, PAUSED_CONSUMER, await publish(stack, BILLING_SUBSCRIPTION_PAUSED, message))
    stale = change(org.org_id, "active", now + timedelta(seconds=90))
    await wait_handled(stack, RESUMED_CONSUMER, await publish(stack, BILLING_SUBSCRIPTION_RESUMED, stale))
    assert await entitlement(stack, org.org_id) == (True, paused_later)
    refused = await http.post(
        f"{gateway.url}/v1/admin/bookings",
        headers=owner,
        json={
            "starts_at": slot(48),
            "duration_minutes": 120,
            "client_name": "Casey Client",
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )
    assert_problem(refused, 409, "subscription_paused")
    # Refused in booking itself, not by a flag the test forgot: no row was added.
    assert await sql(
        stack.admin_url, "SELECT count(*) FROM booking.bookings WHERE org_id = %s", (uuid.UUID(org.org_id),)
    ) == [(1,)]

    # Another org never heard of: active, no row.
    other = await make_org()
    assert await entitlement(stack, other.org_id) is None
    await create_booking(http, gateway.url, await testkit.owner(http, gateway.url, other))

    async def resumed() -> bool:
        return await entitlement(stack, org.org_id) == (False, now + timedelta(minutes=3))

    await publish(
        stack, BILLING_SUBSCRIPTION_RESUMED, change(org.org_id, "active", now + timedelta(minutes=3))
    )
    await eventually(resumed, timeout=30, message="the newer resume applied")
    await create_booking(http, gateway.url, owner)
