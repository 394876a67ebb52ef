"""Reading the suite's events from outside it, as the read-only NATS user `events_reader`.

    NATS_URL=nats://nats:4222 NATS_PASSWORD=... python docs/examples/consume_events.py my-app

Needs only `nats-py` and the generated protobuf modules (`proto/cws`, e.g. `pip install` this repository
or copy `proto/cws`). Each event's headers say what it is: `ce-type` is its subject, which
proto/EVENTS.md pairs with a message, `ce-id` its id (the same event may be delivered twice: keep the
ids you handled), `cws-org-id` its org. tests/test_nats_permissions.py runs this file against a real
server, and checks MESSAGES against what booking declares it publishes."""

from __future__ import annotations

import asyncio
import os
import sys

import nats
from cws.booking.v1 import events_pb2
from cws.common.v1 import audit_pb2
from google.protobuf.message import Message

# Subject (the ce-type header) -> the message it carries, for booking's stream (proto/EVENTS.md).
MESSAGES: dict[str, type[Message]] = {
    "cws.booking.lead.created": events_pb2.LeadCreated,
    "cws.booking.booking.created": events_pb2.BookingChanged,
    "cws.booking.booking.confirmed": events_pb2.BookingChanged,
    "cws.booking.booking.started": events_pb2.BookingChanged,
    "cws.booking.booking.rescheduled": events_pb2.BookingChanged,
    "cws.booking.booking.cancelled": events_pb2.BookingChanged,
    "cws.booking.booking.completed": events_pb2.BookingChanged,
    "cws.booking.booking.assigned": events_pb2.BookingChanged,
    "cws.booking.booking.deleted": events_pb2.BookingChanged,
    "cws.booking.nps.submitted": events_pb2.NpsSubmitted,
    "cws.booking.worker.deactivated": events_pb2.WorkerDeactivated,
    "cws.booking.worker.added": events_pb2.WorkerAdded,
    "cws.booking.audit.recorded": audit_pb2.AdminAuditRecorded,
}


async def read_booking_events(url: str, password: str, consumer: str) -> list[tuple[str, Message]]:
    """Every booking event `consumer` has not acknowledged yet, decoded: (event id, message)."""
    # events_reader receives its replies only under its own inbox prefix.
    nc = await nats.connect(url, user="events_reader", password=password, inbox_prefix="_INBOX_events_reader")
    try:
        # A durable pull consumer named after your application: it remembers what you acknowledged.
        subscription = await nc.jetstream().pull_subscribe(
            "cws.booking.>", durable=consumer, stream="CWS_BOOKING"
        )
        events: list[tuple[str, Message]] = []
        while True:
            try:
                batch = await subscription.fetch(batch=50, timeout=2)
            except TimeoutError:  # nats-py's own, or asyncio's when the deadline ends between its requests
                return events  # nothing more for now
            for msg in batch:
                headers = msg.headers or {}
                message_type = MESSAGES.get(headers.get("ce-type", ""))
                if message_type is not None:  # an event newer than this list: skip it
                    events.append((headers["ce-id"], message_type.FromString(msg.data)))
                await msg.ack()
    finally:
        await nc.close()


async def main(consumer: str) -> None:
    for event_id, message in await read_booking_events(
        os.environ["NATS_URL"], os.environ["NATS_PASSWORD"], consumer
    ):
        print(event_id, type(message).__name__, message)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "my-app"))
