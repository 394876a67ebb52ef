"""billing: usage as the domain events told it (workers, bookings, photo bytes), for the usage report

Revision ID: 0008_usage_events
Revises: 0007_subscriptions
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import enable_tenant_rls

revision = "0008_usage_events"
down_revision = "0007_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("subject_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("source_event", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "metric IN ('workers', 'bookings', 'storage_bytes')", name=op.f("ck_usage_events_metric")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint("org_id", "source_event", name=op.f("uq_usage_events_org_id_source_event")),
        schema="billing",
    )
    op.create_index(
        "ix_usage_events_org_metric_time",
        "usage_events",
        ["org_id", "metric", "occurred_at"],
        schema="billing",
    )
    enable_tenant_rls("billing", ("usage_events",))


def downgrade() -> None:
    op.drop_table("usage_events", schema="billing")
