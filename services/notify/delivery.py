"""Delivery of the outbox: claim due rows, send them through their adapter, record each outcome.

- Woken by LISTEN on outbox.DUE_CHANNEL (every enqueue and replay notifies on commit), so delivery
  starts at once; a poll every OUTBOX_POLL_SECONDS picks up retries whose backoff has run out.
- Rows are claimed across orgs by `notify.claim_outbox` (FOR UPDATE SKIP LOCKED, a lease, attempts
  + 1), so several workers never send the same row; a worker that dies mid-send leaves its rows
  claimed until the lease runs out, then another worker takes them.
- Claimed rows are sent by OUTBOX_CONCURRENCY lanes; an SMTP lane keeps one connection.
- Each row's outcome is committed right after its send, in the row's org, before its lane sends
  the next message (OutcomeWriter: lanes that finish together share one commit). After a SIGKILL at
  most the messages in flight, one per lane, go out again, with the same Message-ID.
- Transient failures retry with exponential backoff and equal jitter until OUTBOX_MAX_ATTEMPTS, then
  the row is dead; permanent refusals are dead at once. While an adapter's circuit is open nothing is
  attempted: rows go back to pending, their attempt given back, due when the breaker half-opens.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import insert, select, text

from libs.common.circuit import CircuitBreaker
from libs.common.db import Database, unit_of_work, wake_on_notify
from libs.common.logs import get_logger
from services.notify.adapters.base import (
    Adapter,
    DeliveryFailure,
    Outbound,
    PermanentFailure,
    Send,
    TransientFailure,
)
from services.notify.adapters.email_sendgrid import SendGridAdapter
from services.notify.adapters.email_smtp import SmtpAdapter
from services.notify.adapters.sheets import SheetsAdapter
from services.notify.adapters.webhook import WebhookAdapter
from services.notify.models import email_events, export_events, outbox_events
from services.notify.outbox import DUE_CHANNEL
from services.notify.settings import NotifySettings

log = get_logger(__name__)

DELIVERIES = Counter(
    "notify_deliveries_total", "Outbox rows handled, by kind and outcome", ["kind", "outcome"]
)
OUTBOX_ROWS = Gauge(
    "notify_outbox_rows", "Outbox rows of every org waiting (pending, sending) or dead", ["status"]
)
REDACTED = "[redacted after delivery]"
# outbox_events.dead_reason: only rows that ran out of retries are worth an automatic retry later.
RETRIES_EXHAUSTED = "retries_exhausted"
REFUSED = "refused"
SKIP = "skip"
ADAPTERS: dict[str, Callable[[NotifySettings], Adapter]] = {
    "smtp": SmtpAdapter,
    "sendgrid": SendGridAdapter,
    "webhook": WebhookAdapter,
    "sheets": SheetsAdapter,
}


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


@dataclass(frozen=True)
class Job:
    row: Outbound
    attempts: int  # after the claim's increment


def backoff_seconds(
    attempts: int, settings: NotifySettings, rng: Callable[[], float] = random.random
) -> float:
    """base * 2^(attempts-1), capped, with equal jitter: at least half the step, the rest random, so
    rows that failed together (a server down) spread out instead of retrying as a herd."""
    step = settings.outbox_base_backoff_seconds * 2 ** min(max(attempts - 1, 0), 40)
    ceiling = min(settings.outbox_max_backoff_seconds, step)
    return ceiling / 2 + rng() * ceiling / 2


class Delivery:
    def __init__(self, db: Database, settings: NotifySettings) -> None:
        self.db = db
        self.settings = settings
        self._wake = asyncio.Event()
        # Created on first use, inside the running loop.
        self._adapters: dict[str, Adapter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.writer = OutcomeWriter(db)
        self._counted_at, self._stale = 0.0, True

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        listener = asyncio.create_task(
            wake_on_notify(self.db, DUE_CHANNEL, self._wake, self.settings.outbox_poll_seconds),
            name="notify-delivery-listen",
        )
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.outbox_poll_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    counts = await self.deliver_due()
                    await self._count_rows(busy=counts.claimed > 0)
                except Exception as exc:  # database down: rows stay due, next tick tries again
                    log.warning("outbox_delivery_failed", error=str(exc))
                    await asyncio.sleep(self.settings.outbox_poll_seconds)
        finally:
            listener.cancel()
            await self.close()

    async def _count_rows(self, *, busy: bool) -> None:
        """Refresh the backlog gauge: each second while rows move, every 15 seconds otherwise."""
        self._stale = self._stale or busy
        now = time.monotonic()
        if now - self._counted_at < (1.0 if self._stale else 15.0):
            return
        self._counted_at, self._stale = now, False
        async with self.db.sessions() as session:
            found = dict((await session.execute(text("SELECT * FROM notify.outbox_status_counts()"))).all())
        for status in ("pending", "sending", "dead"):
            OUTBOX_ROWS.labels(status).set(found.get(status, 0))

    async def close(self) -> None:
        for adapter in self._adapters.values():
            try:
                await adapter.close()
            except Exception as exc:  # closing is best effort at shutdown
                log.warning("adapter_close_failed", adapter=adapter.name, error=str(exc))
        self._adapters.clear()

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
        async with self.db.sessions() as session, session.begin():
            claimed = (
                await session.execute(
                    text("SELECT id, org_id, kind, attempts FROM notify.claim_outbox(:batch, :lease)"),
                    {"batch": batch, "lease": self.settings.outbox_lease_seconds},
                )
            ).all()
        counts = DeliveryCounts(claimed=len(claimed))
        if not claimed:
            return counts
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in await self._load(claimed):
            queue.put_nowait(job)
        lanes = min(self.settings.outbox_concurrency, queue.qsize())
        await asyncio.gather(*(self._lane(queue, counts) for _ in range(max(lanes, 0))))
        return counts

    async def _load(self, claimed: Sequence[Any]) -> list[Job]:
        """The claimed rows' payloads, read in each row's org (the claim returns only ids)."""
        attempts = {row.id: row.attempts for row in claimed}
        by_org: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for row in claimed:
            by_org[row.org_id].append(row.id)
        jobs: list[Job] = []
        for org_id, ids in by_org.items():
            async with unit_of_work(self.db, org_id) as uow:
                rows = (
                    await uow.session.execute(
                        select(
                            outbox_events.c.id,
                            outbox_events.c.org_id,
                            outbox_events.c.kind,
                            outbox_events.c.target,
                            outbox_events.c.payload,
                        ).where(outbox_events.c.id.in_(ids))
                    )
                ).all()
            jobs.extend(
                Job(Outbound(r.id, r.org_id, r.kind, r.target, dict(r.payload or {})), attempts[r.id])
                for r in rows
            )
        return jobs

    async def _lane(self, queue: asyncio.Queue[Job], counts: DeliveryCounts) -> None:
        async with AsyncExitStack() as stack:
            senders: dict[str, Send] = {}
            while not queue.empty():
                job = queue.get_nowait()
                try:
                    outcome = await self._deliver(job, stack, senders)
                except Exception:
                    # Recording failed (the database is gone): this lane stops sending, or every
                    # message it sent now would go out again. Its rows stay claimed and are due
                    # again when their lease runs out.
                    log.exception("outbox_outcome_not_recorded", outbox_id=str(job.row.id))
                    return
                setattr(counts, outcome, getattr(counts, outcome) + 1)
                DELIVERIES.labels(job.row.kind, outcome).inc()

    def _route(self, kind: str) -> Adapter | str:
        if kind == "email":
            mode = self.settings.email_mode
            return SKIP if mode == "off" else self._adapter(mode)
        if kind == "export":
            mode = self.settings.export_mode
            if mode == "off":
                return SKIP
            return self._adapter("sheets" if mode == "sheets" else "webhook")
        return self._adapter("webhook")

    def _adapter(self, name: str) -> Adapter:
        if name not in self._adapters:
            self._adapters[name] = ADAPTERS[name](self.settings)
        return self._adapters[name]

    def breaker(self, name: str) -> CircuitBreaker:
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(
                name,
                failure_threshold=self.settings.circuit_failure_threshold,
                reset_seconds=self.settings.circuit_reset_seconds,
            )
        return self.breakers[name]

    async def _deliver(self, job: Job, stack: AsyncExitStack, senders: dict[str, Send]) -> str:
        """Send one row and record what happened; returns the outcome's name in DeliveryCounts."""
        route = self._route(job.row.kind)
        if route == SKIP:
            return await self._skipped(job)
        assert not isinstance(route, str)
        breaker = self.breaker(route.name)
        if not breaker.allow():
            return await self._deferred(job, breaker)
        try:
            if route.name not in senders:
                senders[route.name] = await stack.enter_async_context(route.lane())
            await senders[route.name](job.row)
        except DeliveryFailure as failure:
            if not failure.reached_remote:
                breaker.record_neutral()
            elif failure.permanent:
                breaker.record_success()  # the remote answered; it refused this one message
            else:
                breaker.record_failure()
            return await self._failed(job, failure)
        except Exception as exc:  # an adapter bug must not leave the row stuck until the lease
            breaker.record_neutral()
            log.exception("adapter_failed", adapter=route.name, outbox_id=str(job.row.id))
            return await self._failed(job, TransientFailure(f"unexpected error: {type(exc).__name__}"))
        breaker.record_success()
        return await self._sent(job)

    # --- outcomes ---------------------------------------------------------------------------------

    async def _sent(self, job: Job) -> str:
        redacted = {**job.row.payload, "text": REDACTED} if job.row.payload.get("redact_after_send") else None
        await self.writer.write(Outcome(job, "sent", payload=redacted, email_status="sent"))
        return "sent"

    async def _skipped(self, job: Job) -> str:
        reason = f"{'EMAIL_MODE' if job.row.kind == 'email' else 'EXPORT_MODE'}=off"
        await self.writer.write(Outcome(job, "skipped", error=reason, email_status="skipped"))
        return "skipped"

    async def _deferred(self, job: Job, breaker: CircuitBreaker) -> str:
        wait = max(breaker.retry_after(), min(1.0, breaker.reset_seconds))
        await self.writer.write(Outcome(job, "pending", delay=wait, give_back_attempt=True))
        return "deferred"

    async def _failed(self, job: Job, failure: DeliveryFailure) -> str:
        error = str(failure)[:2000]
        if not failure.permanent and job.attempts < self.settings.outbox_max_attempts:
            delay = backoff_seconds(job.attempts, self.settings)
            await self.writer.write(Outcome(job, "pending", error=error, delay=delay))
            return "retried"
        bounced = isinstance(failure, PermanentFailure) and failure.bounced
        reason = REFUSED if failure.permanent else RETRIES_EXHAUSTED
        await self.writer.write(
            Outcome(
                job, "dead", error=error, dead_reason=reason, email_status="bounced" if bounced else "failed"
            )
        )
        log.info("outbox_dead", outbox_id=str(job.row.id), kind=job.row.kind, error=error)
        return "dead"


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed row, as it is written back."""

    job: Job
    status: str  # sent | skipped | pending (retry or deferred) | dead
    error: str | None = None
    delay: float | None = None  # pending: due again in this many seconds
    give_back_attempt: bool = False  # deferred: the claim's attempt did not happen
    dead_reason: str | None = None
    payload: dict[str, Any] | None = None  # replaces the payload (redaction)
    email_status: str = ""  # adds an email_events row (emails only)

    def as_record(self) -> dict[str, Any]:
        return {
            "id": str(self.job.row.id),
            "attempts": self.job.attempts,
            "status": self.status,
            "last_error": self.error,
            "keep_error": self.give_back_attempt,
            "delay": self.delay,
            "attempts_delta": -1 if self.give_back_attempt else 0,
            "dead_reason": self.dead_reason,
            "payload": self.payload,
        }


# One statement writes every outcome of a flush, each row only if it is still ours: claimed by this
# claim (status sending, same attempts). A row whose lease ran out and that another worker claimed, or
# that an operator replayed, is theirs now.
WRITE_OUTCOMES = text(
    """
    UPDATE notify.outbox_events AS o
       SET status = v.status,
           attempts = o.attempts + v.attempts_delta,
           last_error = CASE WHEN v.keep_error THEN o.last_error ELSE v.last_error END,
           next_attempt_at = CASE WHEN v.delay IS NULL THEN o.next_attempt_at
                                  ELSE now() + make_interval(secs => v.delay) END,
           dead_reason = v.dead_reason,
           sent_at = CASE WHEN v.status = 'sent' THEN now() ELSE o.sent_at END,
           payload = COALESCE(v.payload, o.payload),
           updated_at = now()
      FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS v(
             id uuid, attempts integer, status text, last_error text, keep_error boolean,
             delay double precision, attempts_delta integer, dead_reason text, payload jsonb)
     WHERE o.id = v.id AND o.attempts = v.attempts AND o.status = 'sending'
    RETURNING o.id
    """
)


class OutcomeWriter:
    """Group commit of outcomes: a lane hands over its row's outcome and waits until it is committed
    before it sends the next message, so after a crash at most one message per lane is sent again.
    Outcomes that arrive while a commit is running go together in the next one, one transaction per
    org: the cost of a transaction is shared by every lane instead of paid per message."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, outcome: Outcome) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="notify-outcome-writer")
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            by_org: dict[uuid.UUID, list[tuple[Outcome, asyncio.Future[None]]]] = defaultdict(list)
            for item in batch:
                by_org[item[0].job.row.org_id].append(item)
            for org_id, items in by_org.items():
                try:
                    await self._commit(org_id, [outcome for outcome, _ in items])
                except Exception as exc:
                    for _, done in items:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in items:
                    if not done.done():
                        done.set_result(None)

    async def _commit(self, org_id: uuid.UUID, outcomes: list[Outcome]) -> None:
        async with unit_of_work(self.db, org_id) as uow:
            written = {
                row_id
                for (row_id,) in await uow.session.execute(
                    WRITE_OUTCOMES, {"outcomes": json.dumps([o.as_record() for o in outcomes])}
                )
            }
            for outcome in outcomes:
                if outcome.job.row.id not in written:
                    log.warning("outbox_outcome_superseded", outbox_id=str(outcome.job.row.id))
            kept = [o for o in outcomes if o.job.row.id in written]
            emails = [
                email_event(o.job.row, o.email_status, o.error)
                for o in kept
                if o.email_status and o.job.row.kind == "email"
            ]
            if emails:
                await uow.session.execute(insert(email_events), emails)
            exports = [export_event(o) for o in kept if o.status == "dead" and o.job.row.kind == "export"]
            if exports:
                await uow.session.execute(insert(export_events), exports)


def export_event(outcome: Outcome) -> dict[str, Any]:
    row = outcome.job.row
    return {
        "id": uuid.uuid4(),
        "org_id": row.org_id,
        "outbox_id": row.id,
        "target": row.target,
        "payload": row.payload,
        "last_error": outcome.error,
        "attempts": outcome.job.attempts,
    }


def email_event(row: Outbound, status: str, error: str | None) -> dict[str, Any]:
    payload = row.payload
    try:
        booking_id = uuid.UUID(str(payload.get("booking_id"))) if payload.get("booking_id") else None
    except ValueError:
        booking_id = None
    return {
        "id": uuid.uuid4(),
        "org_id": row.org_id,
        "outbox_id": row.id,
        "email_type": str(payload.get("email_type") or "custom")[:60],
        "recipient": str(payload.get("to") or row.target)[:320],
        "subject": str(payload.get("subject") or "")[:300],
        "status": status,
        "error": error,
        "booking_id": booking_id,
    }
