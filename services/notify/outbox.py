"""The delivery outbox of seed 002: enqueueing a send in the caller's transaction, and what operators
and scheduled jobs do with the rows (dead letters, replay, the email-dlq retry, retention).

A row is unique per (org_id, dedupe_key), so enqueueing the same send twice (a redelivered event, a
second email scan, a retried request) returns the first row. The enqueue notifies the delivery loop
on commit, so delivery starts at once rather than at the next poll. Everything here runs in the
unit of work's org; delivery itself (across orgs) is in the delivery package."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row, delete, func, literal_column, select, text, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common import tracing
from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import Conflict, NotFound, invalid
from services.notify.models import (
    EXPORT_DEAD_LETTER,
    OUTBOX_KINDS,
    email_events,
    export_events,
    outbox_events,
)
from services.notify.settings import NotifySettings
from services.notify.subject_keys import subjects_of

# LISTEN/NOTIFY channel the delivery loop listens on; pg_notify is delivered only on commit.
DUE_CHANNEL = "cws_notify_due"
EMAIL_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class Enqueued:
    row: Row[Any]
    created: bool


async def enqueue(
    uow: UnitOfWork, *, kind: str, dedupe_key: str, payload: dict[str, Any], target: str = ""
) -> Enqueued:
    """Add one send to the outbox in this unit of work's org; idempotent per dedupe_key."""
    if kind not in OUTBOX_KINDS:
        raise invalid("kind", f"must be one of {', '.join(OUTBOX_KINDS)}")
    if not dedupe_key or len(dedupe_key) > 300:
        raise invalid("dedupe_key", "must be 1 to 300 characters")
    assert uow.org_id is not None
    subjects = subjects_of(dedupe_key)
    inserted = await uow.session.scalar(
        pg_insert(outbox_events)
        .values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            kind=kind,
            dedupe_key=dedupe_key,
            payload=payload,
            target=target[:320],
            booking_id=subjects.booking_id,
            invoice_id=subjects.invoice_id,
            trace_context=tracing.current_traceparent(),
            request_id=tracing.request_id_of_current_log_context() or None,
        )
        .on_conflict_do_nothing(index_elements=[outbox_events.c.org_id, outbox_events.c.dedupe_key])
        .returning(outbox_events.c.id)
    )
    if inserted is not None:
        await notify_due(uow)
    row = (
        await uow.session.execute(
            select(outbox_events).where(
                outbox_events.c.org_id == uow.org_id, outbox_events.c.dedupe_key == dedupe_key
            )
        )
    ).one()
    return Enqueued(row=row, created=inserted is not None)


# --- what callers may enqueue ---------------------------------------------------------------------

MAX_PAYLOAD_BYTES = 64 * 1024


def target_of(kind: str, payload: dict[str, Any], settings: NotifySettings) -> str:
    """Check an Enqueue request's payload for its kind and name its target (recipient or host)."""
    if kind not in OUTBOX_KINDS:
        raise invalid("kind", f"must be one of {', '.join(OUTBOX_KINDS)}")
    if len(json.dumps(payload, default=str)) > MAX_PAYLOAD_BYTES:
        raise invalid("payload", f"must be at most {MAX_PAYLOAD_BYTES // 1024} KiB of JSON")
    if kind == "email":
        to = payload.get("to")
        if not isinstance(to, str) or not EMAIL_ADDRESS.fullmatch(to) or len(to) > 320:
            raise invalid("payload.to", "must be an email address")
        for name, limit in (("subject", 300), ("text", 50_000)):
            value = payload.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise invalid(f"payload.{name}", f"must be a non-empty string of at most {limit} characters")
        if not isinstance(payload.get("email_type", ""), str):
            raise invalid("payload.email_type", "must be a string")
        return to
    if kind == "webhook":
        url = payload.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid("payload.url", "must be an http or https URL")
        if not isinstance(payload.get("body", {}), dict):
            raise invalid("payload.body", "must be a JSON object")
        return parts.hostname
    if not isinstance(payload.get("type"), str) or not payload["type"]:
        raise invalid("payload.type", "must be a non-empty string")
    if not isinstance(payload.get("data", {}), dict):
        raise invalid("payload.data", "must be a JSON object")
    if settings.export_mode == "webhook":
        return urlsplit(settings.export_webhook_url).hostname or ""
    return settings.export_mode


# --- dead letters and replay (operators, in their own org) ----------------------------------------


async def notify_due(uow: UnitOfWork) -> None:
    await uow.session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": DUE_CHANNEL})


async def get(uow: UnitOfWork, outbox_id: str) -> Row[Any]:
    row = (
        await uow.session.execute(select(outbox_events).where(outbox_events.c.id == parse_id(outbox_id)))
    ).one_or_none()
    if row is None:
        raise NotFound("outbox event not found", code="outbox_event_not_found")
    return row


async def list_dead(uow: UnitOfWork, *, limit: int, offset: int) -> list[Row[Any]]:
    """Dead rows, newest first (by when they died)."""
    assert uow.org_id is not None
    return list(
        (
            await uow.session.execute(
                select(outbox_events)
                .where(outbox_events.c.org_id == uow.org_id, outbox_events.c.status == "dead")
                .order_by(outbox_events.c.updated_at.desc(), outbox_events.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
    )


async def list_export_dead(uow: UnitOfWork, *, limit: int, offset: int) -> list[Row[Any]]:
    """The legacy export DLQ: dead exports not yet replayed, newest first (stored exports, the other
    mode of export_events, are no dead letters)."""
    assert uow.org_id is not None
    return list(
        (
            await uow.session.execute(
                select(export_events)
                .where(
                    export_events.c.org_id == uow.org_id,
                    export_events.c.mode == EXPORT_DEAD_LETTER,
                    export_events.c.replayed_at.is_(None),
                )
                .order_by(export_events.c.created_at.desc(), export_events.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
    )


async def replay(uow: UnitOfWork, outbox_id: str) -> Row[Any]:
    """A dead row back to pending with a fresh set of attempts; delivery wakes on commit."""
    row = await get(uow, outbox_id)
    if row.status != "dead":
        raise Conflict(f"only dead outbox events can be replayed; this one is {row.status}", code="not_dead")
    replayed = (
        await uow.session.execute(
            update(outbox_events)
            .where(outbox_events.c.id == row.id, outbox_events.c.status == "dead")
            .values(
                status="pending",
                attempts=0,
                next_attempt_at=func.now(),
                last_error=None,
                dead_reason=None,
                updated_at=func.now(),
            )
            .returning(*outbox_events.c)
        )
    ).one_or_none()
    if replayed is None:  # replayed by someone else between our read and our update
        raise Conflict("this outbox event is no longer dead", code="not_dead")
    # Its legacy DLQ entry (an export) is dealt with too.
    await uow.session.execute(
        update(export_events)
        .where(export_events.c.outbox_id == row.id, export_events.c.replayed_at.is_(None))
        .values(replayed_at=func.now())
    )
    await notify_due(uow)
    return replayed


async def replay_export(uow: UnitOfWork, export_event_id: str) -> Row[Any]:
    entry = (
        await uow.session.execute(
            select(export_events).where(
                export_events.c.id == parse_id(export_event_id), export_events.c.mode == EXPORT_DEAD_LETTER
            )
        )
    ).one_or_none()
    if entry is None:
        raise NotFound("export dead letter not found", code="export_dead_letter_not_found")
    if entry.replayed_at is not None:
        raise Conflict("this export dead letter was already replayed", code="already_replayed")
    return await replay(uow, str(entry.outbox_id))


DLQ_KINDS = ("outbox", "export", "all")


@dataclass(frozen=True)
class DeadLetterPage:
    items: list[Row[Any]]
    outbox_dead_count: int
    export_dead_count: int

    def total(self, kind: str) -> int:
        return {
            "outbox": self.outbox_dead_count,
            "export": self.export_dead_count,
        }.get(kind, self.outbox_dead_count + self.export_dead_count)


async def dead_letter_queue(uow: UnitOfWork, *, kind: str, limit: int, offset: int) -> DeadLetterPage:
    """Dead outbox rows and open export dead letters in one list, newest first, paginated in SQL
    (UNION ALL, then ORDER BY / LIMIT / OFFSET), with both counts."""
    if kind not in DLQ_KINDS:
        raise invalid("kind", "must be outbox, export or all")
    assert uow.org_id is not None
    o, e = outbox_events, export_events
    dead_outbox = select(
        literal_column("'outbox'").label("kind"),
        o.c.id,
        o.c.id.label("outbox_id"),
        o.c.kind.label("event_kind"),
        o.c.dedupe_key,
        o.c.target,
        o.c.attempts,
        o.c.last_error,
        o.c.updated_at.label("created_at"),
    ).where(o.c.org_id == uow.org_id, o.c.status == "dead")
    open_exports = (
        select(
            literal_column("'export'").label("kind"),
            e.c.id,
            e.c.outbox_id,
            literal_column("'export'").label("event_kind"),
            func.coalesce(o.c.dedupe_key, "").label("dedupe_key"),
            e.c.target,
            e.c.attempts,
            e.c.last_error,
            e.c.created_at,
        )
        .select_from(e.outerjoin(o, o.c.id == e.c.outbox_id))
        .where(e.c.org_id == uow.org_id, e.c.mode == EXPORT_DEAD_LETTER, e.c.replayed_at.is_(None))
    )
    parts = {"outbox": [dead_outbox], "export": [open_exports], "all": [dead_outbox, open_exports]}[kind]
    combined = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery("dlq")
    items = (
        await uow.session.execute(
            select(combined)
            .order_by(combined.c.created_at.desc(), combined.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    counts = (
        await uow.session.execute(
            select(
                select(func.count())
                .select_from(o)
                .where(o.c.org_id == uow.org_id, o.c.status == "dead")
                .scalar_subquery(),
                select(func.count())
                .select_from(e)
                .where(e.c.org_id == uow.org_id, e.c.mode == EXPORT_DEAD_LETTER, e.c.replayed_at.is_(None))
                .scalar_subquery(),
            )
        )
    ).one()
    return DeadLetterPage(list(items), int(counts[0]), int(counts[1]))


async def list_email_events(uow: UnitOfWork, *, booking_id: str, limit: int, offset: int) -> list[Row[Any]]:
    assert uow.org_id is not None
    query = select(email_events).where(email_events.c.org_id == uow.org_id)
    if booking_id:
        query = query.where(email_events.c.booking_id == parse_id(booking_id, "booking_id"))
    return list(
        (
            await uow.session.execute(
                query.order_by(email_events.c.created_at.desc(), email_events.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
    )


# --- scheduled upkeep ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadEmailRetry:
    requeued: int
    left_dead: int


async def retry_dead_emails(uow: UnitOfWork, settings: NotifySettings) -> DeadEmailRetry:
    """The email-dlq job: an email that ran out of retries (server down, timeouts) gets one more
    attempt once it has been dead EMAIL_DLQ_RETRY_AFTER_SECONDS; never twice, and never an email that
    was refused (a bounce), which stays dead for an operator."""
    assert uow.org_id is not None
    o = outbox_events
    requeued = (
        await uow.session.execute(
            update(o)
            .where(
                o.c.org_id == uow.org_id,
                o.c.kind == "email",
                o.c.status == "dead",
                o.c.dead_reason == "retries_exhausted",
                o.c.dlq_retried_at.is_(None),
                o.c.updated_at <= func.now() - timedelta(seconds=settings.email_dlq_retry_after_seconds),
            )
            .values(
                status="pending",
                # One attempt: the claim takes it to the last one, so a failure is dead again.
                attempts=max(settings.outbox_max_attempts - 1, 0),
                next_attempt_at=func.now(),
                dead_reason=None,
                dlq_retried_at=func.now(),
                updated_at=func.now(),
            )
            .returning(o.c.id)
        )
    ).all()
    left = await uow.session.scalar(
        select(func.count())
        .select_from(o)
        .where(o.c.org_id == uow.org_id, o.c.kind == "email", o.c.status == "dead")
    )
    if requeued:
        await notify_due(uow)
    return DeadEmailRetry(requeued=len(requeued), left_dead=int(left or 0))


async def retention_cleanup(uow: UnitOfWork, settings: NotifySettings) -> int:
    """Seed 002 RETENTION_*: delivered or skipped outbox rows and old email events go; dead rows
    stay until an operator deals with them."""
    assert uow.org_id is not None
    outbox_deleted = (
        await uow.session.execute(
            delete(outbox_events)
            .where(
                outbox_events.c.org_id == uow.org_id,
                outbox_events.c.status.in_(("sent", "skipped")),
                outbox_events.c.updated_at < func.now() - timedelta(days=settings.retention_outbox_days),
            )
            .returning(outbox_events.c.id)
        )
    ).all()
    emails_deleted = (
        await uow.session.execute(
            delete(email_events)
            .where(
                email_events.c.org_id == uow.org_id,
                email_events.c.created_at < func.now() - timedelta(days=settings.retention_email_events_days),
            )
            .returning(email_events.c.id)
        )
    ).all()
    return len(outbox_deleted) + len(emails_deleted)
