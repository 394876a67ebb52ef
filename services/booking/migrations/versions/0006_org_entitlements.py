"""booking: the org's entitlements as billing's subscription events told them (paused or not)

Revision ID: 0006_org_entitlements
Revises: 0005_bookings_org_created
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import enable_tenant_rls

revision = "0006_org_entitlements"
down_revision = "0005_bookings_org_created"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_entitlements",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_entitlements")),
        schema="booking",
    )
    enable_tenant_rls("booking", ("org_entitlements",))


def downgrade() -> None:
    op.drop_table("org_entitlements", schema="booking")
