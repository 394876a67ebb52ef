"""The event outbox, the relay, durable consumers and broadcasts against real Postgres and NATS JetStream.

Each test gets its own schema (built from `service_metadata`, like a service's migration would) named
after a made-up service `evtest_<hex>`, so its events are `cws.evtest_<hex>.<aggregate>.<event>` and
live in that service's own stream: nothing here touches another test's events.
The made-up services have no NATS user of their own (deploy/nats/nats.conf knows only the real ones),
so the machinery is driven as `admin`; tests/test_nats_permissions.py covers what each real user may do.

Nothing here sleeps to hope: a test waits (`eventually`) for what it expects, and where it claims
something did NOT happen, it first waits for a later event that proves the system got past the point
where it would have happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import psycopg
import pytest
from google.protobuf.wrappers_pb2 import Int64Value, StringValue
from nats.aio.msg import Msg
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy import event as sa_event
from sqlalchemy.exc import DBAPIError

from libs.common import context as request_context
from libs.common.bus import DUPLICATE_WINDOW_SECONDS, EventBus, event_headers, follow_subject, stream_name
from libs.common.db import Database, OutboxTables, UnitOfWork, outbox_channel, service_metadata, unit_of_work
from libs.common.errors import FailedPrecondition
from libs.common.event_types import Broadcast, Consumer, Event, EventMeta
from libs.common.events import DurableConsumer, OutboxRelay, replay_dead_letter, run_broadcast
from libs.common.settings import sqlalchemy_url
from tools.devstack import free_port
from tools.testkit import eventually, grpc_serving, ready

APP_ROLE = "cws_app"

StringHandler = Callable[[UnitOfWork, StringValue, EventMeta], Awaitable[None]]


@dataclass
class EventEnv:
    service: str
    db: Database
    bus: EventBus
    tables: OutboxTables
    admin_url: str
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return stream_name(self.service)

    def event(self, tail: str) -> Event[StringValue]:
        """`cws.<this test's service>.<tail>`, carrying a StringValue; `tail` is `aggregate.event`."""
        return Event(f"cws.{self.service}.{tail}", StringValue)

    def subject(self, tail: str) -> str:
        return self.event(tail).subject

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    def consume(
        self,
        name: str,
        tail: str,
        handler: StringHandler,
        *,
        max_deliver: int = 5,
        ack_wait_seconds: float = 30,
        bus: EventBus | None = None,
        batch: int = 1,
    ) -> Consumer[StringValue]:
        """Run a durable consumer of `tail` for the rest of the test; its declaration is returned."""
        spec = Consumer(name, self.event(tail), handler, max_deliver=max_deliver, batch=batch)
        consumer = DurableConsumer(
            spec, db=self.db, bus=bus or self.bus, service=self.service, ack_wait_seconds=ack_wait_seconds
        )
        self.spawn(consumer.run())
        return spec

    async def admin(self, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Superuser SQL against this test's schema, written as {s}."""
        async with await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True) as conn:
            cursor = await conn.execute(sql.SQL(statement).format(s=sql.Identifier(self.service)), params)
            return await cursor.fetchall() if cursor.description else []

    async def commit(self, org_id: uuid.UUID, tail: str, *values: str) -> None:
        async with unit_of_work(self.db, org_id) as uow:
            for value in values:
                uow.add_event(self.event(tail), StringValue(value=value))

    async def publish(
        self, tail: str, event_id: str, org: uuid.UUID | None, value: str, msg_id: str = ""
    ) -> None:
        """Straight to JetStream, as a relay would, bypassing the outbox (to control the headers)."""
        subject = self.subject(tail)
        headers = event_headers(event_id, subject, self.service, datetime.now(UTC), str(org or ""), "req-c")
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        await self.bus.js.publish(subject, StringValue(value=value).SerializeToString(), headers=headers)

    async def outbox(self) -> list[tuple[Any, ...]]:
        return await self.admin(
            "SELECT id::text, subject, payload, org_id, published_at, attempts, last_error "
            "FROM {s}.event_outbox ORDER BY created_at, id"
        )

    async def unpublished(self) -> int:
        return int(
            (await self.admin("SELECT count(*) FROM {s}.event_outbox WHERE published_at IS NULL"))[0][0]
        )

    async def all_published(self) -> bool:
        return await self.unpublished() == 0

    async def stream_count(self) -> int:
        return int((await self.bus.js.stream_info(self.stream)).state.messages)

    async def stream_messages(self) -> list[Any]:
        return [
            await self.bus.js.get_msg(self.stream, seq) for seq in range(1, await self.stream_count() + 1)
        ]

    async def consumer_done(self, name: str, stream_seq: int) -> bool:
        """The durable consumer `name` has acknowledged everything up to `stream_seq` (a message the
        server holds as acknowledged is never delivered again)."""
        try:
            info = await self.bus.js.consumer_info(self.stream, name)
        except nats.errors.Error:  # not created yet (the consumer retries after a refused subscribe)
            return False
        return bool(info.ack_floor and info.ack_floor.stream_seq >= stream_seq and not info.num_ack_pending)

    async def dead_letters(self) -> int:
        return int((await self.admin("SELECT count(*) FROM {s}.event_dead_letters"))[0][0])


@pytest.fixture
async def env(stack: Any) -> AsyncIterator[EventEnv]:
    service = f"evtest_{secrets.token_hex(4)}"
    metadata, tables = service_metadata(service)

    def create_schema() -> None:
        engine = create_engine(sqlalchemy_url(stack.admin_url))
        try:
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{service}"'))
                metadata.create_all(conn)
                conn.execute(text(f'GRANT USAGE ON SCHEMA "{service}" TO {APP_ROLE}'))
                conn.execute(
                    text(
                        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{service}" TO {APP_ROLE}'
                    )
                )
        finally:
            engine.dispose()

    def drop_schema() -> None:
        engine = create_engine(sqlalchemy_url(stack.admin_url))
        try:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{service}" CASCADE'))
        finally:
            engine.dispose()

    await asyncio.to_thread(create_schema)
    db = Database(stack.app_url, schema=service, tables=tables, pool_size=4)
    bus = EventBus(stack.nats.url, name=f"test-{service}", **stack.nats.login("admin"))
    await asyncio.wait_for(bus.connect(), 10)

    async def stream_made() -> bool:  # JetStream answers a moment after the port opens
        try:
            await bus.ensure_stream(service)
        except nats.errors.Error:
            return False
        return True

    await eventually(stream_made, message="the test's stream to be created")
    environment = EventEnv(service, db, bus, tables, stack.admin_url)
    try:
        yield environment
    finally:
        for task in environment.tasks:
            task.cancel()
        await asyncio.gather(*environment.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.js.delete_stream(environment.stream), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.close(), 5)
        await db.dispose()
        await asyncio.to_thread(drop_schema)


# --- events as code -------------------------------------------------------------------------


def test_an_event_subject_names_service_aggregate_and_event() -> None:
    event = Event("cws.booking.booking.confirmed", StringValue)
    assert event.producer == "booking"
    for wrong in (
        "cws.booking.confirmed",
        "booking.booking.confirmed",
        "cws.booking..confirmed",
        "cws.a.b.c.d",
    ):
        with pytest.raises(ValueError, match=re.escape("cws.<service>.<aggregate>.<event>")):
            Event(wrong, StringValue)


async def test_add_event_refuses_a_message_of_another_type(env: EventEnv) -> None:
    org = uuid.uuid4()
    with pytest.raises(TypeError) as refused:
        async with unit_of_work(env.db, org) as uow:
            uow.add_event(env.event("thing.happened"), StringValue(value="fine"))
            uow.add_event(env.event("thing.happened"), Int64Value(value=7))  # type: ignore[arg-type]
    message = str(refused.value)
    assert env.subject("thing.happened") in message
    assert "google.protobuf.StringValue" in message and "google.protobuf.Int64Value" in message
    # Refused where it was raised: the unit of work rolled back, the good event with it.
    assert await env.outbox() == []


# --- outbox and relay -----------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_on_commit_callbacks_run_after_the_commit_and_never_on_rollback(env: EventEnv) -> None:
    org, ran = uuid.uuid4(), []
    with pytest.raises(Boom):
        async with unit_of_work(env.db, org) as uow:
            uow.on_commit(lambda: ran.append("rolled back"))
            raise Boom
    with pytest.raises(DBAPIError):
        async with unit_of_work(env.db, org) as uow:
            uow.on_commit(lambda: ran.append("failed sql"))
            await uow.session.execute(text("SELECT 1 / 0"))
    async with unit_of_work(env.db, org) as uow:
        uow.add_event(env.event("thing.happened"), StringValue(value="with callback"))
        uow.on_commit(lambda: ran.append("committed"))
        assert ran == []  # not while the work is still open
    assert ran == ["committed"]


async def test_events_of_a_rolled_back_unit_of_work_are_never_written_or_published(env: EventEnv) -> None:
    org = uuid.uuid4()
    subscription = await env.bus.js.subscribe(env.subject("thing.*"), stream=env.stream)
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=0.2).run())

    with pytest.raises(Boom):
        async with unit_of_work(env.db, org) as uow:
            uow.add_event(env.event("thing.happened"), StringValue(value="raised"))
            raise Boom
    with pytest.raises(DBAPIError):
        async with unit_of_work(env.db, org) as uow:
            uow.add_event(env.event("thing.happened"), StringValue(value="failed-sql"))
            await uow.session.execute(text("SELECT 1 / 0"))
    assert await env.outbox() == []

    # A marker committed afterwards arrives, and it is the only thing that ever did.
    await env.commit(org, "thing.happened", "committed")
    message = await subscription.next_msg(timeout=5)
    assert StringValue.FromString(message.data).value == "committed"
    await eventually(env.all_published, message="the marker marked published")
    assert await env.stream_count() == 1
    assert [StringValue.FromString(r[2]).value for r in await env.outbox()] == ["committed"]


async def _listening(env: EventEnv) -> bool:
    rows = await env.admin(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
        (f'LISTEN "{outbox_channel(env.service)}"',),
    )
    return bool(rows[0][0] == 1)


async def test_the_relay_listens_again_promptly_after_its_connection_is_killed(env: EventEnv) -> None:
    """The LISTEN connection is re-opened within seconds, whatever the poll interval (it used to wait
    one poll interval: an hour-polling worker went deaf for an hour after a database restart)."""
    listen = f'LISTEN "{outbox_channel(env.service)}"'
    query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s"
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=3600).run())
    await eventually(lambda: _listening(env), message="the relay to LISTEN")
    [(old_pid,)] = await env.admin(query, (listen,))
    await env.admin("SELECT pg_terminate_backend(%s)", (old_pid,))

    async def listening_anew() -> bool:
        return [row[0] for row in await env.admin(query, (listen,))] not in ([], [old_pid])

    await eventually(listening_anew, timeout=5, message="the relay to LISTEN on a new connection")
    subscription = await env.bus.js.subscribe(env.subject("booking.*"), stream=env.stream)
    await env.commit(uuid.uuid4(), "booking.confirmed", "after the restart")
    message = await subscription.next_msg(timeout=5)
    assert StringValue.FromString(message.data).value == "after the restart"


async def test_committed_events_are_published_promptly_with_cloudevents_headers(env: EventEnv) -> None:
    org = uuid.uuid4()
    subscription = await env.bus.js.subscribe(env.subject("booking.*"), stream=env.stream)
    # Polling every 30 s: an event that arrives within a second was woken by NOTIFY, not the poll.
    # (A commit during the relay's catch-up pass after LISTEN is prompt too: the NOTIFY sets the wake
    # the relay waits on next.)
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=30).run())
    await eventually(lambda: _listening(env), message="the relay to LISTEN")

    token = request_context.set_current(request_context.RequestContext(request_id="req-outbox-1"))
    try:
        await env.commit(org, "booking.confirmed", "hello")
    finally:
        request_context.reset_current(token)
    committed = time.monotonic()
    message = await subscription.next_msg(timeout=2)
    assert time.monotonic() - committed < 1.0

    await eventually(env.all_published, timeout=2, message="the row marked published")
    [(row_id, subject, payload, org_id, published_at, attempts, last_error)] = await env.outbox()
    created_at = (await env.admin("SELECT created_at FROM {s}.event_outbox"))[0][0]
    assert message.subject == subject == env.subject("booking.confirmed")
    assert message.data == payload == StringValue(value="hello").SerializeToString()
    headers = message.headers or {}
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == row_id
    assert headers["ce-type"] == env.subject("booking.confirmed")
    assert headers["ce-source"] == f"cws/{env.service}"
    assert datetime.fromisoformat(headers["ce-time"]) == created_at
    assert datetime.fromisoformat(headers["ce-time"]).utcoffset() == timedelta(0)
    assert headers["ce-specversion"] == "1.0"
    assert headers["cws-org-id"] == str(org) == str(org_id)
    assert headers["cws-request-id"] == "req-outbox-1"
    assert published_at is not None and attempts == 0 and last_error is None

    # A second commit in the same idle relay is just as prompt.
    await env.commit(org, "booking.confirmed", "again")
    committed = time.monotonic()
    second = await subscription.next_msg(timeout=2)
    assert time.monotonic() - committed < 1.0
    assert StringValue.FromString(second.data).value == "again"


async def test_republishing_an_outbox_row_does_not_duplicate_the_stream_message(env: EventEnv) -> None:
    org = uuid.uuid4()
    info = await env.bus.js.stream_info(env.stream)
    assert info.config.duplicate_window == DUPLICATE_WINDOW_SECONDS
    assert info.config.subjects == [f"cws.{env.service}.>"]
    relay = OutboxRelay(env.db, env.bus, env.service)
    await env.commit(org, "invoice.issued", "once")
    assert await relay.publish_batch() == 1
    assert await env.stream_count() == 1

    # The relay died after publishing but before its commit: the row is still unpublished.
    await env.admin("UPDATE {s}.event_outbox SET published_at = NULL")
    assert await relay.publish_batch() == 1
    assert await env.stream_count() == 1, "JetStream dropped the re-publish as a duplicate"
    assert await env.unpublished() == 0
    assert await relay.publish_batch() == 0

    await env.commit(org, "invoice.issued", "twice")
    assert await relay.publish_batch() == 1
    assert await env.stream_count() == 2
    ids = [m.headers["Nats-Msg-Id"] for m in await env.stream_messages()]
    assert ids == [r[0] for r in await env.outbox()]


async def test_events_of_one_unit_of_work_are_published_in_the_order_raised(env: EventEnv) -> None:
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service)
    raised = [f"e{n:02d}" for n in range(20)]
    await env.commit(org, "ordered.event", *raised)
    await env.commit(org, "ordered.event", "later")
    assert await relay.publish_batch() == 21
    assert [StringValue.FromString(m.data).value for m in await env.stream_messages()] == [*raised, "later"]


async def test_a_backlog_is_published_in_order_a_batch_at_a_time_and_a_lost_mark_is_deduplicated(
    env: EventEnv,
) -> None:
    """Batches are sent pipelined (all rows, then all acknowledgements): still in (created_at, id)
    order, and a batch whose marks were lost (the relay died after JetStream acknowledged it) is
    published again without a second copy in the stream."""
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service, batch_size=100)
    raised = [f"e{n:03d}" for n in range(250)]
    await env.commit(org, "backlog.event", *raised[:120])
    await env.commit(org, "backlog.event", *raised[120:])
    assert [await relay.publish_batch() for _ in range(4)] == [100, 100, 50, 0]
    messages = await env.stream_messages()
    assert [StringValue.FromString(m.data).value for m in messages] == raised
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [r[0] for r in await env.outbox()]

    # The middle batch's marks never committed: those rows go out again, and JetStream drops them.
    await env.admin(
        "UPDATE {s}.event_outbox SET published_at = NULL WHERE id IN "
        "(SELECT id FROM {s}.event_outbox ORDER BY created_at, id OFFSET 100 LIMIT 100)"
    )
    assert await relay.publish_batch() == 100
    assert await env.unpublished() == 0
    assert await env.stream_count() == 250, "every re-publish was a duplicate"


async def test_rows_jetstream_refuses_stay_in_the_outbox_with_the_error(env: EventEnv) -> None:
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service)
    # No stream covers this service's subjects, so JetStream never acknowledges its event.
    unstreamed = Event(f"cws.nostream_{env.service}.thing.event", StringValue)
    async with unit_of_work(env.db, org) as uow:
        uow.add_event(env.event("fine.event"), StringValue(value="ok"))
        uow.add_event(unstreamed, StringValue(value="lost?"))
    with pytest.raises(RuntimeError, match="not acknowledged"):
        await relay.publish_batch()
    rows = {r[1]: r for r in await env.outbox()}
    assert rows[env.subject("fine.event")][4] is not None
    stuck = rows[unstreamed.subject]
    assert stuck[4] is None and stuck[5] == 1 and stuck[6]
    assert await env.stream_count() == 1


async def test_events_committed_while_nats_is_down_are_published_when_it_is_back(
    env: EventEnv, stack: Any, iam: Any
) -> None:
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service, poll_interval=0.2)
    env.spawn(relay.run())
    await env.commit(org, "before.outage", "b1", "b2")
    await eventually(env.all_published, message="events before the outage to be published")
    try:
        await asyncio.to_thread(stack.nats.stop)
        await eventually(
            lambda: not env.bus.is_connected, timeout=5, message="the client to notice NATS is gone"
        )
        for n in range(5):
            await env.commit(org, "during.outage", f"d{n}")
        # A relay that tries meanwhile hears no acknowledgement and keeps every row, with the error.
        with pytest.raises(RuntimeError, match="not acknowledged"):
            await relay.publish_batch()
        assert await env.unpublished() == 5
        failed = [r for r in await env.outbox() if r[4] is None]
        assert all(r[5] >= 1 and r[6] for r in failed), failed
    finally:
        if stack.nats.process is None or stack.nats.process.poll() is not None:
            await asyncio.to_thread(stack.nats.start)
    try:
        await eventually(env.all_published, timeout=20, message="the backlog to be published")
        rows = await env.outbox()
        messages = await env.stream_messages()
        assert len(messages) == 7
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [r[0] for r in rows], "none lost, none twice"
        assert [StringValue.FromString(m.data).value for m in messages][:2] == ["b1", "b2"]
        assert sorted(StringValue.FromString(m.data).value for m in messages[2:]) == [
            f"d{n}" for n in range(5)
        ]
    finally:
        # Other tests share this NATS server with the IAM process: hand it back ready.
        async def iam_ready() -> bool:
            return await ready(iam.readyz_url) and await grpc_serving(iam.target)

        await eventually(iam_ready, timeout=30, message="the IAM process to reconnect to NATS")


# --- consumers ------------------------------------------------------------------------------


async def test_a_consumer_gets_the_decoded_message_and_its_meta_in_the_events_org(env: EventEnv) -> None:
    org = uuid.uuid4()
    received: list[tuple[Any, EventMeta, uuid.UUID | None]] = []

    async def handler(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        received.append((message, meta, uow.org_id))

    env.consume("meta-reader", "visit.booked", handler)
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=0.2).run())
    token = request_context.set_current(request_context.RequestContext(request_id="req-meta-1"))
    try:
        await env.commit(org, "visit.booked", "tuesday")
    finally:
        request_context.reset_current(token)

    [(message, meta, uow_org)] = await eventually(lambda: received, message="the event to be handled")
    [(row_id, *_)] = await env.outbox()
    created_at = (await env.admin("SELECT created_at FROM {s}.event_outbox"))[0][0]
    assert isinstance(message, StringValue) and message.value == "tuesday"
    assert meta == EventMeta(
        id=row_id,
        subject=env.subject("visit.booked"),
        org_id=str(org),
        request_id="req-meta-1",
        time=created_at,
    )
    assert uow_org == org, "the handler runs in the event's org"


async def test_an_event_delivered_twice_is_handled_once(env: EventEnv) -> None:
    org = uuid.uuid4()
    handled: list[tuple[str, str, uuid.UUID | None]] = []

    async def handler(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        handled.append((meta.id, message.value, uow.org_id))
        uow.add_event(env.event("effects.recorded"), StringValue(value=meta.subject))

    env.consume("orders-projector", "orders.placed", handler, max_deliver=3, ack_wait_seconds=2)
    event_id = str(uuid.uuid4())
    await env.publish("orders.placed", event_id, org, "first copy")
    # The same event again, under a message id JetStream does not recognise, as a producer that
    # re-published after the duplicate window would send it.
    await env.publish("orders.placed", event_id, org, "second copy", msg_id=f"{event_id}-again")
    assert await env.stream_count() == 2
    await eventually(lambda: env.consumer_done("orders-projector", 2), message="both copies acknowledged")

    assert handled == [(event_id, "first copy", org)]
    inbox = await env.admin("SELECT consumer, event_id FROM {s}.event_inbox")
    assert inbox == [("orders-projector", event_id)]
    effects = [r for r in await env.outbox() if r[1] == env.subject("effects.recorded")]
    assert len(effects) == 1 and effects[0][3] == org, (
        "the handler's effect committed once, in the event's org"
    )
    assert await env.dead_letters() == 0


async def test_a_relay_cancelled_as_it_is_woken_stops(env: EventEnv) -> None:
    """Python 3.11's wait_for drops a cancel that arrives as the wait completes; the relay's loop must
    still stop (libs/common/cancellation.py), or a service's shutdown waits for it until killed."""
    relay = OutboxRelay(env.db, env.bus, env.service, poll_interval=3600)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)  # its first round done, waiting to be woken
        relay._wake.set()
        task.cancel()  # in the same turn of the event loop
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done == {task} and task.cancelled(), "the relay kept running after it was cancelled"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_batching_consumer_commits_many_events_at_once_and_sets_a_poison_one_apart(
    env: EventEnv,
) -> None:
    """With `batch`, fetched events share a transaction, each in its own org with its inbox row. One
    event that always fails rolls its batch back; the others are then handled one by one, once each,
    and only the failing one is retried and parked."""
    orgs = [uuid.uuid4(), uuid.uuid4()]
    calls: list[str] = []

    async def handler(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        calls.append(message.value)
        if message.value == "poison":
            raise RuntimeError("cannot handle poison")
        seen = await uow.session.scalar(text("SELECT current_setting('app.current_org_id', true)"))
        tx = await uow.session.scalar(text("SELECT txid_current()"))
        assert (seen or "") == (meta.org_id or ""), "each event of a batch in its own org"
        uow.add_event(env.event("effects.recorded"), StringValue(value=f"{message.value} {tx}"), uow.org_id)

    # Published before the consumer exists, so its first fetch gets them all.
    values = [f"v{n:02d}" for n in range(30)]
    ids = [str(uuid.uuid4()) for _ in values]
    for n, (value, event_id) in enumerate(zip(values, ids, strict=True)):
        await env.publish("stock.moved", event_id, orgs[n % 2] if n != 7 else None, value)
    # The same event again under another message id: handled once, though in the same batch.
    await env.publish("stock.moved", ids[3], orgs[1], "v03", msg_id=f"{ids[3]}-again")
    poison_id = str(uuid.uuid4())
    await env.publish("stock.moved", poison_id, orgs[0], "poison")
    for n in range(30, 40):
        values.append(f"v{n:02d}")
        await env.publish("stock.moved", str(uuid.uuid4()), orgs[n % 2], values[-1])
    env.consume("stock-projector", "stock.moved", handler, max_deliver=2, batch=20)

    await eventually(env.dead_letters, timeout=20, message="the poison event to be parked")
    await eventually(lambda: env.consumer_done("stock-projector", 42), message="every event acknowledged")
    effects = [
        StringValue.FromString(r[2]).value.split() for r in await env.outbox() if r[1].endswith("recorded")
    ]
    assert sorted(value for value, _ in effects) == sorted(values), "every good event once, none lost"
    by_tx: dict[str, int] = {}
    for _, tx in effects:
        by_tx[tx] = by_tx.get(tx, 0) + 1
    assert max(by_tx.values()) == 20, "the first batch of 20 committed as one transaction"
    assert calls.count("poison") in (2, 3), "(in its batch,) alone, then alone again on redelivery"
    inbox = await env.admin("SELECT event_id FROM {s}.event_inbox")
    assert len(inbox) == 40 and poison_id not in {r[0] for r in inbox}
    [(parked, deliveries)] = await env.admin("SELECT event_id, deliveries FROM {s}.event_dead_letters")
    assert (parked, deliveries) == (poison_id, 2)


async def test_a_batch_sets_the_org_once_per_run_of_one_org_s_events(env: EventEnv) -> None:
    """A batch's events mostly share an org: the transaction's org is set when it changes, not per
    event, and every handler still runs in its own event's org, also after another handler
    switched the org itself."""
    a, b, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    orgs: list[uuid.UUID | None] = [a, a, a, b, b, None, None, a, a, a]
    seen: dict[str, str] = {}

    async def handler(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        seen[message.value] = (
            await uow.session.scalar(text("SELECT current_setting('app.current_org_id', true)")) or ""
        )
        assert uow.org_id == (uuid.UUID(meta.org_id) if meta.org_id else None)
        if message.value == "e7":  # a handler that moves its unit to another org (as billing's may)
            await uow.set_org(elsewhere)
        uow.add_event(env.event("effects.recorded"), StringValue(value=message.value), uow.org_id)

    org_settings: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if "set_config" in statement:
            org_settings.append(statement)

    for n, org in enumerate(orgs):
        await env.publish("stock.moved", str(uuid.uuid4()), org, f"e{n}")
    sa_event.listen(env.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        env.consume("stock-counter", "stock.moved", handler, batch=20)
        await eventually(lambda: env.consumer_done("stock-counter", len(orgs)), message="all acknowledged")
    finally:
        sa_event.remove(env.db.engine.sync_engine, "before_cursor_execute", count)
    assert seen == {f"e{n}": str(org or "") for n, org in enumerate(orgs)}, "each in its event's org"
    # a; b; none; a; e7's own switch; a again after it. Was one per event (10) before.
    assert len(org_settings) == 6, org_settings
    effects = {
        StringValue.FromString(r[2]).value: r[3] for r in await env.outbox() if r[1].endswith("recorded")
    }
    assert effects["e8"] == a and effects["e7"] == elsewhere and effects["e5"] is None


async def test_failing_event_is_parked_after_max_deliver_and_can_be_replayed(env: EventEnv) -> None:
    org = uuid.uuid4()
    deliveries: list[str] = []
    markers: list[str] = []

    async def fails_but_for_markers(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        if message.value == "marker":
            markers.append(meta.id)
            return
        deliveries.append(meta.id)
        uow.add_event(env.event("effects.partial"), StringValue(value="must roll back"))
        raise RuntimeError(f"cannot handle {meta.id}")

    declared = env.consume(
        "payments-sync", "payments.captured", fails_but_for_markers, max_deliver=2, ack_wait_seconds=1
    )
    event_id = str(uuid.uuid4())
    await env.publish("payments.captured", event_id, org, "pay-1")

    await eventually(env.dead_letters, timeout=15, message="the event to be parked")
    [row] = await env.admin(
        "SELECT id, consumer, event_id, subject, payload, headers, org_id, error, deliveries, replayed_at "
        "FROM {s}.event_dead_letters"
    )
    dead_id, name, parked_event, subject, payload, headers, org_id, error, count, replayed_at = row
    assert (name, parked_event, subject, org_id) == (
        "payments-sync",
        event_id,
        env.subject("payments.captured"),
        org,
    )
    assert StringValue.FromString(payload).value == "pay-1"
    assert json.loads(headers)["ce-id"] == event_id
    assert error == f"cannot handle {event_id}"
    assert count == 2 and replayed_at is None
    assert deliveries == [event_id, event_id]

    # Parked means acknowledged: a marker published afterwards is handled and acknowledged, and the
    # server holds everything up to it as acknowledged, so the parked event is never delivered again.
    marker_id = str(uuid.uuid4())
    await env.publish("payments.captured", marker_id, org, "marker")
    await eventually(lambda: env.consumer_done("payments-sync", 2), message="the marker acknowledged")
    assert markers == [marker_id]
    assert deliveries == [event_id, event_id]
    assert await env.admin("SELECT consumer, event_id FROM {s}.event_inbox") == [("payments-sync", marker_id)]
    assert await env.outbox() == [], "no partial effects"

    # A replay whose handler still fails changes nothing.
    async def still_broken(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        uow.add_event(env.event("effects.partial"), StringValue(value="must roll back"))
        raise RuntimeError("still broken")

    with pytest.raises(RuntimeError, match="still broken"):
        await replay_dead_letter(env.db, dead_id, [Consumer("payments-sync", declared.event, still_broken)])
    assert await env.admin("SELECT replayed_at FROM {s}.event_dead_letters") == [(None,)]
    assert await env.outbox() == []

    # The fixed handler runs once, in the event's org, and the dead letter is marked replayed.
    replayed: list[tuple[StringValue, str, str, uuid.UUID | None]] = []

    async def fixed(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        replayed.append((message, meta.subject, meta.id, uow.org_id))
        uow.add_event(env.event("effects.replayed"), StringValue(value="done"))

    consumers = [
        Consumer("other-consumer", env.event("other.thing"), still_broken),
        Consumer("payments-sync", declared.event, fixed),
    ]
    await replay_dead_letter(env.db, dead_id, consumers)
    assert replayed == [(StringValue(value="pay-1"), env.subject("payments.captured"), event_id, org)]
    [(replayed_at,)] = await env.admin("SELECT replayed_at FROM {s}.event_dead_letters")
    assert replayed_at is not None
    assert [(r[1], r[3]) for r in await env.outbox()] == [(env.subject("effects.replayed"), org)]

    # Replaying again (a second click, two operators) must not run the effects twice.
    await replay_dead_letter(env.db, dead_id, consumers)
    assert len(replayed) == 1
    assert len(await env.outbox()) == 1


async def test_a_consumer_waits_out_its_database_being_away_without_spending_deliveries(
    env: EventEnv,
) -> None:
    """While the handler's database is away (a restart longer than the redelivery backoff) the event
    is tried again in place, kept in progress, and handled once the database is back: never parked
    (each failure used to be a counted redelivery, so the event was parked after max_deliver, or
    dropped when the park failed too)."""
    org = uuid.uuid4()
    away = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    attempts: list[str] = []
    handled: list[str] = []

    async def handler(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        attempts.append(meta.id)
        if len(attempts) <= 4:
            # The database is away: libpq's own error, as every query raises it during an outage.
            await psycopg.AsyncConnection.connect(away, connect_timeout=2)
        handled.append(message.value)
        uow.add_event(env.event("effects.recorded"), StringValue(value=message.value))

    env.consume("leads-projector", "leads.created", handler, max_deliver=2, ack_wait_seconds=1)
    event_id = str(uuid.uuid4())
    await env.publish("leads.created", event_id, org, "lead-1")

    async def handled_or_parked() -> bool:
        return bool(handled) or await env.dead_letters() > 0

    await eventually(handled_or_parked, timeout=15, message="the event handled or parked")
    assert await env.dead_letters() == 0
    assert handled == ["lead-1"] and attempts == [event_id] * 5
    await eventually(lambda: env.consumer_done("leads-projector", 1), message="the event acknowledged")
    info = await env.bus.js.consumer_info(env.stream, "leads-projector")
    assert info.num_redelivered == 0, "kept in progress: its ack wait never ran out"
    assert [(r[1], r[3]) for r in await env.outbox()] == [(env.subject("effects.recorded"), org)]


async def test_replaying_a_dead_letter_whose_consumer_is_gone_is_a_failed_precondition(env: EventEnv) -> None:
    org = uuid.uuid4()

    async def fails(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        raise RuntimeError("cannot handle")

    env.consume("retired-projector", "legacy.event", fails, max_deliver=1)
    await env.publish("legacy.event", str(uuid.uuid4()), org, "old")
    await eventually(env.dead_letters, message="the event to be parked")
    [(dead_id,)] = await env.admin("SELECT id FROM {s}.event_dead_letters")

    ran: list[str] = []

    async def unrelated(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        ran.append(message.value)

    # The service no longer declares "retired-projector": another consumer of the same event is not it.
    with pytest.raises(FailedPrecondition) as refused:
        await replay_dead_letter(
            env.db, dead_id, [Consumer("new-projector", env.event("legacy.event"), unrelated)]
        )
    assert refused.value.code == "consumer_unknown"
    assert "retired-projector" in refused.value.detail
    assert ran == []
    assert await env.admin("SELECT replayed_at FROM {s}.event_dead_letters") == [(None,)]
    assert await env.admin("SELECT count(*) FROM {s}.event_inbox") == [(0,)]


# --- followers and broadcasts ---------------------------------------------------------------


async def test_follow_subject_reads_from_the_window_start(env: EventEnv) -> None:
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service)
    await env.commit(org, "session.revoked", "old")
    assert await relay.publish_batch() == 1
    # A window that starts after the old event (stored at `old.time`) and before anything published
    # from here on: half the time elapsed since it was stored.
    old = await env.bus.js.get_msg(env.stream, 1)
    assert old.time is not None
    window = (datetime.now(UTC) - old.time) / 2
    assert window > timedelta(0)
    seen: list[str] = []

    async def on_message(message: Msg) -> None:
        seen.append(StringValue.FromString(message.data).value)

    env.spawn(follow_subject(env.bus, env.subject("session.*"), window, on_message))
    await env.commit(org, "session.revoked", "new")
    await env.commit(org, "other.thing", "not followed")
    await env.commit(org, "session.revoked", "marker")
    assert await relay.publish_batch() == 3
    # The follower is ordered: once the marker is in, anything it would have replayed or followed
    # before it is in too.
    await eventually(lambda: seen and seen[-1] == "marker", timeout=5, message="the marker")
    assert seen == ["new", "marker"], (
        "the event older than the window is not replayed, other subjects not followed"
    )


async def test_follow_subject_is_live_only_once_its_window_is_replayed(env: EventEnv) -> None:
    """Issue 9: a cache said to be live before it has read its window would trust a revocation it has
    not seen yet. Slow handling widens the gap that used to exist between subscribing and catching up."""
    org = uuid.uuid4()
    backlog = 30
    for i in range(backlog):
        await env.publish("session.revoked", str(uuid.uuid4()), org, f"old-{i}")
    seen: list[str] = []
    live: list[tuple[bool, int]] = []  # each on_live call, with how many messages were handled by then

    async def on_message(message: Msg) -> None:
        await asyncio.sleep(0.01)
        seen.append(StringValue.FromString(message.data).value)

    env.spawn(
        follow_subject(
            env.bus,
            env.subject("session.*"),
            timedelta(minutes=5),
            on_message,
            lambda fed: live.append((fed, len(seen))),
        )
    )
    await eventually(lambda: any(fed for fed, _ in live), timeout=10, message="the follower to be live")
    assert live[0] == (True, backlog), live
    assert seen == [f"old-{i}" for i in range(backlog)]
    # Live means following: what comes next is handled without another change of state.
    await env.publish("session.revoked", str(uuid.uuid4()), org, "new")
    await eventually(lambda: seen[-1:] == ["new"], timeout=5, message="the new event")
    assert live == [(True, backlog)]


async def test_follow_subject_with_an_empty_window_is_live_at_once(env: EventEnv) -> None:
    live: list[bool] = []

    async def on_message(message: Msg) -> None:
        return None

    # The stream exists (an event on another subject) but holds nothing this follower wants.
    await env.publish("other.thing", str(uuid.uuid4()), uuid.uuid4(), "not followed")
    env.spawn(
        follow_subject(env.bus, env.subject("session.*"), timedelta(minutes=5), on_message, live.append)
    )
    await eventually(lambda: live == [True], timeout=5, message="the follower to be live")


async def test_a_broadcast_reaches_every_replica_and_outlives_a_failing_handler(
    env: EventEnv, stack: Any
) -> None:
    """Two replicas of a service, each with its own connection: a durable consumer would hand each
    event to one of them; a broadcast hands every event to both, so each can empty its own cache."""
    org = uuid.uuid4()
    second_bus = EventBus(stack.nats.url, name=f"test-{env.service}-replica-2", **stack.nats.login("admin"))
    await asyncio.wait_for(second_bus.connect(), 10)
    heard: dict[str, list[tuple[str, str, str]]] = {"replica-1": [], "replica-2": []}

    def replica(name: str) -> Broadcast[StringValue]:
        async def forget(message: StringValue, meta: EventMeta) -> None:
            heard[name].append((message.value, meta.id, meta.org_id))
            if message.value == "poison":
                raise ValueError("cannot read this one")

        return Broadcast("org-profile-cache", env.event("profile.changed"), forget)

    try:
        env.spawn(run_broadcast(env.bus, replica("replica-1")))
        env.spawn(run_broadcast(second_bus, replica("replica-2")))
        env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=0.2).run())
        await env.commit(org, "profile.changed", "first", "poison", "after the poison")

        def every_replica_heard_all() -> bool:
            return all(len(events) == 3 for events in heard.values())

        await eventually(every_replica_heard_all, message="both replicas to hear all three events")
        ids = [r[0] for r in await env.outbox()]
        expected = [
            (value, event_id, str(org))
            for value, event_id in zip(["first", "poison", "after the poison"], ids, strict=True)
        ]
        assert heard == {"replica-1": expected, "replica-2": expected}
    finally:
        for task in env.tasks:
            task.cancel()
        await asyncio.gather(*env.tasks, return_exceptions=True)
        await asyncio.wait_for(second_bus.close(), 10)


async def test_closing_the_bus_after_stopping_consumers_is_prompt(env: EventEnv, stack: Any) -> None:
    """A service stops by cancelling its consumers and then closing the bus; that must not wait for
    nats' drain timeout (30 s) on subscriptions nobody reads any more."""

    async def handler(uow: UnitOfWork, message: StringValue, meta: EventMeta) -> None:
        return None

    async def on_message(message: Msg) -> None:
        return None

    # Every pull the consumer sends is a message on this subject; one with `expires` lingers until it
    # expires, and the consumer sends the next only after that, empty, pull has ended.
    pulls: list[dict[str, Any]] = []

    async def on_pull(message: Msg) -> None:
        pulls.append(json.loads(message.data or b"{}"))

    assert env.bus.nc is not None
    watch = await env.bus.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{env.stream}.closing", cb=on_pull)

    bus = EventBus(stack.nats.url, name=f"test-{env.service}-closing", **stack.nats.login("admin"))
    await asyncio.wait_for(bus.connect(), 10)
    spec = Consumer("closing", env.event("closing.event"), handler)
    tasks = [
        asyncio.create_task(DurableConsumer(spec, db=env.db, bus=bus, service=env.service).run()),
        asyncio.create_task(follow_subject(bus, env.subject("closing.*"), timedelta(minutes=1), on_message)),
    ]
    try:
        await env.publish("closing.event", str(uuid.uuid4()), uuid.uuid4(), "x")
        await eventually(lambda: env.consumer_done("closing", 1), message="the consumer to run")
        handled_at = len(pulls)
        await eventually(
            lambda: sum(1 for pull in pulls[handled_at:] if "expires" in pull) >= 2,
            message="an empty pull to expire and the next to be sent",
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await watch.unsubscribe()
    started = time.monotonic()
    await asyncio.wait_for(bus.close(), 35)
    assert time.monotonic() - started < 3
