"""Tables of the booking schema. Every tenant table has org_id and a forced RLS policy (migration 0001).

Occupancy of teams and workers lives in `schedule_blocks`: one row per assigned team, per assigned
worker, and per blackout. Two exclusion constraints (btree_gist) make the database itself refuse any
overlap for the same team or worker, so concurrent assignments cannot double-book."""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE, UUID

from libs.common.db import service_metadata

SCHEMA = "booking"
metadata, event_tables = service_metadata(SCHEMA)

# One row of a table here, its columns by attribute (row.time_zone): what query functions return.
Record: TypeAlias = Row[*tuple[Any, ...]]

BOOKING_STATUSES = ("pending", "confirmed", "in_progress", "completed", "cancelled")
CLEANING_TYPES = ("standard", "deep", "move_out")

org_profiles = Table(
    "org_profiles",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    # The public key a website sends (X-Org-Key) or the host's subdomain, for public endpoints.
    Column("public_key", String(64), nullable=False, unique=True),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("currency", String(3), nullable=False, server_default="CAD"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

pricing_configs = Table(
    "pricing_configs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    # {"standard": {"base_cents": .., "per_bed_cents": .., "per_bath_cents": .., "minutes_base": ..,
    #   "minutes_per_bed": .., "minutes_per_bath": ..}, ...}
    Column("rules", JSONB, nullable=False),
    Column("min_total_cents", Integer, nullable=False, server_default="0"),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    # Set when an estimate first used it; the migration's trigger then refuses changes to its rules.
    Column("used", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("org_id", "version"),
    Index("uq_pricing_configs_one_active", "org_id", unique=True, postgresql_where=text("active")),
)

leads = Table(
    "leads",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("name", String(200), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("email", String(320), nullable=False),
    Column("postal_code", String(16), nullable=False),
    Column("beds", Integer, nullable=False),
    Column("baths", Float, nullable=False),
    Column("cleaning_type", String(20), nullable=False),
    Column("pricing_config_id", UUID(as_uuid=True), ForeignKey("booking.pricing_configs.id"), nullable=False),
    Column("estimate", JSONB, nullable=False),
    Column("total_before_tax_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("notes", Text, nullable=False, server_default=""),
    Column("status", String(20), nullable=False, server_default="new"),
    Column("idempotency_key", String(200), nullable=True),
    # sha256 of the request that first used the key (services/booking/idempotency.py); NULL before 0004.
    Column("idempotency_fingerprint", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Data deletion (issue 13, migration 0007): when a deletion request named the lead, and when its
    # personal data was erased (the row stays, anonymised, for the bookings and totals behind it).
    Column("deletion_requested_at", DateTime(timezone=True), nullable=True),
    Column("anonymized_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("org_id", "idempotency_key"),
    Index("ix_leads_org_created", "org_id", "created_at"),
    # A person is found by email (FindPerson, erasure): without it that reads every lead of the org.
    Index("ix_leads_org_email", "org_id", text("lower(email)")),
)

teams = Table(
    "teams",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("name", String(200), nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("uq_teams_org_name", "org_id", text("lower(name)"), unique=True),
)

workers = Table(
    "workers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("team_id", UUID(as_uuid=True), ForeignKey("booking.teams.id", ondelete="SET NULL"), nullable=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False, server_default=""),
    Column("phone", String(32), nullable=False, server_default=""),
    Column("role", String(200), nullable=False, server_default=""),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_workers_org_team", "org_id", "team_id"),
)

bookings = Table(
    "bookings",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("lead_id", UUID(as_uuid=True), ForeignKey("booking.leads.id", ondelete="SET NULL"), nullable=True),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("client_name", String(200), nullable=False),
    Column("client_email", String(320), nullable=False, server_default=""),
    Column("client_phone", String(32), nullable=False, server_default=""),
    Column("address", String(500), nullable=False, server_default=""),
    Column("postal_code", String(16), nullable=False, server_default=""),
    Column("cleaning_type", String(20), nullable=False),
    Column("beds", Integer, nullable=False),
    Column("baths", Float, nullable=False),
    Column("total_before_tax_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("team_id", UUID(as_uuid=True), ForeignKey("booking.teams.id", ondelete="SET NULL"), nullable=True),
    Column("deposit_required", Boolean, nullable=False, server_default=text("false")),
    Column("deposit_paid", Boolean, nullable=False, server_default=text("false")),
    Column("notes", Text, nullable=False, server_default=""),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("idempotency_key", String(200), nullable=True),
    Column("idempotency_fingerprint", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("ends_at > starts_at", name="ends_after_start"),
    CheckConstraint(f"status IN {BOOKING_STATUSES!r}", name="status_known"),
    UniqueConstraint("org_id", "idempotency_key"),
    Index("ix_bookings_org_starts", "org_id", "starts_at"),
    Index("ix_bookings_org_email", "org_id", text("lower(client_email)")),
    Index("ix_bookings_org_status_starts", "org_id", "status", "starts_at"),
    # Billing's usage report: bookings an org created in a month (CountUsage).
    Index("ix_bookings_org_created", "org_id", "created_at"),
    # Bookings changed since a time, oldest change first (integrations' gcal-sync, migration 0010).
    # A trigger moves updated_at on every change of a row, whoever makes it.
    Index("ix_bookings_org_updated", "org_id", "updated_at", "id"),
    # A person's bookings by their lead (FindPerson, erasure), and the lead's ON DELETE SET NULL.
    Index("ix_bookings_lead", "lead_id"),
)

schedule_blocks = Table(
    "schedule_blocks",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("kind", String(10), nullable=False),
    Column(
        "booking_id", UUID(as_uuid=True), ForeignKey("booking.bookings.id", ondelete="CASCADE"), nullable=True
    ),
    Column("team_id", UUID(as_uuid=True), ForeignKey("booking.teams.id", ondelete="CASCADE"), nullable=True),
    Column(
        "worker_id", UUID(as_uuid=True), ForeignKey("booking.workers.id", ondelete="CASCADE"), nullable=True
    ),
    Column("period", TSTZRANGE, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Busy time read from an outside calendar (PutExternalBlackout, migration 0010): the key the sync
    # names it by ("gcal:<calendar>:<event>"), one blackout per org, team and key. These blackouts are
    # outside the exclusion constraints (two overlapping events, or an event over a job already
    # assigned, are facts of the outside calendar, not double-booking); assigning or rescheduling
    # checks them instead (resources.refuse_external_busy).
    Column("external_key", Text, nullable=True),
    # The period's bounds and length class, stored by Postgres itself (migration 0009): window
    # queries compare these with plain, leakproof btree operators, which row-level security lets
    # drive an index, where the range operator `&&` is not leakproof and never can.
    Column("starts_at", DateTime(timezone=True), Computed("lower(period)", persisted=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), Computed("upper(period)", persisted=True), nullable=False),
    # Longer than 24 hours (only long blackouts): the other blocks start at most a day before any
    # window they overlap, which bounds an index range on starts_at.
    Column(
        "long_span",
        Boolean,
        Computed("(upper(period) - lower(period)) > interval '24 hours'", persisted=True),
        nullable=False,
    ),
    CheckConstraint("kind IN ('booking', 'blackout')", name="kind_known"),
    CheckConstraint("(team_id IS NULL) <> (worker_id IS NULL)", name="one_subject"),
    CheckConstraint("(kind = 'booking') = (booking_id IS NOT NULL)", name="booking_blocks_name_booking"),
    CheckConstraint("NOT isempty(period)", name="period_not_empty"),
    CheckConstraint(
        "external_key IS NULL OR (kind = 'blackout' AND team_id IS NOT NULL)", name="external_team_blackout"
    ),
    Index("ix_schedule_blocks_booking", "booking_id"),
    # One blackout per org, team and key; led by the key, so a key's blackouts of every team
    # (DeleteExternalBlackouts) are an index range too.
    Index(
        "uq_schedule_blocks_external",
        "org_id",
        "external_key",
        "team_id",
        unique=True,
        postgresql_where=text("external_key IS NOT NULL"),
    ),
    # Migration 0009: every window query is an index range on one of these (scheduling.py).
    Index("ix_schedule_blocks_org_span_starts", "org_id", "long_span", "starts_at"),
    Index(
        "ix_schedule_blocks_org_team_starts",
        "org_id",
        "team_id",
        "long_span",
        "starts_at",
        postgresql_where=text("team_id IS NOT NULL"),
    ),
    Index(
        "ix_schedule_blocks_org_worker_starts",
        "org_id",
        "worker_id",
        "long_span",
        "starts_at",
        postgresql_where=text("worker_id IS NOT NULL"),
    ),
)

nps_surveys = Table(
    "nps_surveys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column(
        "booking_id",
        UUID(as_uuid=True),
        ForeignKey("booking.bookings.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

nps_responses = Table(
    "nps_responses",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column(
        "booking_id",
        UUID(as_uuid=True),
        ForeignKey("booking.bookings.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("score", Integer, nullable=False),
    Column("comment", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("score BETWEEN 0 AND 10", name="score_range"),
    Index("ix_nps_responses_org_created", "org_id", "created_at"),
)

# What booking knows of the org's subscription (issue 11), from billing's cws.billing.subscription.
# {paused,resumed} events: while `paused`, new bookings and workers are refused. `changed_at` is the
# applied event's time, so an older event delivered late changes nothing. No row: active.
org_entitlements = Table(
    "org_entitlements",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# Seed 002's data deletion requests (issue 13): one per person asked for, at most one open (pending)
# per subject and org. `person` is the snapshot the driver erases (lead_ids, emails, booking_ids,
# invoice_ids, pii_values): its emails and values are cleared once every step is done, only ids stay.
# `steps` maps each step name (media, billing, notify, iam, booking) to its progress.
DELETION_STATUSES = ("pending", "completed")

data_deletion_requests = Table(
    "data_deletion_requests",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),
    # "lead:<id>" or "email:<first 16 hex of sha256(email)>": never the email itself.
    Column("subject", String(200), nullable=False),
    # sha256 (hex) of what the request named, so a repeat finds the open request.
    Column("subject_hash", String(64), nullable=False),
    Column("requested_by", String(200), nullable=False, server_default=""),
    Column("person", JSONB, nullable=False),
    Column("steps", JSONB, nullable=False),
    Column("matched_leads", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(f"status IN {DELETION_STATUSES!r}", name="status_known"),
    Index(
        "uq_data_deletion_requests_open",
        "org_id",
        "subject_hash",
        unique=True,
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_data_deletion_requests_org_status_created", "org_id", "status", "created_at"),
)
