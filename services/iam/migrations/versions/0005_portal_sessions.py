"""iam: portal links are exchanged once for a revocable portal session (issue 9, hole 8)

A magic link (client) or worker link is recorded when it is issued, so it can be used once and
revoked; following it opens a portal session whose opaque token is the portal's credential. Both
tokens are stored as SHA-256 hashes only. Tenant tables: RLS enabled, forced, scoped to the org.

Revision ID: 0005_portal_sessions
Revises: 0004_owner_role_policies
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import enable_tenant_rls

revision = "0005_portal_sessions"
down_revision = "0004_owner_role_policies"
branch_labels = None
depends_on = None

# Frozen here: what this revision created.
TABLES = ("portal_links", "portal_sessions")


def upgrade() -> None:
    op.create_table(
        "portal_links",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=100), nullable=True),
        sa.CheckConstraint("kind IN ('client', 'worker')", name=op.f("ck_portal_links_kind_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_links_token_hash")),
        schema="iam",
    )
    op.create_index(
        "ix_portal_links_org_subject", "portal_links", ["org_id", "kind", "subject"], schema="iam"
    )
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("link_id", sa.UUID(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=100), nullable=True),
        sa.CheckConstraint("kind IN ('client', 'worker')", name=op.f("ck_portal_sessions_kind_known")),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["iam.portal_links.id"],
            name=op.f("fk_portal_sessions_link_id_portal_links"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_sessions_token_hash")),
        schema="iam",
    )
    op.create_index(
        "ix_portal_sessions_org_subject", "portal_sessions", ["org_id", "kind", "subject"], schema="iam"
    )
    enable_tenant_rls("iam", TABLES)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table, schema="iam")
