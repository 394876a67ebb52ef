"""Exports other suite services hand to notify (seed 002 "Accounting export v1"): billing's monthly
accounting CSV, sent by the `accounting-export` job.

Where one goes is notify's setting, not the caller's: with EXPORT_MODE=webhook and EXPORT_WEBHOOK_URL
set it becomes an outbox row of kind export (delivered signed by the webhook adapter, with retries and
the export DLQ, like the lead export); otherwise it is kept in export_events with its mode
(`accounting_csv`) for finance staff to review and download. A sheet (EXPORT_MODE=sheets) takes one row
per export, which a CSV of many rows is not, so there it is kept too.

A dedupe key (export:accounting_csv:YYYY-MM) makes a repeat a no-op wherever the first one went: the
job repeats the call when billing crashed after it, and the answer is the first export, even if
EXPORT_MODE changed in between."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Integer, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument, NotFound, invalid
from services.notify.models import STORED_EXPORT_MODES, export_events, outbox_events
from services.notify.outbox import enqueue
from services.notify.settings import NotifySettings

WEBHOOK, STORED = "webhook", "stored"
PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CONTENT_TYPE = "text/csv"


@dataclass(frozen=True)
class ExportIn:
    mode: str
    period: str
    filename: str
    content: str
    rows: int
    dedupe_key: str


@dataclass(frozen=True)
class Queued:
    delivery: str  # webhook | stored
    id: uuid.UUID
    created: bool


@dataclass(frozen=True)
class StoredExport:
    id: uuid.UUID
    mode: str
    period: str
    filename: str
    rows: int
    bytes: int
    created_at: datetime


def check(export: ExportIn) -> None:
    problems: list[FieldViolation] = []
    if export.mode not in STORED_EXPORT_MODES:
        problems.append(FieldViolation("mode", f"must be one of {', '.join(STORED_EXPORT_MODES)}"))
    if not PERIOD.fullmatch(export.period):
        problems.append(FieldViolation("period", "must be a month, YYYY-MM"))
    if not FILENAME.fullmatch(export.filename):
        problems.append(FieldViolation("filename", "must be 1 to 100 letters, digits, '.', '_' or '-'"))
    if export.rows < 0:
        problems.append(FieldViolation("rows", "must not be negative"))
    if not 1 <= len(export.dedupe_key) <= 300:
        problems.append(FieldViolation("dedupe_key", "must be 1 to 300 characters"))
    if "\x00" in export.content:  # Postgres text (and JSONB) cannot hold it
        problems.append(FieldViolation("content", "must not contain NUL characters"))
    if problems:
        raise InvalidArgument.of(problems)


def delivers_by_webhook(settings: NotifySettings) -> bool:
    return settings.export_mode == "webhook" and bool(settings.export_webhook_url)


def payload_of(export: ExportIn, org_id: uuid.UUID) -> dict[str, Any]:
    """The webhook's body, and what a stored export keeps: the same document either way."""
    return {
        "type": export.mode,
        "data": {
            "org_id": str(org_id),
            "period": export.period,
            "filename": export.filename,
            "content_type": CONTENT_TYPE,
            "rows": export.rows,
            "bytes": len(export.content.encode()),
            "csv": export.content,
        },
    }


async def queue(uow: UnitOfWork, settings: NotifySettings, export: ExportIn) -> Queued:
    """The export sent (an outbox row) or kept (an export_events row), once per dedupe key."""
    check(export)
    assert uow.org_id is not None
    earlier = await _earlier(uow, export)
    if earlier is not None:
        return earlier
    payload = payload_of(export, uow.org_id)
    if delivers_by_webhook(settings):
        enqueued = await enqueue(
            uow,
            kind="export",
            dedupe_key=export.dedupe_key,
            payload=payload,
            target=urlsplit(settings.export_webhook_url).hostname or "",
        )
        return Queued(WEBHOOK, enqueued.row.id, enqueued.created)
    inserted = await uow.session.scalar(
        pg_insert(export_events)
        .values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            mode=export.mode,
            dedupe_key=export.dedupe_key,
            payload=payload,
            attempts=0,
        )
        .on_conflict_do_nothing(
            index_elements=[export_events.c.org_id, export_events.c.dedupe_key],
            index_where=export_events.c.dedupe_key.is_not(None),
        )
        .returning(export_events.c.id)
    )
    if inserted is not None:
        return Queued(STORED, inserted, True)
    # Stored by a call that ran beside this one.
    again = await _earlier(uow, export)
    assert again is not None
    return again


async def _earlier(uow: UnitOfWork, export: ExportIn) -> Queued | None:
    sent = await uow.session.scalar(
        select(outbox_events.c.id).where(
            outbox_events.c.org_id == uow.org_id, outbox_events.c.dedupe_key == export.dedupe_key
        )
    )
    if sent is not None:
        return Queued(WEBHOOK, sent, False)
    kept = await uow.session.scalar(
        select(export_events.c.id).where(
            export_events.c.org_id == uow.org_id, export_events.c.dedupe_key == export.dedupe_key
        )
    )
    return Queued(STORED, kept, False) if kept is not None else None


# --- review: the stored exports of the caller's org ----------------------------------------------

_data = export_events.c.payload["data"]
_SUMMARY = (
    export_events.c.id,
    export_events.c.mode,
    export_events.c.created_at,
    _data["period"].astext.label("period"),
    _data["filename"].astext.label("filename"),
    _data["rows"].astext.cast(Integer).label("rows"),
    _data["bytes"].astext.cast(Integer).label("bytes"),
)


def check_mode(mode: str) -> str:
    mode = mode or STORED_EXPORT_MODES[0]
    if mode not in STORED_EXPORT_MODES:
        raise invalid("mode", f"must be one of {', '.join(STORED_EXPORT_MODES)}")
    return mode


def _summary(row: Any) -> StoredExport:
    return StoredExport(
        id=row.id,
        mode=row.mode,
        period=row.period or "",
        filename=row.filename or "",
        rows=int(row.rows or 0),
        bytes=int(row.bytes or 0),
        created_at=row.created_at,
    )


async def list_stored(uow: UnitOfWork, *, mode: str, limit: int, offset: int) -> list[StoredExport]:
    """Newest month first (the CSV itself is not read)."""
    assert uow.org_id is not None
    rows = await uow.session.execute(
        select(*_SUMMARY)
        .where(export_events.c.org_id == uow.org_id, export_events.c.mode == check_mode(mode))
        .order_by(_data["period"].astext.desc(), export_events.c.created_at.desc(), export_events.c.id)
        .limit(limit)
        .offset(offset)
    )
    return [_summary(row) for row in rows]


async def get_stored(uow: UnitOfWork, export_id: str, *, mode: str) -> tuple[StoredExport, str]:
    """One stored export and its content; a dead letter's id (or another org's) is not found."""
    row = (
        await uow.session.execute(
            select(*_SUMMARY, _data["csv"].astext.label("content")).where(
                export_events.c.id == parse_id(export_id),
                export_events.c.mode == check_mode(mode),
            )
        )
    ).one_or_none()
    if row is None:
        raise NotFound("stored export not found", code="stored_export_not_found")
    return _summary(row), row.content or ""
