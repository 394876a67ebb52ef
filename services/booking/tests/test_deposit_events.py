"""Booking's consumer of cws.billing.deposit.paid, against the real booking process and NATS: the event
is published as billing's outbox relay publishes it (billing's NATS user, billing's stream, the same
headers), and what booking did is read back from its tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from cws.booking.v1 import events_pb2 as booking_events

from libs.common.bus import event_headers, stream_name
from services.booking.events import BILLING_DEPOSIT_PAID, BOOKING_CONFIRMED
from services.booking.tests.helpers import create_booking
from tools import testkit
from tools.testkit import eventually, sql

CONSUMER = "booking-deposit-paid"


def deposit_paid(org_id: str, booking_id: str) -> billing_events.DepositPaid:
    return billing_events.DepositPaid(
        org_id=org_id,
        booking_id=booking_id,
        amount_cents=5000,
        currency="CAD",
        payment_intent_id=f"pi_{uuid.uuid4().hex[:16]}",
    )


async def publish(stack: Any, message: billing_events.DepositPaid, event_id: str = "") -> tuple[str, int]:
    """Publish as billing would; (event id, stream sequence). A repeated `event_id` gets a fresh
    Nats-Msg-Id so it passes JetStream's duplicate window, as a redelivery after a lost ack would."""
    event_id = event_id or str(uuid.uuid4())
    headers = event_headers(
        event_id, BILLING_DEPOSIT_PAID.subject, "billing", datetime.now(UTC), message.org_id, "test"
    )
    headers["Nats-Msg-Id"] = str(uuid.uuid4())
    nc = await stack.nats.connect_as("billing")
    try:
        ack = await nc.jetstream().publish(
            BILLING_DEPOSIT_PAID.subject, message.SerializeToString(), headers=headers
        )
    finally:
        await nc.close()
    return event_id, ack.seq


async def wait_handled(stack: Any, seq: int) -> None:
    """Until booking has acknowledged every message of billing's stream up to `seq` (a handled event,
    or one parked after its last delivery: the tests tell those apart by inbox and dead letters)."""
    nc = await stack.nats.connect_as("admin")  # booking's consumer is booking's: only admin may look
    try:
        js = nc.jetstream()

        async def acked() -> bool:
            info = await js.consumer_info(stream_name("billing"), CONSUMER)
            return bool(info.ack_floor.stream_seq >= seq)

        await eventually(acked, timeout=60, message=f"{CONSUMER} acknowledging up to {seq}")
    finally:
        await nc.close()


async def booking_row(stack: Any, booking_id: str) -> tuple[bool, str, datetime]:
    [(paid, status, updated_at)] = await sql(
        stack.admin_url,
        "SELECT deposit_paid, status, updated_at FROM booking.bookings WHERE id = %s",
        (uuid.UUID(booking_id),),
    )
    return bool(paid), str(status), updated_at


async def confirmations(stack: Any, org_id: str, booking_id: str) -> list[str]:
    """The reasons of every cws.booking.booking.confirmed the booking raised (booking's event outbox)."""
    rows = await sql(
        stack.admin_url,
        "SELECT payload FROM booking.event_outbox WHERE subject = %s AND org_id = %s ORDER BY created_at",
        (BOOKING_CONFIRMED.subject, uuid.UUID(org_id)),
    )
    events = [booking_events.BookingChanged.FromString(bytes(payload)) for (payload,) in rows]
    return [event.reason for event in events if event.booking_id == booking_id]


async def handled_once(stack: Any, event_id: str) -> bool:
    inbox = await sql(
        stack.admin_url,
        "SELECT 1 FROM booking.event_inbox WHERE consumer = %s AND event_id = %s",
        (CONSUMER, event_id),
    )
    return len(inbox) == 1


async def test_a_paid_deposit_confirms_the_pending_booking_once(
    booking: Any, gateway: Any, http: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    pending = await create_booking(http, gateway.url, owner, deposit_required=True)
    assert (pending["status"], pending["deposit_paid"]) == ("pending", False)
    message = deposit_paid(org.org_id, pending["id"])

    event_id, _ = await publish(stack, message)

    async def confirmed() -> bool:
        paid, status, _ = await booking_row(stack, pending["id"])
        return paid and status == "confirmed"

    await eventually(confirmed, timeout=30, message="the booking confirmed by its paid deposit")
    assert await confirmations(stack, org.org_id, pending["id"]) == ["deposit_paid"]
    _, _, updated_at = await booking_row(stack, pending["id"])

    # The same event again (a redelivery), then another event for the same deposit (billing told twice).
    await publish(stack, message, event_id)
    again_id, last = await publish(stack, message)
    await wait_handled(stack, last)

    assert await handled_once(stack, again_id)
    assert await confirmations(stack, org.org_id, pending["id"]) == ["deposit_paid"]
    assert await booking_row(stack, pending["id"]) == (True, "confirmed", updated_at)
    seen = await http.get(f"{gateway.url}/v1/admin/bookings/{pending['id']}", headers=owner)
    assert seen.status_code == 200 and seen.json()["deposit_paid"] is True, seen.text


async def test_a_deposit_marked_paid_by_hand_is_left_as_it_is(
    booking: Any, gateway: Any, http: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    pending = await create_booking(http, gateway.url, owner, deposit_required=True)
    by_hand = await http.post(f"{gateway.url}/v1/admin/bookings/{pending['id']}/deposit-paid", headers=owner)
    assert by_hand.status_code == 200 and by_hand.json()["status"] == "confirmed", by_hand.text
    before = await booking_row(stack, pending["id"])

    event_id, seq = await publish(stack, deposit_paid(org.org_id, pending["id"]))
    await wait_handled(stack, seq)

    assert await handled_once(stack, event_id)
    assert await booking_row(stack, pending["id"]) == before
    assert await confirmations(stack, org.org_id, pending["id"]) == ["deposit_paid"]


async def test_a_paid_deposit_of_a_booking_no_longer_there_is_acknowledged_not_retried(
    booking: Any, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    gone = str(uuid.uuid4())

    event_id, seq = await publish(stack, deposit_paid(org.org_id, gone))
    await wait_handled(stack, seq)

    # Handled on its first delivery (its inbox row commits only when the handler returns), not parked.
    assert await handled_once(stack, event_id)
    parked = await sql(
        stack.admin_url,
        "SELECT 1 FROM booking.event_dead_letters WHERE consumer = %s AND event_id = %s",
        (CONSUMER, event_id),
    )
    assert parked == []
    log = booking.log_path.read_text()
    assert "deposit_paid_unknown_booking" in log and gone in log
