"""booking: data deletion requests, leads marked pending deletion and anonymised, person lookups indexed

Seed 002's data export/delete playbook (issue 13). A person is found by a lead's email and by the
bookings of their leads: both were scans of the org's rows without the two indexes.

Revision ID: 0007_data_deletion
Revises: 0006_org_entitlements
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from libs.common.migration_helpers import enable_tenant_rls

revision = "0007_data_deletion"
down_revision = "0006_org_entitlements"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "leads",
        sa.Column("deletion_requested_at", sa.DateTime(timezone=True), nullable=True),
        schema="booking",
    )
    op.add_column(
        "leads", sa.Column("anonymized_at", sa.DateTime(timezone=True), nullable=True), schema="booking"
    )
    op.create_index(
        "ix_leads_org_email",
        "leads",
        ["org_id", sa.literal_column("lower(email)")],
        unique=False,
        schema="booking",
    )
    op.create_index("ix_bookings_lead", "bookings", ["lead_id"], unique=False, schema="booking")
    op.create_table(
        "data_deletion_requests",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("person", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("matched_leads", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'completed')", name=op.f("ck_data_deletion_requests_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_deletion_requests")),
        schema="booking",
    )
    # At most one open request per person and org: a repeated or concurrent request answers it
    # (INSERT ... ON CONFLICT on this index).
    op.create_index(
        "uq_data_deletion_requests_open",
        "data_deletion_requests",
        ["org_id", "subject_hash"],
        unique=True,
        schema="booking",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_data_deletion_requests_org_status_created",
        "data_deletion_requests",
        ["org_id", "status", "created_at"],
        unique=False,
        schema="booking",
    )
    enable_tenant_rls("booking", ("data_deletion_requests",))


def downgrade() -> None:
    op.drop_table("data_deletion_requests", schema="booking")
    op.drop_index("ix_bookings_lead", table_name="bookings", schema="booking")
    op.drop_index("ix_leads_org_email", table_name="leads", schema="booking")
    op.drop_column("leads", "anonymized_at", schema="booking")
    op.drop_column("leads", "deletion_requested_at", schema="booking")
