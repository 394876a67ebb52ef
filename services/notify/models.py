"""Tables of the notify schema. Every tenant table has org_id and a forced RLS policy (migration 0001).

`outbox_events` is the delivery outbox of seed 002: one row per email, webhook or export send,
unique per (org_id, dedupe_key). The delivery loop claims due rows across orgs through one narrow
SECURITY DEFINER function (`notify.claim_outbox_rows`, which returns what sending needs) and records
each outcome in the row's own org."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from libs.common.db import service_metadata

SCHEMA = "notify"
metadata, event_tables = service_metadata(SCHEMA)

OUTBOX_KINDS = ("email", "webhook", "export")
OUTBOX_STATUSES = ("pending", "sending", "sent", "skipped", "dead")
EMAIL_STATUSES = ("sent", "failed", "bounced", "skipped")
DIGEST_SCHEDULES = ("daily", "weekly", "monthly")
NOTIFICATIONS_MODULE = "module.notifications_center"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


org_profiles = Table(
    "org_profiles",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("dedupe_key", String(300), nullable=False),
    Column("payload", JSONB, nullable=False),
    # Email recipient or webhook host, for operators' lists; the body stays in payload.
    Column("target", String(320), nullable=False, server_default=""),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Due time while pending; while sending, when the claim's lease runs out (a dead worker's rows
    # become due again then).
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # Why a dead row died: "retries_exhausted" (transient failures until the last attempt) or
    # "refused" (a bounce, a 4xx, a target the SSRF guard refuses). Only the first kind is worth the
    # email-dlq job's one automatic retry, which dlq_retried_at records.
    Column("dead_reason", String(20), nullable=True),
    Column("dlq_retried_at", DateTime(timezone=True), nullable=True),
    # The booking and the invoice the row is about, from its dedupe key's structured segments
    # (subject_keys.py), so the timelines and the erasure find a booking's rows by an index.
    Column("booking_id", UUID(as_uuid=True), nullable=True),
    Column("invoice_id", UUID(as_uuid=True), nullable=True),
    # The trace of the work that enqueued the send (tracing on) and its request id: the delivery
    # loop sends from another task, and joins that trace (libs/common/tracing.py).
    Column("trace_context", String(64), nullable=True),
    Column("request_id", String(100), nullable=True),
    UniqueConstraint("org_id", "dedupe_key"),
    CheckConstraint(_in("kind", OUTBOX_KINDS), name="kind"),
    CheckConstraint(_in("status", OUTBOX_STATUSES), name="status"),
    Index(
        "ix_outbox_events_due",
        "next_attempt_at",
        postgresql_where=text("status IN ('pending', 'sending')"),
    ),
    Index("ix_outbox_events_dead", "org_id", "updated_at", postgresql_where=text("status = 'dead'")),
    Index("ix_outbox_events_finished", "updated_at", postgresql_where=text("status IN ('sent', 'skipped')")),
    Index(
        "ix_outbox_events_booking",
        "org_id",
        "booking_id",
        "created_at",
        postgresql_where=text("booking_id IS NOT NULL"),
    ),
    Index(
        "ix_outbox_events_invoice",
        "org_id",
        "invoice_id",
        "created_at",
        postgresql_where=text("invoice_id IS NOT NULL"),
    ),
    # A person's emails by address (data export and erasure).
    Index("ix_outbox_events_org_target", "org_id", text("lower(target)")),
)

# Two kinds of row, told apart by `mode`:
# - "dead_letter": the legacy DLQ view of seed 002; an export that went dead also gets a row here
#   (outbox_id names it; replay puts that outbox row back to pending).
# - "accounting_csv": a monthly accounting CSV kept for review (seed 002 "Accounting export v1": the
#   `accounting-export` job with EXPORT_MODE other than webhook). It never went to the outbox, so no
#   outbox_id; `dedupe_key` (export:accounting_csv:YYYY-MM) keeps one per org and month.
EXPORT_DEAD_LETTER = "dead_letter"
STORED_EXPORT_MODES = ("accounting_csv",)
EXPORT_EVENT_MODES = (EXPORT_DEAD_LETTER, *STORED_EXPORT_MODES)
export_events = Table(
    "export_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("mode", String(20), nullable=False, server_default=EXPORT_DEAD_LETTER),
    Column(
        "outbox_id", UUID(as_uuid=True), ForeignKey("outbox_events.id", ondelete="CASCADE"), nullable=True
    ),
    Column("dedupe_key", String(300), nullable=True),
    Column("target", String(320), nullable=False, server_default=""),
    Column("payload", JSONB, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(_in("mode", EXPORT_EVENT_MODES), name="mode"),
    # A dead letter always names its outbox row; a stored export never has one.
    CheckConstraint("(mode = 'dead_letter') = (outbox_id IS NOT NULL)", name="outbox_of_dead_letter"),
    Index("ix_export_events_open", "org_id", "created_at", postgresql_where=text("replayed_at IS NULL")),
    Index(
        "uq_export_events_dedupe",
        "org_id",
        "dedupe_key",
        unique=True,
        postgresql_where=text("dedupe_key IS NOT NULL"),
    ),
)

email_events = Table(
    "email_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("outbox_id", UUID(as_uuid=True), nullable=True),
    Column("email_type", String(60), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(300), nullable=False, server_default=""),
    Column("status", String(20), nullable=False),
    Column("error", Text, nullable=True),
    Column("booking_id", UUID(as_uuid=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(_in("status", EMAIL_STATUSES), name="status"),
    Index("ix_email_events_booking", "org_id", "booking_id"),
    Index("ix_email_events_created", "org_id", "created_at"),
    # The emails of an invoice's outbox rows (its timeline), and a person's by address (export, erasure).
    Index("ix_email_events_outbox", "outbox_id"),
    Index("ix_email_events_org_recipient", "org_id", text("lower(recipient)")),
)

feature_toggles = Table(
    "feature_toggles",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("key", String(100), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

notifications_digest_settings = Table(
    "notifications_digest_settings",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("digest_key", String(100), primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("schedule", String(20), nullable=False),
    Column("recipients", JSONB, nullable=False, server_default="[]"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(_in("schedule", DIGEST_SCHEDULES), name="schedule"),
)

# One row per digest per period (a day, ISO week or month in the org's time zone): the runner may
# loop every minute and still sends each digest once per period.
notifications_digest_state = Table(
    "notifications_digest_state",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("digest_key", String(100), primary_key=True),
    Column("period_key", String(20), primary_key=True),
    Column("outbox_id", UUID(as_uuid=True), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

TENANT_TABLES = (
    "org_profiles",
    "outbox_events",
    "export_events",
    "email_events",
    "feature_toggles",
    "notifications_digest_settings",
    "notifications_digest_state",
)
