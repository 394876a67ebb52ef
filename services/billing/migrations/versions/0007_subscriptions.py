"""billing: the platform's plans (reference rows) and each org's subscription (plan, status, pause)

Revision ID: 0007_subscriptions
Revises: 0006_finance_books
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import enable_tenant_rls

revision = "0007_subscriptions"
down_revision = "0006_finance_books"
branch_labels = None
depends_on = None

GIB = 1024**3
# code, name, workers, bookings a month, storage bytes, monthly price (cents, CAD)
PLANS = (
    ("free", "Free", 2, 30, 1 * GIB, 0),
    ("starter", "Starter", 10, 300, 25 * GIB, 4900),
    ("pro", "Pro", 50, 2000, 250 * GIB, 14900),
)


def upgrade() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("max_workers", sa.Integer(), nullable=False),
        sa.Column("max_bookings_per_month", sa.Integer(), nullable=False),
        sa.Column("max_storage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("monthly_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.CheckConstraint(
            "max_workers >= 0 AND max_bookings_per_month >= 0 AND max_storage_bytes >= 0",
            name=op.f("ck_plans_limits"),
        ),
        sa.CheckConstraint("monthly_price_cents >= 0", name=op.f("ck_plans_price")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_plans")),
        schema="billing",
    )
    op.bulk_insert(
        plans,
        [
            {
                "code": code,
                "name": name,
                "max_workers": workers,
                "max_bookings_per_month": bookings,
                "max_storage_bytes": storage,
                "monthly_price_cents": price,
                "currency": "CAD",
            }
            for code, name, workers, bookings, storage, price in PLANS
        ],
    )
    op.create_table(
        "org_subscriptions",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("plan_code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("pause_reason_code", sa.String(length=64), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resume_reason_code", sa.String(length=64), nullable=True),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('active', 'paused')", name=op.f("ck_org_subscriptions_status")),
        sa.ForeignKeyConstraint(
            ["plan_code"], ["billing.plans.code"], name="fk_org_subscriptions_plan_code_plans"
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_subscriptions")),
        schema="billing",
    )
    enable_tenant_rls("billing", ("org_subscriptions",))


def downgrade() -> None:
    op.drop_table("org_subscriptions", schema="billing")
    op.drop_table("plans", schema="billing")
