"""The delivery loop and its claims: wake on enqueue (or poll), claim due rows across orgs with what
sending them needs (one statement), and send them in OUTBOX_CONCURRENCY lanes, each row routed
(routing.py) and its outcome committed (outcomes.py) before the lane takes the next."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import text

from libs.common import tracing
from libs.common.cancellation import wait_woken
from libs.common.db import Database, wake_on_notify
from libs.common.logs import get_logger
from services.notify.adapters.base import Outbound
from services.notify.delivery.outcomes import Job, Outcomes
from services.notify.delivery.routing import Lane, Router
from services.notify.outbox import DUE_CHANNEL
from services.notify.settings import NotifySettings

if TYPE_CHECKING:
    from opentelemetry.trace import Span

# Due rows of every org, oldest first, leased to this worker (FOR UPDATE SKIP LOCKED: replicas share
# the work), with the columns a send needs.
CLAIM = text(
    "SELECT id, org_id, kind, attempts, target, payload, trace_context, request_id"
    " FROM notify.claim_outbox_rows(:batch, :lease)"
)

log = get_logger(__name__)

DELIVERIES = Counter(
    "notify_deliveries_total", "Outbox rows handled, by kind and outcome", ["kind", "outcome"]
)
OUTBOX_ROWS = Gauge(
    "notify_outbox_rows", "Outbox rows of every org waiting (pending, sending) or dead", ["status"]
)


@dataclass
class DeliveryCounts:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    skipped: int = 0

    def add(self, other: DeliveryCounts) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


class Delivery:
    def __init__(self, db: Database, settings: NotifySettings) -> None:
        self.db = db
        self.settings = settings
        self._wake = asyncio.Event()
        self.router = Router(settings)
        self.outcomes = Outcomes(db, settings)
        self._counted_at, self._stale = 0.0, True

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        listener = asyncio.create_task(
            wake_on_notify(self.db, DUE_CHANNEL, self._wake),
            name="notify-delivery-listen",
        )
        try:
            while True:
                await wait_woken(self._wake, self.settings.outbox_poll_seconds)
                self._wake.clear()
                try:
                    counts = await self.deliver_due()
                    await self._count_rows(busy=counts.claimed > 0)
                except Exception as exc:  # database down: rows stay due, next tick tries again
                    log.warning("outbox_delivery_failed", error=str(exc))
                    await asyncio.sleep(self.settings.outbox_poll_seconds)
        finally:
            listener.cancel()
            await self.router.close()

    async def _count_rows(self, *, busy: bool) -> None:
        """Refresh the backlog gauge: each second while rows move, every 15 seconds otherwise."""
        self._stale = self._stale or busy
        now = time.monotonic()
        if now - self._counted_at < (1.0 if self._stale else 15.0):
            return
        self._counted_at, self._stale = now, False
        async with self.db.sessions() as session:
            counted = await session.execute(text("SELECT * FROM notify.outbox_status_counts()"))
            found: dict[str, int] = {status: int(count) for status, count in counted.all()}
        for status in ("pending", "sending", "dead"):
            OUTBOX_ROWS.labels(status).set(found.get(status, 0))

    async def deliver_due(self, max_rows: int = 0) -> DeliveryCounts:
        """Deliver due rows of every org, batch after batch, until none is due (or max_rows)."""
        total = DeliveryCounts()
        while True:
            batch = self.settings.outbox_batch_size
            if max_rows > 0:
                batch = min(batch, max_rows - total.claimed)
                if batch <= 0:
                    break
            counts = await self._round(batch)
            total.add(counts)
            if counts.claimed < batch:
                break
        return total

    # --- one round ----------------------------------------------------------------------------

    async def _round(self, batch: int) -> DeliveryCounts:
        jobs = await self._claim(batch)
        counts = DeliveryCounts(claimed=len(jobs))
        if not jobs:
            return counts
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        lanes = min(self.settings.outbox_concurrency, queue.qsize())
        await asyncio.gather(*(self._lane(queue, counts) for _ in range(max(lanes, 0))))
        return counts

    async def _claim(self, batch: int) -> list[Job]:
        """Claim up to `batch` due rows of every org and read what sending them needs, in one
        statement (notify.claim_outbox_rows, migration 0006): one transaction per round."""
        async with self.db.sessions() as session, session.begin():
            claimed = (
                await session.execute(CLAIM, {"batch": batch, "lease": self.settings.outbox_lease_seconds})
            ).all()
        return [
            Job(
                Outbound(
                    r.id,
                    r.org_id,
                    r.kind,
                    r.target,
                    dict(r.payload or {}),
                    trace_context=r.trace_context,
                    request_id=r.request_id,
                ),
                r.attempts,
            )
            for r in claimed
        ]

    @contextmanager
    def _traced(self, job: Job) -> Iterator[Span | None]:
        """The send as a client span in the trace of the work that enqueued it, under its request id
        (logs and span). A row enqueued with no trace (tracing off then, a scheduled job) starts none."""
        row = job.row
        if not tracing.enabled() or not row.trace_context:
            yield None
            return
        with (
            structlog.contextvars.bound_contextvars(request_id=row.request_id or ""),
            tracing.span(
                f"notify deliver {row.kind}",
                kind="client",
                parent=row.trace_context,
                attributes={
                    "cws.outbox_id": str(row.id),
                    "cws.org_id": str(row.org_id),
                    "cws.attempt": job.attempts,
                },
            ) as span,
        ):
            yield span

    async def _lane(self, queue: asyncio.Queue[Job], counts: DeliveryCounts) -> None:
        async with AsyncExitStack() as stack:
            lane = Lane(stack)
            while not queue.empty():
                job = queue.get_nowait()
                try:
                    with self._traced(job) as span:
                        outcome = await self.outcomes.record(job, await self.router.attempt(job.row, lane))
                        if span is not None:
                            span.set_attribute("cws.outcome", outcome)
                except Exception:
                    # Recording failed (the database is gone): this lane stops sending, or every
                    # message it sent now would go out again. Its rows stay claimed and are due
                    # again when their lease runs out.
                    log.exception("outbox_outcome_not_recorded", outbox_id=str(job.row.id))
                    return
                setattr(counts, outcome, getattr(counts, outcome) + 1)
                DELIVERIES.labels(job.row.kind, outcome).inc()
