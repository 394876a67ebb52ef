"""media: an index on order_photos (org_id, status, reviewed_at) over reviewed photos

The metrics view (GetMetrics, issue 13) counts the photos an org approved or sent back for a retake in a
period; without it that count reads every approved photo the org ever had.

Revision ID: 0004_reviewed_index
Revises: 0003_backend_ref
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_reviewed_index"
down_revision = "0003_backend_ref"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_order_photos_org_reviewed",
        "order_photos",
        ["org_id", "status", "reviewed_at"],
        schema="media",
        postgresql_where=sa.text("reviewed_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_order_photos_org_reviewed", table_name="order_photos", schema="media")
