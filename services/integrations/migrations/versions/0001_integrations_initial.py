"""integrations: connections (sealed tokens), OAuth states, sync states, Google Calendar and QuickBooks id
mappings; forced RLS; the operators' cross-org sync-state listing

Revision ID: 0001_integrations_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from libs.common.migration_helpers import (
    add_event_trace_context,
    create_event_tables,
    drop_event_tables,
    enable_tenant_rls,
    owner_only_policy,
)

revision = "0001_integrations_initial"
down_revision = None
branch_labels = None
depends_on = None

S = "integrations"
TENANT_TABLES = (
    "connections",
    "oauth_states",
    "sync_states",
    "gcal_events",
    "gcal_busy",
    "qbo_customers",
    "qbo_invoices",
    "qbo_payments",
)
PROVIDER_CHECK = "provider IN ('google_calendar', 'quickbooks')"


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    create_event_tables(S)
    add_event_trace_context(S)
    op.create_table(
        "connections",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="disconnected", nullable=False),
        sa.Column("access_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("refresh_token_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scopes", sa.Text(), server_default="", nullable=False),
        sa.Column("account_id", sa.Text(), server_default="", nullable=False),
        sa.Column("account_name", sa.Text(), server_default="", nullable=False),
        sa.Column("busy_team_id", sa.UUID(), nullable=True),
        sa.Column("connected_by", sa.UUID(), nullable=True),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(PROVIDER_CHECK, name=op.f("ck_connections_provider")),
        sa.CheckConstraint(
            "status IN ('connected', 'disconnected', 'revoked')", name=op.f("ck_connections_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.UniqueConstraint("org_id", "provider", name=op.f("uq_connections_org_id_provider")),
        schema=S,
    )
    op.create_table(
        "oauth_states",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("state_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("code_verifier_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(PROVIDER_CHECK, name=op.f("ck_oauth_states_provider")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_states")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_oauth_states_state_hash")),
        schema=S,
    )
    op.create_table(
        "sync_states",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Text(), server_default="", nullable=False),
        sa.Column("cursor", sa.Text(), server_default="", nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(PROVIDER_CHECK, name=op.f("ck_sync_states_provider")),
        sa.PrimaryKeyConstraint("org_id", "provider", name=op.f("pk_sync_states")),
        schema=S,
    )
    op.create_table(
        "gcal_events",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("calendar_id", sa.Text(), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("pushed_hash", sa.Text(), server_default="", nullable=False),
        sa.Column("etag", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "calendar_id", "booking_id", name=op.f("pk_gcal_events")),
        schema=S,
    )
    op.create_table(
        "gcal_busy",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("calendar_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "calendar_id", "event_id", name=op.f("pk_gcal_busy")),
        schema=S,
    )
    op.create_table(
        "qbo_customers",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("realm_id", sa.Text(), nullable=False),
        sa.Column("email_key", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "realm_id", "email_key", name=op.f("pk_qbo_customers")),
        schema=S,
    )
    op.create_table(
        "qbo_invoices",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("realm_id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.UUID(), nullable=False),
        sa.Column("qbo_invoice_id", sa.Text(), nullable=False),
        sa.Column("sync_token", sa.Text(), server_default="", nullable=False),
        sa.Column("pushed_hash", sa.Text(), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "realm_id", "invoice_id", name=op.f("pk_qbo_invoices")),
        sa.UniqueConstraint(
            "org_id",
            "realm_id",
            "qbo_invoice_id",
            name=op.f("uq_qbo_invoices_org_id_realm_id_qbo_invoice_id"),
        ),
        schema=S,
    )
    op.create_table(
        "qbo_payments",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("realm_id", sa.Text(), nullable=False),
        sa.Column("qbo_payment_id", sa.Text(), nullable=False),
        sa.Column("invoice_id", sa.UUID(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("payment_id", sa.UUID(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('applied', 'skipped', 'pushed')", name=op.f("ck_qbo_payments_outcome")
        ),
        sa.PrimaryKeyConstraint(
            "org_id", "realm_id", "qbo_payment_id", "invoice_id", name=op.f("pk_qbo_payments")
        ),
        sa.UniqueConstraint(
            "org_id", "realm_id", "payment_id", name=op.f("uq_qbo_payments_org_id_realm_id_payment_id")
        ),
        schema=S,
    )
    enable_tenant_rls(S, TENANT_TABLES)
    # Operators' /v1/admin/jobs/status lists every org's sync state (ListSyncStates, service callers
    # only): this one narrow read runs as the owner; nothing secret is in sync_states.
    owner_only_policy(S, "sync_states", "sync_states_owner_listing", "SELECT")
    op.execute(
        """
        CREATE FUNCTION integrations.all_sync_states(p_provider text)
        RETURNS TABLE (org_id uuid, provider varchar, cursor text, last_sync_at timestamptz,
                       last_success_at timestamptz, last_error text, last_error_at timestamptz,
                       counts jsonb)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, integrations
        AS $$
          SELECT s.org_id, s.provider, s.cursor, s.last_sync_at, s.last_success_at, s.last_error,
                 s.last_error_at, s.counts
            FROM integrations.sync_states AS s
           WHERE p_provider = '' OR s.provider = p_provider
           ORDER BY s.org_id, s.provider
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION integrations.all_sync_states(text) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS integrations.all_sync_states(text)")
    for table in reversed(TENANT_TABLES):
        op.drop_table(table, schema=S)
    drop_event_tables(S)
