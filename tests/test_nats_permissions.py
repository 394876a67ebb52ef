"""NATS is not open (issue 9, hole 7): each process connects as its own user of deploy/nats/nats.conf,
and the server itself refuses what that user may not do. Each attack runs against the session's real
nats-server, started with that file; a refusal is the server's permissions violation, not a client
check. That each service still publishes and consumes what it declares is what every event test
(libs/common/tests, services/*/tests, gateway/tests/test_revocation_*) shows."""

from __future__ import annotations

import importlib.util
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, RePublish, StreamConfig

from libs.common.bus import event_headers, stream_name
from services.booking import events as booking_declared
from tools.devstack import NatsServer
from tools.testkit import eventually

ROOT = Path(__file__).resolve().parents[1]
REFUSED = (nats.errors.Error, TimeoutError)


def load_example() -> Any:
    """docs/examples/consume_events.py, the snippet the docs show, as a module."""
    path = ROOT / "docs" / "examples" / "consume_events.py"
    spec = importlib.util.spec_from_file_location("consume_events_example", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Conn:
    """One connection as one user, with every error the server sent it."""

    user: str
    nc: NatsClient
    errors: list[Exception] = field(default_factory=list)

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream(timeout=1)

    async def refused(self, action: Awaitable[Any], subject: str) -> None:
        """`action` fails because the server refused a publish (an API request is one) to `subject`."""
        with pytest.raises(REFUSED):
            await action
        await self.violation("publish", subject)

    async def violation(self, kind: str, subject: str) -> None:
        expected = f'permissions violation for {kind} to "{subject}"'.lower()
        await eventually(
            lambda: any(expected in str(error).lower() for error in self.errors),
            timeout=5,
            message=f"the server to refuse {self.user}'s {kind} to {subject}",
        )


@pytest.fixture
async def connect(nats_server: NatsServer) -> AsyncIterator[Callable[[str], Awaitable[Conn]]]:
    opened: list[Conn] = []

    async def as_user(user: str) -> Conn:
        errors: list[Exception] = []

        async def on_error(error: Exception) -> None:
            errors.append(error)

        nc = await nats_server.connect_as(user, error_cb=on_error, allow_reconnect=False)
        conn = Conn(user, nc, errors)
        opened.append(conn)
        return conn

    yield as_user
    for conn in opened:
        await conn.nc.close()


async def ids_in_stream(admin: Conn, subject: str, since: datetime) -> set[str]:
    """The event ids (ce-id) of every message on `subject` stored since `since`, read as admin."""
    subscription = await admin.js.pull_subscribe(
        subject,
        stream=stream_name(subject.split(".")[1]),
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since),
    )
    ids: set[str] = set()
    while True:
        try:
            batch = await subscription.fetch(batch=100, timeout=1)
        except TimeoutError:
            return ids
        ids |= {(m.headers or {}).get("ce-id", "") for m in batch}


def org_created(event_id: str, name: str) -> tuple[bytes, dict[str, str]]:
    org_id = str(uuid.uuid4())
    message = iam_events.OrgCreated(org_id=org_id, name=name)
    subject = "cws.iam.org.created"
    return message.SerializeToString(), event_headers(
        event_id, subject, "iam", datetime.now(UTC), org_id, "x"
    )


async def test_a_service_cannot_publish_another_services_event(connect: Any) -> None:
    """The attack of the issue: with booking's credentials (or any but iam's), publish
    cws.iam.org.created to rename an org in customer emails. The server refuses it, on JetStream and
    on core NATS alike, and nothing reaches iam's stream; iam's own publish of the same shape does."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    booking, admin, iam = await connect("booking"), await connect("admin"), await connect("iam")
    forged_id, core_id, genuine_id = (str(uuid.uuid4()) for _ in range(3))

    payload, headers = org_created(forged_id, "Renamed By An Attacker")
    await booking.refused(
        booking.js.publish("cws.iam.org.created", payload, headers=headers), "cws.iam.org.created"
    )
    payload, headers = org_created(core_id, "Renamed By An Attacker")
    await booking.nc.publish("cws.iam.org.created", payload, headers=headers)
    await booking.nc.flush()
    # The control: the same event from iam is stored, so the check below would see a forged one.
    payload, headers = org_created(genuine_id, "A Real Org")
    await iam.js.publish("cws.iam.org.created", payload, headers=headers)

    stored = await ids_in_stream(admin, "cws.iam.org.created", since)
    assert genuine_id in stored
    assert forged_id not in stored and core_id not in stored
    assert len([e for e in booking.errors if "permissions violation" in str(e).lower()]) >= 2


async def test_no_anonymous_and_no_borrowed_passwords(nats_server: NatsServer) -> None:
    """An unauthenticated client, and a user with another user's password, are refused at connect."""
    for credentials in (
        {},
        {"user": "iam", "password": nats_server.login("events_reader")["password"]},
        {"user": "iam", "password": ""},
    ):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                nats_server.url,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
                **credentials,
            )


async def test_events_reader_reads_and_decodes_events_but_changes_nothing(
    connect: Any, nats_server: NatsServer
) -> None:
    """The external consumers' user runs the documented example (a durable consumer of booking's
    stream, each message decoded with the class its ce-type names), and is refused every write."""
    booking, admin, reader = await connect("booking"), await connect("admin"), await connect("events_reader")
    event_id = str(uuid.uuid4())
    confirmed = booking_events.BookingChanged(
        org_id=str(uuid.uuid4()),
        booking_id=str(uuid.uuid4()),
        status="confirmed",
        client_email="c@example.com",
    )
    subject = "cws.booking.booking.confirmed"
    headers = event_headers(event_id, subject, "booking", datetime.now(UTC), confirmed.org_id, "req")
    await booking.js.publish(subject, confirmed.SerializeToString(), headers=headers)

    example = load_example()
    read = dict(
        await example.read_booking_events(
            nats_server.url,
            nats_server.login("events_reader")["password"],
            f"test-app-{secrets.token_hex(4)}",
        )
    )
    assert read[event_id] == confirmed and type(read[event_id]) is booking_events.BookingChanged

    stored = (await admin.js.stream_info("CWS_BOOKING")).state.messages
    await reader.refused(reader.js.publish(subject, b"forged"), subject)
    await reader.refused(reader.js.delete_stream("CWS_BOOKING"), "$JS.API.STREAM.DELETE.CWS_BOOKING")
    await reader.refused(reader.js.purge_stream("CWS_BOOKING"), "$JS.API.STREAM.PURGE.CWS_BOOKING")
    await reader.refused(
        reader.js.update_stream(StreamConfig(name="CWS_BOOKING", subjects=["cws.booking.>"], max_msgs=1)),
        "$JS.API.STREAM.UPDATE.CWS_BOOKING",
    )
    # The suite's own consumers are not the reader's: neither to read from, nor to drop or rewrite.
    durable = "notify-booking-confirmed"
    await reader.refused(
        reader.js.consumer_info("CWS_BOOKING", durable), f"$JS.API.CONSUMER.INFO.CWS_BOOKING.{durable}"
    )
    await reader.refused(
        reader.js.delete_consumer("CWS_BOOKING", durable), f"$JS.API.CONSUMER.DELETE.CWS_BOOKING.{durable}"
    )
    await reader.refused(
        reader.js.add_consumer(
            "CWS_BOOKING", ConsumerConfig(name=durable, durable_name=durable, filter_subject=subject)
        ),
        f"$JS.API.CONSUMER.CREATE.CWS_BOOKING.{durable}.{subject}",
    )
    await reader.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.CWS_BOOKING.{durable}", b"1")
    await reader.violation("publish", f"$JS.API.CONSUMER.MSG.NEXT.CWS_BOOKING.{durable}")
    # An unnamed consumer (nats-py's ordered consumer) could be given any durable's name: refused.
    await reader.refused(
        reader.js.subscribe(subject, stream="CWS_BOOKING", ordered_consumer=True),
        "$JS.API.CONSUMER.CREATE.CWS_BOOKING",
    )
    # Core subscriptions to events, or to another user's replies, are refused too.
    await reader.nc.subscribe("cws.>")
    await reader.violation("subscription", "cws.>")
    assert (await admin.js.stream_info("CWS_BOOKING")).state.messages >= stored


async def test_a_service_cannot_reshape_streams_or_read_what_it_does_not_consume(connect: Any) -> None:
    """A stream's config is a way around subject permissions (republish onto cws.iam.>, source iam's
    stream into one's own): only admin may touch it. A consumer is allowed only on the subjects and
    under the names its service declares, and replies only under its own inbox."""
    booking, gateway = await connect("booking"), await connect("gateway")

    republishing = StreamConfig(
        name="CWS_BOOKING",
        subjects=["cws.booking.>"],
        republish=RePublish(src="cws.booking.>", dest="cws.iam.>"),
    )
    await booking.refused(booking.js.update_stream(republishing), "$JS.API.STREAM.UPDATE.CWS_BOOKING")
    await booking.refused(booking.js.add_stream(republishing), "$JS.API.STREAM.CREATE.CWS_BOOKING")
    await booking.refused(booking.js.delete_stream("CWS_BOOKING"), "$JS.API.STREAM.DELETE.CWS_BOOKING")

    # booking consumes cws.iam.org.created, not cws.iam.user.created (whose emails are notify's).
    snoop = f"booking-snoop-{secrets.token_hex(3)}"
    await booking.refused(
        booking.js.add_consumer("CWS_IAM", ConsumerConfig(name=snoop, filter_subject="cws.iam.user.created")),
        f"$JS.API.CONSUMER.CREATE.CWS_IAM.{snoop}.cws.iam.user.created",
    )
    # Its replay consumers have any name on cws.iam.org.created, but not notify's durable one there.
    await booking.refused(
        booking.js.add_consumer(
            "CWS_IAM",
            ConsumerConfig(name="notify-org-created", filter_subject="cws.iam.org.created", max_deliver=1),
        ),
        "$JS.API.CONSUMER.CREATE.CWS_IAM.notify-org-created.cws.iam.org.created",
    )
    await booking.nc.subscribe("_INBOX_notify.>")
    await booking.violation("subscription", "_INBOX_notify.>")

    # The gateway may replay revocations (its feed), and nothing else of iam's.
    inbox = gateway.nc.new_inbox()
    await gateway.nc.subscribe(inbox)
    feed = await gateway.js.add_consumer(
        "CWS_IAM",
        ConsumerConfig(
            name=uuid.uuid4().hex, filter_subject="cws.iam.session.revoked", deliver_subject=inbox
        ),
    )
    assert feed.config.filter_subject == "cws.iam.session.revoked"
    name = uuid.uuid4().hex
    await gateway.refused(
        gateway.js.add_consumer(
            "CWS_IAM", ConsumerConfig(name=name, filter_subject="cws.iam.user.created", deliver_subject=inbox)
        ),
        f"$JS.API.CONSUMER.CREATE.CWS_IAM.{name}.cws.iam.user.created",
    )


def test_the_example_decodes_every_event_booking_publishes() -> None:
    """The documented example names a message for each of booking's subjects, the one booking's
    events.py pairs with it: a new booking event fails here until the example (and docs) know it."""
    declared = {event.subject: event.message for event in booking_declared.PUBLISHED}
    assert declared == load_example().MESSAGES
