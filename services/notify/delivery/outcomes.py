"""Recording what happened to each claimed row: its new state (sent, skipped, pending again, dead),
its email event, and its export dead letter.

`Outcomes.record` decides the row's state from an attempt (routing.py) and hands it to the
OutcomeWriter, which commits it before the lane sends its next message."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import insert, text

from libs.common.db import Database, unit_of_work
from libs.common.logs import get_logger
from services.notify.adapters.base import DeliveryFailure, Outbound, PermanentFailure
from services.notify.delivery.routing import Attempt, Deferred, Failed, Sent, Skipped
from services.notify.models import EXPORT_DEAD_LETTER, export_events
from services.notify.settings import NotifySettings

log = get_logger(__name__)

REDACTED = "[redacted after delivery]"
# outbox_events.dead_reason: only rows that ran out of retries are worth an automatic retry later.
RETRIES_EXHAUSTED = "retries_exhausted"
REFUSED = "refused"

# The names of DeliveryCounts' fields (loop.py) and of the notify_deliveries_total outcome label.
OutcomeName = Literal["sent", "skipped", "deferred", "retried", "dead"]


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


class Outcomes:
    def __init__(self, db: Database, settings: NotifySettings) -> None:
        self.settings = settings
        self.writer = OutcomeWriter(db)

    async def record(self, job: Job, attempt: Attempt) -> OutcomeName:
        """Write what `attempt` means for the job's row; returns the outcome's name."""
        if isinstance(attempt, Sent):
            return await self._sent(job)
        if isinstance(attempt, Skipped):
            await self.writer.write(Outcome(job, "skipped", error=attempt.reason, email_status="skipped"))
            return "skipped"
        if isinstance(attempt, Deferred):
            await self.writer.write(
                Outcome(job, "pending", delay=attempt.wait_seconds, give_back_attempt=True)
            )
            return "deferred"
        assert isinstance(attempt, Failed)
        return await self._failed(job, attempt.failure)

    async def _sent(self, job: Job) -> OutcomeName:
        redacted = {**job.row.payload, "text": REDACTED} if job.row.payload.get("redact_after_send") else None
        await self.writer.write(Outcome(job, "sent", payload=redacted, email_status="sent"))
        return "sent"

    async def _failed(self, job: Job, failure: DeliveryFailure) -> OutcomeName:
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
        record = {
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
        if self.email_status and self.job.row.kind == "email":
            event = email_event(self.job.row, self.email_status, self.error)
            record.update(
                email_id=str(event["id"]),
                email_type=event["email_type"],
                recipient=event["recipient"],
                subject=event["subject"],
                email_status=event["status"],
                booking_id=str(event["booking_id"]) if event["booking_id"] else None,
            )
        return record


# One statement writes every outcome of a flush, each row only if it is still ours: claimed by this
# claim (status sending, same attempts). A row whose lease ran out and that another worker claimed, or
# that an operator replayed, is theirs now. The email_events rows of the rows it wrote go in with it
# (one round trip instead of two); a superseded row gets none.
WRITE_OUTCOMES = text(
    """
    WITH v AS (
      SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS v(
             id uuid, attempts integer, status text, last_error text, keep_error boolean,
             delay double precision, attempts_delta integer, dead_reason text, payload jsonb,
             email_id uuid, email_type text, recipient text, subject text, email_status text,
             booking_id uuid)
    ), written AS (
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
        FROM v
       WHERE o.id = v.id AND o.attempts = v.attempts AND o.status = 'sending'
      RETURNING o.id, o.org_id
    ), emails AS (
      INSERT INTO notify.email_events
             (id, org_id, outbox_id, email_type, recipient, subject, status, error, booking_id)
      SELECT v.email_id, w.org_id, v.id, v.email_type, v.recipient, v.subject, v.email_status,
             v.last_error, v.booking_id
        FROM written AS w JOIN v ON v.id = w.id
       WHERE v.email_status IS NOT NULL
    )
    SELECT id FROM written
    """
)


class OutcomeWriter:
    """Group commit of outcomes: a lane hands over its row's outcome and waits until it is committed
    before it sends the next message. Outcomes that arrive while a commit is running go together in
    the next one, one transaction (four round trips: BEGIN, the org, WRITE_OUTCOMES, COMMIT) per org:
    the cost of a transaction is shared by every lane instead of paid per message.

    Why batching across lanes keeps the crash bound (at most one duplicate per lane): a message can
    go out again after a crash only if it was handed to the provider and its outcome was not yet
    committed (its row stays `sending` and is claimed again when the lease runs out). A lane has at
    most one such message at any moment: it waits on `write` for its outcome's commit before it
    takes the next row, and a lane whose commit failed stops sending (loop.py). A flush therefore
    holds at most one outcome per lane, and whatever is uncommitted when the process dies (the flush
    in progress, the outcomes waiting for the next one, a send in progress) is at most one message
    per lane. Rows claimed but not yet sent are sent once, after the lease. What batching may not do
    is let a lane go on before its commit (acknowledging on hand-over, or committing later in the
    background): then every message sent meanwhile would be a possible duplicate."""

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
            exports = [export_event(o) for o in kept if o.status == "dead" and o.job.row.kind == "export"]
            if exports:
                await uow.session.execute(insert(export_events), exports)


def export_event(outcome: Outcome) -> dict[str, Any]:
    row = outcome.job.row
    return {
        "id": uuid.uuid4(),
        "org_id": row.org_id,
        "mode": EXPORT_DEAD_LETTER,
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
