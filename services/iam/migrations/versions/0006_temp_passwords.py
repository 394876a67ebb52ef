"""iam: temporary passwords expire and are handed to notify once, never kept in the outbox (issue 9)

- users.password_expires_at: when a temporary password (must_change_password) stops working.
  Temporary passwords set before this revision get 24 hours from now (the default TTL).
- temp_password_handoffs: a temporary password waiting for notify to email it (EMAIL_TEMP_PASSWORDS),
  encrypted with a key the database does not hold; deleted when claimed, replaced or expired.
- signup_requests: a sign-up waiting for its email to be confirmed; org_id is the org it will create.
- iam.prune_expired_handoffs(): the one door that deletes expired rows of both across orgs (iam's
  sweeper calls it), with owner-only policies to run it under FORCE RLS.

Revision ID: 0006_temp_passwords
Revises: 0005_portal_sessions
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import enable_tenant_rls, owner_only_policy

revision = "0006_temp_passwords"
down_revision = "0005_portal_sessions"
branch_labels = None
depends_on = None

# Frozen here: what this revision created.
TABLES = ("temp_password_handoffs", "signup_requests")


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("password_expires_at", sa.DateTime(timezone=True), nullable=True), schema="iam"
    )
    op.execute(
        "UPDATE iam.users SET password_expires_at = now() + interval '1 day' WHERE must_change_password"
    )
    op.create_table(
        "temp_password_handoffs",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("password_enc", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["iam.users.id"],
            name=op.f("fk_temp_password_handoffs_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_temp_password_handoffs")),
        schema="iam",
    )
    op.create_index(
        "ix_temp_password_handoffs_expires_at", "temp_password_handoffs", ["expires_at"], schema="iam"
    )
    op.create_table(
        "signup_requests",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("org_name", sa.String(length=200), nullable=False),
        sa.Column("full_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_requests")),
        schema="iam",
    )
    op.create_index("ix_signup_requests_expires_at", "signup_requests", ["expires_at"], schema="iam")
    enable_tenant_rls("iam", TABLES)
    # The sweeper deletes expired rows of every org: a DELETE with a WHERE reads the rows too, so the
    # owner (whom FORCE RLS binds) gets both, and nobody else does.
    for table in TABLES:
        owner_only_policy("iam", table, f"{table}_owner_prune_read", "SELECT")
        owner_only_policy("iam", table, f"{table}_owner_prune", "DELETE")
    op.execute(
        """
        CREATE FUNCTION iam.prune_expired_handoffs()
        RETURNS TABLE (temp_passwords integer, signups integer)
        LANGUAGE sql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, iam
        AS $$
          WITH passwords AS (
            DELETE FROM iam.temp_password_handoffs WHERE expires_at <= now() RETURNING 1
          ), signups AS (
            DELETE FROM iam.signup_requests WHERE expires_at <= now() RETURNING 1
          )
          SELECT (SELECT count(*) FROM passwords)::integer, (SELECT count(*) FROM signups)::integer
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION iam.prune_expired_handoffs() FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS iam.prune_expired_handoffs()")
    for table in reversed(TABLES):
        op.drop_table(table, schema="iam")
    op.drop_column("users", "password_expires_at", schema="iam")
