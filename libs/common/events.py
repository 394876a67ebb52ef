"""Domain events on NATS JetStream: the connection, each service's stream, the outbox relay and
durable idempotent consumers.

Delivery guarantee, end to end: an event is written to the outbox in the transaction that caused
it; the relay publishes it with `Nats-Msg-Id` = event id (JetStream drops a re-publish inside the
duplicate window) and only then marks it published; a consumer records the event id in its inbox in
the same transaction as the handler's effects, so a redelivery does nothing twice. A process or NATS
dying at any point loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common import tracing
from libs.common.bus import STREAM_MAX_AGE_DAYS, EventBus, event_headers, follow_subject, stream_name
from libs.common.cancellation import raise_if_cancelled, wait_woken
from libs.common.db import (
    ORG_SETTING,
    Database,
    UnitOfWork,
    database_away,
    outbox_channel,
    unit_of_work,
    wake_on_notify,
)
from libs.common.errors import FailedPrecondition, invalid
from libs.common.event_types import Broadcast, Consumer, EventMeta
from libs.common.logs import get_logger

log = get_logger(__name__)

OUTBOX_PENDING = Gauge("cws_outbox_pending_events", "Outbox events not yet published", ["service"])
EVENTS_PUBLISHED = Counter("cws_events_published_total", "Events published to JetStream", ["service"])
BROADCAST_ERRORS = Counter(
    "cws_broadcast_handler_errors_total", "Broadcast events a replica could not apply", ["broadcast"]
)
CONSUMER_DEAD_LETTERS = Counter(
    "cws_consumer_dead_letters_total", "Events parked after the last delivery", ["service", "consumer"]
)


_UUID_ARRAY = ARRAY(UUID(as_uuid=True))


class OutboxRelay:
    """Publishes a service's outbox to JetStream, woken by LISTEN/NOTIFY, polling as a fallback."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        service: str,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        publish_timeout: float = 10.0,
    ) -> None:
        self.db = db
        self.bus = bus
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self._wake = asyncio.Event()

    async def run(self) -> None:
        listener = asyncio.create_task(
            wake_on_notify(self.db, outbox_channel(self.db.schema), self._wake),
            name=f"{self.service}-outbox-listen",
        )
        try:
            while True:
                await wait_woken(self._wake, self.poll_interval)
                self._wake.clear()
                if not self.bus.is_connected:
                    continue
                try:
                    while await self.publish_batch() == self.batch_size:
                        pass
                    await self._report_pending()
                except Exception as exc:  # NATS or the database down: keep rows, retry next tick
                    log.warning("outbox_publish_failed", error=str(exc))
                    await asyncio.sleep(self.poll_interval)
        finally:
            listener.cancel()

    async def publish_batch(self) -> int:
        """Claim up to `batch_size` unpublished rows, publish them, mark the acknowledged ones.

        The claim (FOR UPDATE SKIP LOCKED) is held until the marks commit, so two relays of one
        service never publish the same rows at once. Rows go out in (created_at, id) order on one
        connection, so JetStream stores them in that order. A crash or error anywhere before the
        commit leaves every row of the batch unpublished: the next claim publishes them again and
        JetStream drops the copies it already has (`Nats-Msg-Id` = event id). Never lost, at worst
        sent twice and deduplicated."""
        outbox = self.db.tables.outbox
        async with self.db.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(outbox)
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.created_at, outbox.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            if tracing.enabled():
                # A producer span per row, each publish in a task of its own (its log binding).
                acks = await asyncio.gather(*(self._publish(row) for row in rows), return_exceptions=True)
            else:
                acks = await self._publish_pipelined(rows)
            published = [
                row.id for row, ack in zip(rows, acks, strict=True) if not isinstance(ack, BaseException)
            ]
            failed = [
                (row.id, ack) for row, ack in zip(rows, acks, strict=True) if isinstance(ack, BaseException)
            ]
            if published:
                # One array parameter, not one bound value per row.
                await session.execute(
                    update(outbox)
                    .where(outbox.c.id == any_(bindparam("ids", published, type_=_UUID_ARRAY)))
                    .values(published_at=func.now())
                )
            for row_id, error in failed:
                await session.execute(
                    update(outbox)
                    .where(outbox.c.id == row_id)
                    .values(attempts=outbox.c.attempts + 1, last_error=str(error)[:500])
                )
        EVENTS_PUBLISHED.labels(self.service).inc(len(published))
        if failed:
            raise RuntimeError(f"{len(failed)} events not acknowledged by JetStream: {failed[0][1]!r}")
        return len(rows)

    async def _publish_pipelined(self, rows: Sequence[Row[Any]]) -> list[object]:
        """Every row sent at once, in order, then their acknowledgements awaited together: one round
        trip per batch instead of a request (and a task, and a timer) per row. What is not
        acknowledged within the publish timeout counts as failed, so stays unpublished."""
        futures: list[asyncio.Future[Any]] = []
        results: list[object] = []
        for row in rows:
            headers = event_headers(
                str(row.id),
                row.subject,
                self.service,
                row.created_at,
                str(row.org_id or ""),
                row.request_id,
                row.trace_context or "",
            )
            try:
                futures.append(await self.bus.js.publish_async(row.subject, row.payload, headers=headers))
            except Exception as exc:  # refused before it was sent (connection closing): this row fails
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        await asyncio.wait(futures, timeout=self.publish_timeout)
        for future in futures:
            if not future.done():
                future.cancel()  # frees its slot in nats-py's table of pending publishes
                results.append(TimeoutError("no acknowledgement from JetStream in time"))
            elif future.cancelled():
                results.append(asyncio.CancelledError())
            elif (error := future.exception()) is not None:
                results.append(error)
            else:
                results.append(future.result())
        return results

    async def _publish(self, row: Row[Any]) -> object:
        """One row to JetStream. Its stored trace context goes on in the headers; with tracing on,
        under a producer span of that trace (a row raised with tracing off has none to continue)."""

        def headers(traceparent: str) -> dict[str, str]:
            org_id = str(row.org_id or "")
            return event_headers(
                str(row.id), row.subject, self.service, row.created_at, org_id, row.request_id, traceparent
            )

        if not (tracing.enabled() and row.trace_context):
            return await self.bus.js.publish(
                row.subject, row.payload, headers=headers(row.trace_context or "")
            )
        # gather() runs each publish in a task of its own, so this binding stays with this row.
        structlog.contextvars.bind_contextvars(request_id=row.request_id)
        with tracing.span(
            f"{row.subject} publish",
            kind="producer",
            parent=row.trace_context,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": row.subject,
                "messaging.message.id": str(row.id),
            },
        ):
            return await self.bus.js.publish(
                row.subject, row.payload, headers=headers(tracing.current_traceparent() or "")
            )

    async def _report_pending(self) -> None:
        outbox = self.db.tables.outbox
        async with self.db.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        OUTBOX_PENDING.labels(self.service).set(pending or 0)


_NOT_SET = object()  # a batch's transaction before its first event set the org


class DurableConsumer:
    """A durable pull consumer whose handler runs at most once per event id.

    The handler's effects and the inbox row commit in one transaction, in the org the event belongs
    to. A failing event is redelivered with backoff; after `max_deliver` attempts it is parked in
    the service's `event_dead_letters` table, where an operator can see it and replay it.
    """

    def __init__(
        self,
        spec: Consumer[Any],
        *,
        db: Database,
        bus: EventBus,
        service: str,
        ack_wait_seconds: float = 30,
        database_wait_seconds: float = 60,
    ) -> None:
        self.spec = spec
        self.db = db
        self.bus = bus
        self.service = service
        self.name = spec.name
        self.max_deliver = spec.max_deliver
        self.ack_wait_seconds = ack_wait_seconds
        self.database_wait_seconds = database_wait_seconds
        self.batch = max(1, spec.batch)

    async def run(self) -> None:
        await self.bus.wait_connected()
        while True:
            subscription = None
            try:
                subscription = await self.bus.js.pull_subscribe(
                    self.spec.event.subject,
                    durable=self.name,
                    stream=stream_name(self.spec.event.producer),
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT,
                        max_deliver=self.max_deliver,
                        ack_wait=self.ack_wait_seconds,
                        deliver_policy=DeliverPolicy.ALL,
                    ),
                )
                while True:
                    try:
                        messages = await subscription.fetch(batch=max(50, self.batch), timeout=1)
                    except TimeoutError:
                        raise_if_cancelled()
                        continue
                    # Fetched as the service stopped: not handled, so redelivered after ack_wait.
                    raise_if_cancelled()
                    await self.handle_all(messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # stream missing, NATS reconnecting: try again shortly
                # nats-py turns a cancel that meets a closed connection into ConnectionClosedError.
                raise_if_cancelled()
                log.warning("consumer_loop_error", consumer=self.name, error=str(exc))
                await asyncio.sleep(1)
            finally:
                # Left subscribed, its unread pull replies hold EventBus.close()'s drain for the full
                # drain timeout (30 s) on every stop, and each retry above would leak one more.
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()

    async def handle_all(self, messages: Sequence[Msg]) -> None:
        """A fetched set of messages, in order: in transactions of up to `spec.batch` events when the
        consumer opts in, else one by one. A redelivered message (it failed before, or its ack was
        lost) always goes alone, so a poison event costs no batch more than its first delivery's."""
        pending: list[Msg] = []
        for message in messages:
            redelivered = message.metadata is not None and message.metadata.num_delivered > 1
            if self.batch == 1 or redelivered:
                await self.handle_batch(pending)
                pending = []
                await self.handle(message)
                continue
            pending.append(message)
            if len(pending) >= self.batch:
                await self.handle_batch(pending)
                pending = []
        await self.handle_batch(pending)

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Many events in one transaction, each with its inbox row (a redelivery still does nothing
        twice), acked only after the commit. If any handler fails, or the commit does, the whole
        transaction is rolled back and each event is handled alone (`handle`): the failing one is
        retried and parked as it would be unbatched, and the others are applied on their own, none
        blocked or dead-lettered with it. No message is acked before its effects are committed."""
        if len(messages) <= 1:
            for message in messages:
                await self.handle(message)
            return
        try:
            await self._apply_batch(messages)
        except Exception as exc:
            log.info(
                "event_batch_replayed_one_by_one", consumer=self.name, events=len(messages), error=str(exc)
            )
            for message in messages:
                await self.handle(message)
            return
        for message in messages:
            await message.ack()

    async def _apply_batch(self, messages: Sequence[Msg]) -> None:
        callbacks: list[Callable[[], None]] = []
        metas = [EventMeta.from_headers(message.subject, message.headers) for message in messages]
        inbox = self.db.tables.inbox
        async with self.db.sessions() as session, session.begin():
            # Every event's inbox row in one statement: those it returns are handled here for the
            # first time (an id twice in one batch, or handled before, is not handled again).
            first = set(
                (
                    await session.scalars(
                        pg_insert(inbox)
                        .values([{"consumer": self.name, "event_id": meta.id} for meta in metas])
                        .on_conflict_do_nothing()
                        .returning(inbox.c.event_id)
                    )
                ).all()
            )
            # The transaction's org setting, as the last event left it: set again only when the next
            # event's org differs (a batch is mostly one org's events: one statement each fewer).
            in_org: uuid.UUID | object | None = _NOT_SET
            for message, meta in zip(messages, metas, strict=True):
                if meta.id not in first:
                    continue
                first.discard(meta.id)
                uow = UnitOfWork(session=session, org_id=None, db=self.db)
                session.info.pop("wrote", None)  # as a fresh session: what this event's handler writes
                with self._traced(message, meta):
                    org = uuid.UUID(meta.org_id) if meta.org_id else None
                    if org != in_org:
                        if org is not None:
                            await uow.set_org(org)
                        else:  # the previous event's org must not leak into this one
                            await session.execute(
                                text("SELECT set_config(:name, '', true)"), {"name": ORG_SETTING}
                            )
                    uow.org_id = org
                    await self.spec.handler(uow, self.spec.event.decode(message.data), meta)
                    await uow._flush_events()
                # A handler that switched org did it with set_org, which says so in uow.org_id.
                in_org = uow.org_id
                callbacks += uow.after_commit
        for callback in callbacks:
            callback()

    async def handle(self, message: Msg) -> None:
        meta = EventMeta.from_headers(message.subject, message.headers)
        org_id = meta.org_id or None
        try:
            with self._traced(message, meta):
                await self._apply(message, meta, org_id)
            await message.ack()
        except Exception as exc:
            deliveries = message.metadata.num_delivered if message.metadata else 1
            log.warning(
                "event_handler_failed",
                consumer=self.name,
                event_id=meta.id,
                deliveries=deliveries,
                error=str(exc),
            )
            if deliveries >= self.max_deliver:
                await self._park(message, meta.id, org_id, exc, deliveries)
                await message.ack()
            else:
                await message.nak(delay=min(2**deliveries, 60))

    @contextlib.contextmanager
    def _traced(self, message: Msg, meta: EventMeta) -> Iterator[None]:
        """The handler under a consumer span continuing the producer's trace (tracing on), and the
        event's request id on its log lines and spans."""
        if not tracing.enabled():
            yield
            return
        with (
            structlog.contextvars.bound_contextvars(request_id=meta.request_id),
            tracing.span(
                f"{message.subject} process",
                kind="consumer",
                parent=(message.headers or {}).get(tracing.TRACEPARENT),
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": message.subject,
                    "messaging.message.id": meta.id,
                    "messaging.consumer.group.name": self.name,
                },
            ),
        ):
            yield

    async def _apply(self, message: Msg, meta: EventMeta, org_id: str | None) -> None:
        """Run the handler once per event id. While the database is away (a restart, a failover) the
        message is kept in progress and tried again in place, for up to `database_wait_seconds`:
        each redelivery would spend one of its `max_deliver` deliveries, so an outage longer than the
        redelivery backoff (about 30 s at 5 deliveries) would park every event delivered meanwhile,
        or, the park failing too, drop it. Any other failure is the caller's to count."""
        waited_since = time.monotonic()
        delay = 0.2
        while True:
            try:
                async with unit_of_work(self.db, org_id) as uow:
                    if await _first_delivery(uow, self.name, meta.id):
                        await self.spec.handler(uow, self.spec.event.decode(message.data), meta)
                return
            except Exception as exc:
                if not database_away(exc) or time.monotonic() - waited_since > self.database_wait_seconds:
                    raise
                log.warning("event_handler_waits_for_database", consumer=self.name, event_id=meta.id)
            with contextlib.suppress(Exception):  # NATS away too: the ack wait may lapse, no harm
                await message.in_progress()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _park(
        self, message: Msg, event_id: str, org_id: str | None, error: Exception, deliveries: int
    ) -> None:
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                insert(self.db.tables.dead_letters).values(
                    id=uuid.uuid4(),
                    consumer=self.name,
                    event_id=event_id,
                    subject=message.subject,
                    payload=message.data,
                    headers=json.dumps(dict(message.headers or {})),
                    org_id=uuid.UUID(org_id) if org_id else None,
                    error=str(error)[:2000],
                    deliveries=deliveries,
                )
            )
        CONSUMER_DEAD_LETTERS.labels(self.service, self.name).inc()


async def _first_delivery(uow: UnitOfWork, consumer: str, event_id: str) -> bool:
    """Record the event id in the consumer's inbox; False if it was handled before."""
    inbox = uow.db.tables.inbox
    first_time = await uow.session.scalar(
        pg_insert(inbox)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return first_time is not None


async def replay_dead_letter(
    db: Database, dead_letter_id: uuid.UUID, consumers: Sequence[Consumer[Any]]
) -> None:
    """Run a parked event's handler again, in its org, marking it replayed in the same transaction.
    The handler is the one the parking consumer declares; a consumer since removed is a conflict."""
    dead = db.tables.dead_letters
    async with db.sessions() as session:
        row = (await session.execute(select(dead).where(dead.c.id == dead_letter_id))).one()
    spec = next((c for c in consumers if c.name == row.consumer), None)
    if spec is None:
        raise FailedPrecondition(
            f"no consumer {row.consumer!r} is declared any more", code="consumer_unknown"
        )
    meta = EventMeta.from_headers(row.subject, json.loads(row.headers))
    async with unit_of_work(db, row.org_id) as uow:
        # Through the consumer's inbox, as a delivery would be: a second replay does nothing twice.
        if await _first_delivery(uow, row.consumer, row.event_id):
            await spec.handler(uow, spec.event.decode(row.payload), meta)
        await uow.session.execute(
            update(dead).where(dead.c.id == dead_letter_id).values(replayed_at=func.now())
        )


async def run_broadcast(bus: EventBus, spec: Broadcast[Any]) -> None:
    """Feed one replica's in-process state from `spec.event`: every replica hears every event."""

    async def on_message(message: Msg) -> None:
        meta = EventMeta.from_headers(message.subject, message.headers)
        try:
            await spec.handler(spec.event.decode(message.data), meta)
        except Exception as exc:
            # Skipped, not retried: a broadcast feeds a cache whose TTL bounds the harm of one missed
            # invalidation, while a retry of an event that always fails would stall every later one.
            # Counted, so an alert can say a replica serves stale entries.
            BROADCAST_ERRORS.labels(spec.name).inc()
            log.warning("broadcast_handler_failed", broadcast=spec.name, event_id=meta.id, error=str(exc))

    await follow_subject(bus, spec.event.subject, timedelta(seconds=spec.replay_seconds), on_message)


@dataclass(frozen=True)
class Pruned:
    outbox: int
    inbox: int
    dead_letters: int


# Deleted a batch at a time, each its own short transaction: a year of rows never holds one long lock.
PRUNE_BATCH = 5000
# An inbox row must outlive every redelivery of its event, and a stream hands out events this old.
MIN_RETENTION_DAYS = STREAM_MAX_AGE_DAYS + 1


async def prune_event_tables(db: Database, retention_days: int) -> Pruned:
    """Delete what the event tables no longer need: published outbox rows, handled inbox ids and
    replayed dead letters older than `retention_days`. Unpublished outbox rows and dead letters nobody
    has replayed are kept whatever their age: they are work, not history."""
    if retention_days < MIN_RETENTION_DAYS:
        raise invalid(
            "retention_days",
            f"must be at least {MIN_RETENTION_DAYS}: the streams keep events {STREAM_MAX_AGE_DAYS} days, "
            "and a redelivered event must still find its id in the inbox",
        )
    tables = db.tables
    cutoff = func.now() - timedelta(days=retention_days)
    return Pruned(
        outbox=await _delete_in_batches(db, tables.outbox, tables.outbox.c.published_at < cutoff),
        inbox=await _delete_in_batches(db, tables.inbox, tables.inbox.c.processed_at < cutoff),
        dead_letters=await _delete_in_batches(
            db, tables.dead_letters, tables.dead_letters.c.replayed_at < cutoff
        ),
    )


async def _delete_in_batches(db: Database, table: Table, condition: ColumnElement[bool]) -> int:
    deleted = 0
    while True:
        ctid: ColumnElement[Any] = literal_column("ctid")  # every table has one, whatever its key
        batch = select(ctid).select_from(table).where(condition).limit(PRUNE_BATCH).scalar_subquery()
        async with db.sessions() as session, session.begin():
            result = await session.execute(delete(table).where(ctid.in_(batch)))
        count = result.rowcount or 0  # type: ignore[attr-defined]
        deleted += count
        if count < PRUNE_BATCH:
            return deleted
