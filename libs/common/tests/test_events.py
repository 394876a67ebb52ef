"""The event outbox, the relay and durable consumers against real Postgres and NATS JetStream.

Each test gets its own schema (built from `service_metadata`, like a service's migration would) and
its own stream `cws.<schema>.>`, so nothing here touches another test's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import nats.errors
import psycopg
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.msg import Msg
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from libs.common import context as request_context
from libs.common.bus import DUPLICATE_WINDOW_SECONDS, EventBus, event_headers, follow_subject, stream_name
from libs.common.db import Database, OutboxTables, UnitOfWork, outbox_channel, service_metadata, unit_of_work
from libs.common.events import DurableConsumer, OutboxRelay, replay_dead_letter
from libs.common.settings import sqlalchemy_url

APP_ROLE = "cws_app"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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

    def subject(self, tail: str) -> str:
        return f"cws.{self.service}.{tail}"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    async def admin(self, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Superuser SQL against this test's schema, written as {s}."""
        async with await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True) as conn:
            cursor = await conn.execute(sql.SQL(statement).format(s=sql.Identifier(self.service)), params)
            return await cursor.fetchall() if cursor.description else []

    async def commit(self, org_id: uuid.UUID, tail: str, *values: str) -> None:
        async with unit_of_work(self.db, org_id) as uow:
            for value in values:
                uow.add_event(self.subject(tail), StringValue(value=value))

    async def outbox(self) -> list[tuple[Any, ...]]:
        return await self.admin(
            "SELECT id::text, subject, payload, org_id, published_at, attempts, last_error "
            "FROM {s}.event_outbox ORDER BY created_at, id"
        )

    async def unpublished(self) -> int:
        return int(
            (await self.admin("SELECT count(*) FROM {s}.event_outbox WHERE published_at IS NULL"))[0][0]
        )

    async def stream_count(self) -> int:
        return int((await self.bus.js.stream_info(self.stream)).state.messages)

    async def stream_messages(self) -> list[Any]:
        return [
            await self.bus.js.get_msg(self.stream, seq) for seq in range(1, await self.stream_count() + 1)
        ]


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
    bus = EventBus(stack.nats.url, name=f"test-{service}")
    await asyncio.wait_for(bus.connect(), 10)
    for attempt in range(50):  # JetStream answers a moment after the port opens
        try:
            await bus.ensure_stream(service)
            break
        except nats.errors.Error:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
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
        uow.add_event(env.subject("thing.happened"), StringValue(value="with callback"))
        uow.on_commit(lambda: ran.append("committed"))
        assert ran == []  # not while the work is still open
    assert ran == ["committed"]


async def test_events_of_a_rolled_back_unit_of_work_are_never_written_or_published(env: EventEnv) -> None:
    org = uuid.uuid4()
    subscription = await env.bus.js.subscribe(env.subject(">"), stream=env.stream)
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=0.2).run())

    with pytest.raises(Boom):
        async with unit_of_work(env.db, org) as uow:
            uow.add_event(env.subject("thing.happened"), StringValue(value="raised"))
            raise Boom
    with pytest.raises(DBAPIError):
        async with unit_of_work(env.db, org) as uow:
            uow.add_event(env.subject("thing.happened"), StringValue(value="failed-sql"))
            await uow.session.execute(text("SELECT 1 / 0"))
    assert await env.outbox() == []

    # A marker committed afterwards arrives, and it is the only thing that ever did.
    await env.commit(org, "thing.happened", "committed")
    message = await subscription.next_msg(timeout=5)
    assert StringValue.FromString(message.data).value == "committed"
    await eventually(lambda: _equals(env.unpublished(), 0), "the marker marked published")
    assert await env.stream_count() == 1
    assert [StringValue.FromString(r[2]).value for r in await env.outbox()] == ["committed"]


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return (await value) == expected


async def _listening(env: EventEnv) -> bool:
    rows = await env.admin(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
        (f'LISTEN "{outbox_channel(env.service)}"',),
    )
    return rows[0][0] == 1


async def test_committed_events_are_published_promptly_with_cloudevents_headers(env: EventEnv) -> None:
    org = uuid.uuid4()
    subscription = await env.bus.js.subscribe(env.subject(">"), stream=env.stream)
    # Polling every 30 s: an event that arrives within a second was woken by NOTIFY, not the poll.
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=30).run())
    await eventually(lambda: _listening(env), "the relay to LISTEN")
    await asyncio.sleep(0.1)  # let the catch-up pass after LISTEN finish

    token = request_context.set_current(request_context.RequestContext(request_id="req-outbox-1"))
    try:
        await env.commit(org, "booking.confirmed", "hello")
    finally:
        request_context.reset_current(token)
    committed = time.monotonic()
    message = await subscription.next_msg(timeout=2)
    assert time.monotonic() - committed < 1.0

    await eventually(lambda: _equals(env.unpublished(), 0), "the row marked published", timeout=2)
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


async def test_rows_jetstream_refuses_stay_in_the_outbox_with_the_error(env: EventEnv) -> None:
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service)
    async with unit_of_work(env.db, org) as uow:
        uow.add_event(env.subject("fine.event"), StringValue(value="ok"))
        # No stream covers this subject, so JetStream never acknowledges it.
        uow.add_event(f"cws.nostream_{env.service}.event", StringValue(value="lost?"))
    with pytest.raises(RuntimeError, match="not acknowledged"):
        await relay.publish_batch()
    rows = {r[1]: r for r in await env.outbox()}
    assert rows[env.subject("fine.event")][4] is not None
    stuck = rows[f"cws.nostream_{env.service}.event"]
    assert stuck[4] is None and stuck[5] == 1 and stuck[6]
    assert await env.stream_count() == 1


async def test_events_committed_while_nats_is_down_are_published_when_it_is_back(
    env: EventEnv, stack: Any, iam: Any
) -> None:
    org = uuid.uuid4()
    env.spawn(OutboxRelay(env.db, env.bus, env.service, poll_interval=0.2).run())
    await env.commit(org, "before.outage", "b1", "b2")
    await eventually(lambda: _equals(env.unpublished(), 0), "events before the outage to be published")
    try:
        await asyncio.to_thread(stack.nats.stop)
        await eventually(
            lambda: _is(not env.bus.is_connected), "the client to notice NATS is gone", timeout=5
        )
        for n in range(5):
            await env.commit(org, "during.outage", f"d{n}")
        await asyncio.sleep(1.0)  # the relay was woken by each commit and had time to try
        assert await env.unpublished() == 5
    finally:
        if stack.nats.process is None or stack.nats.process.poll() is not None:
            await asyncio.to_thread(stack.nats.start)
    try:
        await eventually(lambda: _equals(env.unpublished(), 0), "the backlog to be published", timeout=20)
        rows = await env.outbox()
        messages = await env.stream_messages()
        assert len(messages) == 7
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [r[0] for r in rows], "none lost, none twice"
        assert [StringValue.FromString(m.data).value for m in messages][:2] == ["b1", "b2"]
        assert sorted(StringValue.FromString(m.data).value for m in messages[2:]) == [
            f"d{n}" for n in range(5)
        ]
    finally:
        await _wait_for_iam(iam)


async def _is(value: bool) -> bool:
    return value


async def _wait_for_iam(iam: Any) -> None:
    """Other tests share this NATS server with the IAM process: hand it back ready."""

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(f"http://127.0.0.1:{iam.http_port}/readyz")
            if response.status_code != 200:
                return False
            async with grpc.aio.insecure_channel(iam.target) as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
            return health.status == health_pb2.HealthCheckResponse.SERVING
        except (httpx.HTTPError, grpc.aio.AioRpcError):
            return False

    await eventually(ready, "the IAM process to reconnect to NATS", timeout=30)


# --- consumers ------------------------------------------------------------------------------


async def _publish(
    env: EventEnv, tail: str, event_id: str, org: uuid.UUID, value: str, msg_id: str = ""
) -> None:
    headers = event_headers(event_id, env.subject(tail), env.service, datetime.now(UTC), str(org), "req-c")
    if msg_id:
        headers["Nats-Msg-Id"] = msg_id
    await env.bus.js.publish(env.subject(tail), StringValue(value=value).SerializeToString(), headers=headers)


async def _consumer_done(env: EventEnv, name: str, stream_seq: int) -> bool:
    try:
        info = await env.bus.js.consumer_info(env.stream, name)
    except nats.errors.Error:  # not created yet (the consumer retries after a refused subscribe)
        return False
    return bool(info.ack_floor and info.ack_floor.stream_seq >= stream_seq and not info.num_ack_pending)


async def test_an_event_delivered_twice_is_handled_once(env: EventEnv) -> None:
    org = uuid.uuid4()
    handled: list[tuple[str, uuid.UUID | None]] = []

    async def handler(uow: UnitOfWork, message: Msg) -> None:
        handled.append(((message.headers or {})["ce-id"], uow.org_id))
        uow.add_event(env.subject("effects.recorded"), StringValue(value=message.subject))

    env.spawn(
        DurableConsumer(
            db=env.db,
            bus=env.bus,
            service=env.service,
            name="orders-projector",
            stream=env.stream,
            subject=env.subject("orders.>"),
            handler=handler,
            max_deliver=3,
            ack_wait_seconds=2,
        ).run()
    )
    event_id = str(uuid.uuid4())
    await _publish(env, "orders.placed", event_id, org, "first copy")
    # The same event again, under a message id JetStream does not recognise, as a producer that
    # re-published after the duplicate window would send it.
    await _publish(env, "orders.placed", event_id, org, "second copy", msg_id=f"{event_id}-again")
    assert await env.stream_count() == 2
    await eventually(lambda: _consumer_done(env, "orders-projector", 2), "both copies acknowledged")

    assert handled == [(event_id, org)]
    inbox = await env.admin("SELECT consumer, event_id FROM {s}.event_inbox")
    assert inbox == [("orders-projector", event_id)]
    effects = [r for r in await env.outbox() if r[1] == env.subject("effects.recorded")]
    assert len(effects) == 1 and effects[0][3] == org, (
        "the handler's effect committed once, in the event's org"
    )
    assert await env.admin("SELECT count(*) FROM {s}.event_dead_letters") == [(0,)]


async def test_failing_event_is_parked_after_max_deliver_and_can_be_replayed(env: EventEnv) -> None:
    org = uuid.uuid4()
    deliveries: list[int] = []

    async def always_fails(uow: UnitOfWork, message: Msg) -> None:
        deliveries.append(message.metadata.num_delivered)
        uow.add_event(env.subject("effects.partial"), StringValue(value="must roll back"))
        raise RuntimeError(f"cannot handle {(message.headers or {})['ce-id']}")

    consumer = DurableConsumer(
        db=env.db,
        bus=env.bus,
        service=env.service,
        name="payments-sync",
        stream=env.stream,
        subject=env.subject("payments.>"),
        handler=always_fails,
        max_deliver=2,
        ack_wait_seconds=1,
    )
    env.spawn(consumer.run())
    event_id = str(uuid.uuid4())
    await _publish(env, "payments.captured", event_id, org, "pay-1")

    async def parked() -> bool:
        return (await env.admin("SELECT count(*) FROM {s}.event_dead_letters"))[0][0] == 1

    await eventually(parked, "the event to be parked", timeout=15)
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
    assert deliveries == [1, 2]

    # Parked means acknowledged: no third delivery, nothing in the inbox, no partial effects.
    await asyncio.sleep(1.5)
    assert deliveries == [1, 2]
    await eventually(
        lambda: _consumer_done(env, "payments-sync", 1), "the parked message acknowledged", timeout=3
    )
    assert await env.admin("SELECT count(*) FROM {s}.event_inbox") == [(0,)]
    assert await env.outbox() == []

    # A replay whose handler still fails changes nothing.
    async def still_broken(uow: UnitOfWork, message: Msg) -> None:
        uow.add_event(env.subject("effects.partial"), StringValue(value="must roll back"))
        raise RuntimeError("still broken")

    with pytest.raises(RuntimeError, match="still broken"):
        await replay_dead_letter(env.db, dead_id, still_broken)
    assert await env.admin("SELECT replayed_at FROM {s}.event_dead_letters") == [(None,)]
    assert await env.outbox() == []

    # The fixed handler runs once, in the event's org, and the dead letter is marked replayed.
    replayed: list[tuple[str, bytes, str, uuid.UUID | None]] = []

    async def fixed(uow: UnitOfWork, message: Msg) -> None:
        replayed.append((message.subject, message.data, (message.headers or {})["ce-id"], uow.org_id))
        uow.add_event(env.subject("effects.replayed"), StringValue(value="done"))

    await replay_dead_letter(env.db, dead_id, fixed)
    assert replayed == [(env.subject("payments.captured"), payload, event_id, org)]
    [(replayed_at,)] = await env.admin("SELECT replayed_at FROM {s}.event_dead_letters")
    assert replayed_at is not None
    assert [(r[1], r[3]) for r in await env.outbox()] == [(env.subject("effects.replayed"), org)]

    # Replaying again (a second click, two operators) must not run the effects twice.
    await replay_dead_letter(env.db, dead_id, fixed)
    assert len(replayed) == 1
    assert len(await env.outbox()) == 1


async def test_follow_subject_reads_from_the_window_start(env: EventEnv) -> None:
    org = uuid.uuid4()
    relay = OutboxRelay(env.db, env.bus, env.service)
    await env.commit(org, "session.revoked", "old")
    assert await relay.publish_batch() == 1
    await asyncio.sleep(1.0)
    seen: list[str] = []

    async def on_message(message: Msg) -> None:
        seen.append(StringValue.FromString(message.data).value)

    env.spawn(follow_subject(env.bus, env.subject("session.>"), timedelta(seconds=0.5), on_message))
    await env.commit(org, "session.revoked", "new")
    await env.commit(org, "other.thing", "not followed")
    assert await relay.publish_batch() == 2
    await eventually(lambda: _is(seen == ["new"]), "the recent event", timeout=5)
    await asyncio.sleep(0.2)
    assert seen == ["new"], "the event older than the window is not replayed, other subjects not followed"


async def test_closing_the_bus_after_stopping_consumers_is_prompt(env: EventEnv, stack: Any) -> None:
    """A service stops by cancelling its consumers and then closing the bus; that must not wait for
    nats' drain timeout (30 s) on subscriptions nobody reads any more."""

    async def handler(uow: UnitOfWork, message: Msg) -> None:
        return None

    async def on_message(message: Msg) -> None:
        return None

    bus = EventBus(stack.nats.url, name=f"test-{env.service}-closing")
    await asyncio.wait_for(bus.connect(), 10)
    tasks = [
        asyncio.create_task(
            DurableConsumer(
                db=env.db,
                bus=bus,
                service=env.service,
                name="closing",
                stream=env.stream,
                subject=env.subject("closing.>"),
                handler=handler,
            ).run()
        ),
        asyncio.create_task(follow_subject(bus, env.subject("closing.>"), timedelta(minutes=1), on_message)),
    ]
    await _publish(env, "closing.event", str(uuid.uuid4()), uuid.uuid4(), "x")
    await eventually(lambda: _consumer_done(env, "closing", 1), "the consumer to run")
    await asyncio.sleep(1.5)  # at least one empty pull has expired meanwhile
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    started = time.monotonic()
    await asyncio.wait_for(bus.close(), 35)
    assert time.monotonic() - started < 3
