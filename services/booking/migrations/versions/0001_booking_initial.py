"""booking: org profiles, pricing, leads, bookings, teams, workers, schedule blocks, NPS; forced RLS

Revision ID: 0001_booking_initial
Revises:
Create Date: 2026-11-22 03:27:31.731953
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from libs.common.db import ORG_PREDICATE

revision = "0001_booking_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # btree_gist lets one exclusion constraint mix equality (team, worker) with range overlap.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "event_dead_letters",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), server_default="{}", nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_dead_letters")),
        schema="booking",
    )
    op.create_table(
        "event_inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_event_inbox")),
        schema="booking",
    )
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=True),
        sa.Column("request_id", sa.String(length=100), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
        schema="booking",
    )
    op.create_index(
        "ix_event_outbox_unpublished",
        "event_outbox",
        ["created_at"],
        unique=False,
        schema="booking",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "org_profiles",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="CAD", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_profiles")),
        sa.UniqueConstraint("public_key", name=op.f("uq_org_profiles_public_key")),
        schema="booking",
    )
    op.create_table(
        "pricing_configs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("min_total_cents", sa.Integer(), server_default="0", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("used", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pricing_configs")),
        sa.UniqueConstraint("org_id", "version", name=op.f("uq_pricing_configs_org_id_version")),
        schema="booking",
    )
    op.create_index(
        "uq_pricing_configs_one_active",
        "pricing_configs",
        ["org_id"],
        unique=True,
        schema="booking",
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "teams",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        schema="booking",
    )
    op.create_index(
        "uq_teams_org_name",
        "teams",
        ["org_id", sa.literal_column("lower(name)")],
        unique=True,
        schema="booking",
    )
    op.create_table(
        "leads",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("postal_code", sa.String(length=16), nullable=False),
        sa.Column("beds", sa.Integer(), nullable=False),
        sa.Column("baths", sa.Float(), nullable=False),
        sa.Column("cleaning_type", sa.String(length=20), nullable=False),
        sa.Column("pricing_config_id", sa.UUID(), nullable=False),
        sa.Column("estimate", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("total_before_tax_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="new", nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["pricing_config_id"],
            ["booking.pricing_configs.id"],
            name=op.f("fk_leads_pricing_config_id_pricing_configs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("org_id", "idempotency_key", name=op.f("uq_leads_org_id_idempotency_key")),
        schema="booking",
    )
    op.create_index("ix_leads_org_created", "leads", ["org_id", "created_at"], unique=False, schema="booking")
    op.create_table(
        "workers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), server_default="", nullable=False),
        sa.Column("phone", sa.String(length=32), server_default="", nullable=False),
        sa.Column("role", sa.String(length=200), server_default="", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["booking.teams.id"], name=op.f("fk_workers_team_id_teams"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        schema="booking",
    )
    op.create_index("ix_workers_org_team", "workers", ["org_id", "team_id"], unique=False, schema="booking")
    op.create_table(
        "bookings",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("lead_id", sa.UUID(), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_name", sa.String(length=200), nullable=False),
        sa.Column("client_email", sa.String(length=320), server_default="", nullable=False),
        sa.Column("client_phone", sa.String(length=32), server_default="", nullable=False),
        sa.Column("address", sa.String(length=500), server_default="", nullable=False),
        sa.Column("postal_code", sa.String(length=16), server_default="", nullable=False),
        sa.Column("cleaning_type", sa.String(length=20), nullable=False),
        sa.Column("beds", sa.Integer(), nullable=False),
        sa.Column("baths", sa.Float(), nullable=False),
        sa.Column("total_before_tax_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("team_id", sa.UUID(), nullable=True),
        sa.Column("deposit_required", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deposit_paid", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("cancel_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'in_progress', 'completed', 'cancelled')",
            name=op.f("ck_bookings_status_known"),
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_bookings_ends_after_start")),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["booking.leads.id"], name=op.f("fk_bookings_lead_id_leads"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["booking.teams.id"], name=op.f("fk_bookings_team_id_teams"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
        sa.UniqueConstraint("org_id", "idempotency_key", name=op.f("uq_bookings_org_id_idempotency_key")),
        schema="booking",
    )
    op.create_index(
        "ix_bookings_org_email",
        "bookings",
        ["org_id", sa.literal_column("lower(client_email)")],
        unique=False,
        schema="booking",
    )
    op.create_index(
        "ix_bookings_org_starts", "bookings", ["org_id", "starts_at"], unique=False, schema="booking"
    )
    op.create_index(
        "ix_bookings_org_status_starts",
        "bookings",
        ["org_id", "status", "starts_at"],
        unique=False,
        schema="booking",
    )
    op.create_table(
        "nps_responses",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("score BETWEEN 0 AND 10", name=op.f("ck_nps_responses_score_range")),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["booking.bookings.id"],
            name=op.f("fk_nps_responses_booking_id_bookings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nps_responses")),
        sa.UniqueConstraint("booking_id", name=op.f("uq_nps_responses_booking_id")),
        schema="booking",
    )
    op.create_index(
        "ix_nps_responses_org_created",
        "nps_responses",
        ["org_id", "created_at"],
        unique=False,
        schema="booking",
    )
    op.create_table(
        "nps_surveys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["booking.bookings.id"],
            name=op.f("fk_nps_surveys_booking_id_bookings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nps_surveys")),
        sa.UniqueConstraint("booking_id", name=op.f("uq_nps_surveys_booking_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_nps_surveys_token_hash")),
        schema="booking",
    )
    op.create_table(
        "schedule_blocks",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=True),
        sa.Column("team_id", sa.UUID(), nullable=True),
        sa.Column("worker_id", sa.UUID(), nullable=True),
        sa.Column("period", postgresql.TSTZRANGE(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(kind = 'booking') = (booking_id IS NOT NULL)",
            name=op.f("ck_schedule_blocks_booking_blocks_name_booking"),
        ),
        sa.CheckConstraint("kind IN ('booking', 'blackout')", name=op.f("ck_schedule_blocks_kind_known")),
        sa.CheckConstraint(
            "(team_id IS NULL) <> (worker_id IS NULL)", name=op.f("ck_schedule_blocks_one_subject")
        ),
        sa.CheckConstraint("NOT isempty(period)", name=op.f("ck_schedule_blocks_period_not_empty")),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["booking.bookings.id"],
            name=op.f("fk_schedule_blocks_booking_id_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["booking.teams.id"],
            name=op.f("fk_schedule_blocks_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["booking.workers.id"],
            name=op.f("fk_schedule_blocks_worker_id_workers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_blocks")),
        schema="booking",
    )
    op.create_index(
        "ix_schedule_blocks_booking", "schedule_blocks", ["booking_id"], unique=False, schema="booking"
    )

    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE booking.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE booking.{table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_org_isolation ON booking.{table} USING ({ORG_PREDICATE})")
    # The database refuses double-booking: no two blocks of one team, or of one worker, overlap.
    op.execute(
        "ALTER TABLE booking.schedule_blocks ADD CONSTRAINT ex_schedule_blocks_team_overlap "
        "EXCLUDE USING gist (team_id WITH =, period WITH &&) WHERE (team_id IS NOT NULL)"
    )
    op.execute(
        "ALTER TABLE booking.schedule_blocks ADD CONSTRAINT ex_schedule_blocks_worker_overlap "
        "EXCLUDE USING gist (worker_id WITH =, period WITH &&) WHERE (worker_id IS NOT NULL)"
    )
    op.execute(
        "CREATE INDEX ix_schedule_blocks_org_period ON booking.schedule_blocks USING gist (org_id, period)"
    )
    # A pricing config an estimate used is evidence: its rules never change (new version instead).
    op.execute(
        """
        CREATE FUNCTION booking.pricing_config_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF OLD.used AND (NEW.rules IS DISTINCT FROM OLD.rules OR NEW.min_total_cents <> OLD.min_total_cents
                           OR NEW.currency <> OLD.currency OR NEW.version <> OLD.version) THEN
            RAISE EXCEPTION 'pricing config % was used by an estimate and cannot change', OLD.id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER pricing_configs_immutable BEFORE UPDATE ON booking.pricing_configs "
        "FOR EACH ROW EXECUTE FUNCTION booking.pricing_config_immutable()"
    )
    # Public endpoints know an org's public key, not its id: this one narrow lookup maps it.
    op.execute(
        """
        CREATE FUNCTION booking.org_for_key(p_key text)
        RETURNS TABLE (org_id uuid, time_zone text)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, booking
        AS $$ SELECT org_id, time_zone FROM booking.org_profiles WHERE public_key = lower(p_key) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION booking.org_for_key(text) FROM PUBLIC")


# Frozen here: later migrations change these tables, this list stays what 0001 created.
TENANT_TABLES = (
    "org_profiles",
    "pricing_configs",
    "leads",
    "teams",
    "workers",
    "bookings",
    "schedule_blocks",
    "nps_surveys",
    "nps_responses",
)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS booking.org_for_key(text)")
    op.execute("DROP TRIGGER IF EXISTS pricing_configs_immutable ON booking.pricing_configs")
    op.execute("DROP FUNCTION IF EXISTS booking.pricing_config_immutable()")
    for table in (
        "nps_responses",
        "nps_surveys",
        "schedule_blocks",
        "bookings",
        "workers",
        "teams",
        "leads",
        "pricing_configs",
        "org_profiles",
        "event_outbox",
        "event_inbox",
        "event_dead_letters",
    ):
        op.drop_table(table, schema="booking")
