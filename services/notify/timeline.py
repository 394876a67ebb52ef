"""notify's share of the cross-service views (issue 13): what it sent about one booking or one
invoice (email events and outbox rows, newest first, capped per source) and the business figures it
can state for a period (emails sent and failed, webhooks sent and dead).

Outbox rows are found by the booking_id / invoice_id the enqueue read from their dedupe key
(subject_keys.py), by index. Personal data (a recipient, a subject, an email target) goes only into
an entry's details under a key of libs.common.privacy.PII_KEYS, so the gateway can mask it for the
VIEWER role; the dedupe key is shown only when it holds no address, and an outbox row's last error
never (an SMTP answer quotes the recipient)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, func, or_, select

from libs.common.db import UnitOfWork
from libs.common.errors import invalid
from services.notify.models import email_events, outbox_events

EMAIL_CAP = 100
OUTBOX_CAP = 100
ACTOR = "service:notify"
MAX_METRICS_PERIOD = timedelta(days=366)


@dataclass(frozen=True)
class Entry:
    at: datetime
    source: str  # email | outbox
    kind: str
    summary: str
    id: str
    details: dict[str, Any]
    actor: str = ACTOR


@dataclass
class Timeline:
    entries: list[Entry] = field(default_factory=list)
    truncated: bool = False

    def add(self, rows: list[Row[Any]], cap: int, entry: Any) -> None:
        """Rows fetched newest first with one beyond the cap: more than the cap means truncated."""
        self.truncated = self.truncated or len(rows) > cap
        self.entries.extend(entry(row) for row in rows[:cap])

    def newest_first(self) -> list[Entry]:
        return sorted(self.entries, key=lambda e: (e.at, e.id), reverse=True)


def email_entry(row: Row[Any]) -> Entry:
    return Entry(
        at=row.created_at,
        source="email",
        kind=f"email.{row.status}",
        summary=f"Email {row.email_type} {row.status}",
        id=str(row.id),
        details={"recipient": row.recipient, "subject": row.subject, "email_type": row.email_type},
    )


def outbox_entry(row: Row[Any]) -> Entry:
    details: dict[str, Any] = {
        "kind": row.kind,
        "attempts": row.attempts,
        "target": row.target,
        "updated_at": row.updated_at.isoformat(),
    }
    # Keys are ids, kinds and times; a digest's names its recipient, and a caller's own key could
    # too, so a key with an address in it is left out rather than shown unmasked.
    if "@" not in row.dedupe_key:
        details["dedupe_key"] = row.dedupe_key
    if row.sent_at is not None:
        details["sent_at"] = row.sent_at.isoformat()
    return Entry(
        at=row.created_at,
        source="outbox",
        kind=f"outbox.{row.status}",
        summary=f"Outbox {row.kind} {row.status} after {row.attempts} attempt(s)",
        id=str(row.id),
        details=details,
    )


async def for_booking(uow: UnitOfWork, booking_id: uuid.UUID) -> Timeline:
    assert uow.org_id is not None
    e, o = email_events, outbox_events
    # An email event has the booking its payload named; one whose payload did not (a photo retake)
    # is the booking's through its outbox row.
    of_booking = select(o.c.id).where(o.c.org_id == uow.org_id, o.c.booking_id == booking_id)
    emails = await uow.session.execute(
        select(e)
        .where(e.c.org_id == uow.org_id, or_(e.c.booking_id == booking_id, e.c.outbox_id.in_(of_booking)))
        .order_by(e.c.created_at.desc(), e.c.id.desc())
        .limit(EMAIL_CAP + 1)
    )
    rows = await uow.session.execute(
        select(o)
        .where(o.c.org_id == uow.org_id, o.c.booking_id == booking_id)
        .order_by(o.c.created_at.desc(), o.c.id.desc())
        .limit(OUTBOX_CAP + 1)
    )
    timeline = Timeline()
    timeline.add(list(emails.all()), EMAIL_CAP, email_entry)
    timeline.add(list(rows.all()), OUTBOX_CAP, outbox_entry)
    return timeline


async def for_invoice(uow: UnitOfWork, invoice_id: uuid.UUID) -> Timeline:
    """The invoice's outbox rows, and the emails those rows became (email events carry no invoice)."""
    assert uow.org_id is not None
    e, o = email_events, outbox_events
    of_invoice = and_(o.c.org_id == uow.org_id, o.c.invoice_id == invoice_id)
    rows = await uow.session.execute(
        select(o).where(of_invoice).order_by(o.c.created_at.desc(), o.c.id.desc()).limit(OUTBOX_CAP + 1)
    )
    emails = await uow.session.execute(
        select(e)
        .where(e.c.org_id == uow.org_id, e.c.outbox_id.in_(select(o.c.id).where(of_invoice)))
        .order_by(e.c.created_at.desc(), e.c.id.desc())
        .limit(EMAIL_CAP + 1)
    )
    timeline = Timeline()
    timeline.add(list(emails.all()), EMAIL_CAP, email_entry)
    timeline.add(list(rows.all()), OUTBOX_CAP, outbox_entry)
    return timeline


# --- metrics ---------------------------------------------------------------------------------------


def check_period(start: datetime, end: datetime) -> None:
    if end <= start:
        raise invalid("to", "must be after from")
    if end - start > MAX_METRICS_PERIOD:
        raise invalid("to", "must be at most 366 days after from")


async def metrics(uow: UnitOfWork, start: datetime, end: datetime) -> dict[str, int]:
    """Counts for [start, end): emails by their recorded outcome (email events; a bounce is a failed
    email), emails still waiting that were enqueued in the period, webhooks and exports delivered
    (sent_at) or given up (dead, by when they died)."""
    check_period(start, end)
    assert uow.org_id is not None
    e, o = email_events, outbox_events
    emails: dict[str, int] = dict(
        (
            await uow.session.execute(
                select(e.c.status, func.count())
                .where(e.c.org_id == uow.org_id, e.c.created_at >= start, e.c.created_at < end)
                .group_by(e.c.status)
            )
        )
        .tuples()
        .all()
    )

    def outbox_count(*where: Any) -> Any:
        return select(func.count()).select_from(o).where(o.c.org_id == uow.org_id, *where).scalar_subquery()

    def sent(kind: str) -> Any:
        return outbox_count(o.c.kind == kind, o.c.status == "sent", o.c.sent_at >= start, o.c.sent_at < end)

    def dead(kind: str) -> Any:
        return outbox_count(
            o.c.kind == kind, o.c.status == "dead", o.c.updated_at >= start, o.c.updated_at < end
        )

    counts = (
        await uow.session.execute(
            select(
                outbox_count(
                    o.c.kind == "email",
                    o.c.status.in_(("pending", "sending")),
                    o.c.created_at >= start,
                    o.c.created_at < end,
                ),
                sent("webhook"),
                dead("webhook"),
                sent("export"),
                dead("export"),
            )
        )
    ).one()
    return {
        "emails_sent": int(emails.get("sent", 0)),
        "emails_failed": int(emails.get("failed", 0)) + int(emails.get("bounced", 0)),
        "emails_bounced": int(emails.get("bounced", 0)),
        "emails_skipped": int(emails.get("skipped", 0)),
        "emails_pending": int(counts[0]),
        "webhooks_sent": int(counts[1]),
        "webhooks_dead": int(counts[2]),
        "exports_sent": int(counts[3]),
        "exports_dead": int(counts[4]),
    }
