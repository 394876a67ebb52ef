"""iam: orgs, users, sessions, refresh tokens, break-glass, admin audit log, with forced RLS

Revision ID: 0001_iam_initial
Revises:
Create Date: 2026-11-22 02:55:21.169702
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from libs.common.db import ORG_PREDICATE

revision = "0001_iam_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_audit_logs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), server_default="", nullable=False),
        sa.Column("auth_method", sa.String(length=20), server_default="", nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("resource_type", sa.String(length=100), server_default="", nullable=False),
        sa.Column("resource_id", sa.String(length=100), server_default="", nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("request_id", sa.String(length=100), server_default="", nullable=False),
        sa.Column("client_ip", sa.String(length=64), server_default="", nullable=False),
        sa.Column("break_glass_session_id", sa.UUID(), nullable=True),
        sa.Column("break_glass_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_audit_logs")),
        schema="iam",
    )
    op.create_index(
        "ix_admin_audit_logs_org_created",
        "admin_audit_logs",
        ["org_id", "created_at"],
        unique=False,
        schema="iam",
    )
    op.create_table(
        "break_glass_sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_break_glass_sessions_token_hash")),
        schema="iam",
    )
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
        schema="iam",
    )
    op.create_table(
        "event_inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_event_inbox")),
        schema="iam",
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
        schema="iam",
    )
    op.create_index(
        "ix_event_outbox_unpublished",
        "event_outbox",
        ["created_at"],
        unique=False,
        schema="iam",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "orgs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orgs")),
        schema="iam",
    )
    op.create_table(
        "users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("full_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("totp_secret_enc", sa.Text(), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed_login_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "role IN ('OWNER', 'ADMIN', 'DISPATCHER', 'FINANCE', 'VIEWER')", name=op.f("ck_users_role_known")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["iam.orgs.id"], name=op.f("fk_users_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        schema="iam",
    )
    op.create_index("ix_users_org_id", "users", ["org_id"], unique=False, schema="iam")
    op.create_index(
        "uq_users_email_lower", "users", [sa.literal_column("lower(email)")], unique=True, schema="iam"
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("mfa_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "last_used_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=100), nullable=True),
        sa.Column("client_ip", sa.String(length=64), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["iam.users.id"], name=op.f("fk_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        schema="iam",
    )
    op.create_index("ix_sessions_org_user", "sessions", ["org_id", "user_id"], unique=False, schema="iam")
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["iam.sessions.id"],
            name=op.f("fk_refresh_tokens_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
        schema="iam",
    )
    op.create_index("ix_refresh_tokens_session", "refresh_tokens", ["session_id"], unique=False, schema="iam")

    # orgs is keyed by its own id; every other tenant table by org_id.
    op.execute("ALTER TABLE iam.orgs ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE iam.orgs FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY orgs_org_isolation ON iam.orgs USING "
        "(id = NULLIF(current_setting('app.current_org_id', true), '')::uuid)"
    )
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE iam.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE iam.{table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_org_isolation ON iam.{table} USING ({ORG_PREDICATE})")
    # Login knows an email, not an org. This one narrow function, owned by the migration role,
    # maps an email to its user and org; everything after it runs inside that org under RLS.
    op.execute(
        """
        CREATE FUNCTION iam.find_login(p_email text)
        RETURNS TABLE (user_id uuid, org_id uuid)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, iam
        AS $$ SELECT id, org_id FROM iam.users WHERE lower(email) = lower(p_email) $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION iam.find_login(text) FROM PUBLIC")


# Frozen here: later migrations change these tables, this list stays what 0001 created.
TENANT_TABLES = ("users", "sessions", "refresh_tokens", "break_glass_sessions", "admin_audit_logs")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS iam.find_login(text)")
    for table in (
        "refresh_tokens",
        "sessions",
        "users",
        "orgs",
        "event_outbox",
        "event_inbox",
        "event_dead_letters",
        "break_glass_sessions",
        "admin_audit_logs",
    ):
        op.drop_table(table, schema="iam")
