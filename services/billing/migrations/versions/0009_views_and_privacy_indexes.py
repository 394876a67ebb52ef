"""billing: indexes for the views and the data playbook (issue 13)

- stripe_events by (org_id, invoice_id) and (org_id, booking_id), newest first: an invoice's or a
  booking's timeline reads at most 50 of them; without these it filtered every event of the org;
- invoices by (org_id, lower(client_email)): a person's invoices by email (export, erasure);
- invoice_refunds by (org_id, created_at): the refunds of a period (GetMetrics).

Revision ID: 0009_views_and_privacy_indexes
Revises: 0008_usage_events
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_views_and_privacy_indexes"
down_revision = "0008_usage_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_stripe_events_org_invoice",
        "stripe_events",
        ["org_id", "invoice_id", "created_at"],
        schema="billing",
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )
    op.create_index(
        "ix_stripe_events_org_booking",
        "stripe_events",
        ["org_id", "booking_id", "created_at"],
        schema="billing",
        postgresql_where=sa.text("booking_id IS NOT NULL"),
    )
    op.create_index(
        "ix_invoices_org_client_email",
        "invoices",
        ["org_id", sa.literal_column("lower(client_email)")],
        schema="billing",
    )
    op.create_index(
        "ix_invoice_refunds_org_created", "invoice_refunds", ["org_id", "created_at"], schema="billing"
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_refunds_org_created", table_name="invoice_refunds", schema="billing")
    op.drop_index("ix_invoices_org_client_email", table_name="invoices", schema="billing")
    op.drop_index("ix_stripe_events_org_booking", table_name="stripe_events", schema="billing")
    op.drop_index("ix_stripe_events_org_invoice", table_name="stripe_events", schema="billing")
