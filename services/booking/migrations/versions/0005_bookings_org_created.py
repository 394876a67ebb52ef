"""booking: an index on bookings (org_id, created_at), for the bookings an org created in a month

Billing's usage report asks booking (CountUsage) how many bookings an org created in a calendar month;
without it that count reads every booking of the org.

Revision ID: 0005_bookings_org_created
Revises: 0004_idempotency_fingerprint
"""

from alembic import op

revision = "0005_bookings_org_created"
down_revision = "0004_idempotency_fingerprint"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_bookings_org_created", "bookings", ["org_id", "created_at"], schema="booking")


def downgrade() -> None:
    op.drop_index("ix_bookings_org_created", table_name="bookings", schema="booking")
