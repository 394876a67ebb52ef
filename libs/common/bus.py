"""The NATS connection every process holds, each service's JetStream stream, CloudEvents-style
headers, and ordered replay for in-memory caches. Kept apart from the outbox/consumer code (which
needs the database layer) so the gateway imports no SQLAlchemy."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from libs.common.cancellation import raise_if_cancelled
from libs.common.logs import get_logger

log = get_logger(__name__)

DUPLICATE_WINDOW_SECONDS = 2 * 60 * 60


# How long each service's stream keeps events: a consumer can be handed an event this old, so its
# inbox must remember event ids at least this long (libs/common/events.py prune_event_tables).
STREAM_MAX_AGE_DAYS = 7


def stream_name(service: str) -> str:
    return f"CWS_{service.upper()}"


def inbox_prefix(user: str) -> str:
    """Where the server sends `user`'s replies and deliveries. Each user subscribes only under its own
    prefix (deploy/nats/nats.conf), so no user reads another's API answers or consumer deliveries."""
    return f"_INBOX_{user}" if user else "_INBOX"


class EventBus:
    """One NATS connection per process. Connects in the background and keeps reconnecting, so a
    service starts (not ready) while NATS is down and becomes ready when it is back."""

    def __init__(self, url: str, name: str, *, user: str = "", password: str = "") -> None:
        self.url = url
        self.name = name
        # Each process connects as its own NATS user (NATS_USER / NATS_PASSWORD): the server lets it
        # publish only its service's subjects and read only what it consumes.
        self.user = user
        self._password = password
        self.nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connected = asyncio.Event()
        self.generation = 0

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NATS is not connected yet")
        return self._js

    async def connect(self, *, retry_every: float = 1.0) -> None:
        while True:
            try:
                self.nc = await nats.connect(
                    self.url,
                    name=self.name,
                    user=self.user or None,
                    password=self._password or None,
                    inbox_prefix=inbox_prefix(self.user),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._js = self.nc.jetstream(timeout=5)
                self._connected.set()
                log.info("nats_connected", url=self.url)
                return
            except Exception as exc:  # nats raises several unrelated types on a refused connect
                log.warning("nats_connect_failed", error=str(exc))
                await asyncio.sleep(retry_every)

    # nats-py prints tracebacks for connection errors by default; keep our logs JSON lines instead.
    async def _on_error(self, error: Exception) -> None:
        log.warning("nats_error", error=f"{type(error).__name__}: {error}")

    async def _on_disconnected(self) -> None:
        log.warning("nats_disconnected", url=self.url)

    async def _on_reconnected(self) -> None:
        # Ephemeral consumers did not survive a server restart: followers re-subscribe on a new
        # generation.
        self.generation += 1
        log.info("nats_reconnected", url=self.url)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def ensure_stream(self, service: str, *, max_age_days: int = STREAM_MAX_AGE_DAYS) -> None:
        """Create or update `service`'s stream. Only the NATS admin may (libs/common/streams.py): a
        service allowed to configure its own stream could republish into, or source from, another's."""
        config = StreamConfig(
            name=stream_name(service),
            subjects=[f"cws.{service}.>"],
            max_age=max_age_days * 24 * 3600,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            await self.js.stream_info(stream_name(service))
            await self.js.update_stream(config)
        except NotFoundError:
            await self.js.add_stream(config)

    async def close(self) -> None:
        if self.nc is None or self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception:  # NATS unreachable at shutdown: nothing left to flush, just close
            await self.nc.close()


def event_headers(
    event_id: str,
    subject: str,
    source: str,
    created_at: datetime,
    org_id: str,
    request_id: str,
    traceparent: str = "",
) -> dict[str, str]:
    headers = {
        "Nats-Msg-Id": event_id,
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": subject,
        "ce-source": f"cws/{source}",
        "ce-time": created_at.astimezone(UTC).isoformat(),
        "ce-datacontenttype": "application/protobuf",
        "cws-org-id": org_id,
        "cws-request-id": request_id,
    }
    if traceparent:  # W3C trace context: consumers continue the trace of the request (tracing.py)
        headers["traceparent"] = traceparent
    return headers


# A replay consumer sends a heartbeat when idle: silence for this many of them means it is gone.
REPLAY_HEARTBEAT_SECONDS = 5.0
REPLAY_MISSED_HEARTBEATS = 3


async def follow_subject(
    bus: EventBus,
    subject: str,
    since: timedelta,
    on_message: Callable[[Msg], Awaitable[None]],
    on_live: Callable[[bool], None] | None = None,
) -> None:
    """An ordered, ephemeral consumer from `now - since`: for in-memory caches rebuilt at start-up
    (the gateway's revocation list), where a durable consumer would be wrong. After every reconnect,
    gap or lost consumer it subscribes again from `now - since`, so what was published meanwhile is
    replayed.

    `on_live(True)` comes only once the window is replayed: when the consumer had nothing to deliver
    when it was created, or once a handled message says nothing more is pending (its JetStream
    metadata's `num_pending`, which counts what was published during the replay too). Until then,
    and from any error or reconnect until the next replay is done, `on_live(False)`: a cache that
    has not seen its whole window must not be trusted (issue 9)."""
    await bus.wait_connected()
    stream = stream_name(subject.split(".")[1])
    while True:
        subscription = None
        try:
            generation = bus.generation
            subscription, pending = await _replay_consumer(bus, stream, subject, datetime.now(UTC) - since)
            replaying = pending > 0
            if on_live and not replaying:
                on_live(True)
            expected = 1
            quiet = 0.0
            while bus.generation == generation:
                try:
                    message = await subscription.next_msg(timeout=0.5)
                except TimeoutError:
                    raise_if_cancelled()
                    quiet += 0.5
                    if quiet > REPLAY_HEARTBEAT_SECONDS * REPLAY_MISSED_HEARTBEATS:
                        raise RuntimeError(f"the replay consumer of {subject} went silent") from None
                    continue
                quiet = 0.0
                if message.headers and message.headers.get("Status"):
                    continue  # an idle heartbeat: the consumer is still there
                sequence = message.metadata.sequence.consumer
                if sequence != expected:
                    # A message was lost on the way (a slow subscriber): replay the window again.
                    raise RuntimeError(f"gap in the replay of {subject}: {sequence} after {expected - 1}")
                expected += 1
                await on_message(message)
                if replaying and message.metadata.num_pending == 0:
                    replaying = False
                    if on_live:
                        on_live(True)
        except asyncio.CancelledError:
            raise
        except (
            Exception
        ) as exc:  # stream not there yet, NATS away, a gap: subscribe again from the window start
            log.warning("follow_subject_error", subject=subject, error=str(exc))
            await asyncio.sleep(1)
        finally:
            if on_live:
                on_live(False)
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()


async def _replay_consumer(
    bus: EventBus, stream: str, subject: str, start: datetime
) -> tuple[Subscription, int]:
    """A push consumer of `subject` alone, delivering to this connection's inbox from `start`; and how
    many messages it has to replay.

    Not nats-py's ordered consumer: that one is created without a name, through an API subject a
    permission cannot tie to a filter, and whoever may use it may also rewrite any durable consumer of
    the stream (a body naming it updates it). Named, the create subject carries the filter
    (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<subject>`), which the server checks against the body,
    so a user is allowed exactly the subjects it consumes (deploy/nats/nats.conf). The server deletes
    the consumer once nobody listens (inactive_threshold); no user needs the right to delete one."""
    assert bus.nc is not None
    inbox = bus.nc.new_inbox()
    subscription = await bus.nc.subscribe(inbox)
    try:
        info = await bus.js.add_consumer(
            stream,
            config=ConsumerConfig(
                name=uuid.uuid4().hex,
                deliver_subject=inbox,
                filter_subject=subject,
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=start,
                ack_policy=AckPolicy.NONE,
                idle_heartbeat=REPLAY_HEARTBEAT_SECONDS,
                inactive_threshold=30,
                mem_storage=True,
                num_replicas=1,
            ),
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        raise
    return subscription, info.num_pending or 0
