"""billing: expenses and GST instalments, the accounting-export record, and the indexes reports read by

Revision ID: 0006_finance_books
Revises: 0005_claim_in_event_order
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from libs.common.migration_helpers import enable_tenant_rls

revision = "0006_finance_books"
down_revision = "0005_claim_in_event_order"
branch_labels = None
depends_on = None

TENANT_TABLES = ("expenses", "tax_instalments", "accounting_exports")


def upgrade() -> None:
    op.create_table(
        "expenses",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("spent_on", sa.Date(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("vendor", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=500), server_default="", nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("gst_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("currency", postgresql.CHAR(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_expenses_amount_positive")),
        sa.CheckConstraint(
            "gst_cents >= 0 AND gst_cents <= amount_cents", name=op.f("ck_expenses_gst_within_amount")
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_expenses_currency")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expenses")),
        schema="billing",
    )
    op.create_index("ix_expenses_org_spent", "expenses", ["org_id", "spent_on", "id"], schema="billing")
    op.create_table(
        "tax_instalments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", postgresql.CHAR(length=3), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=True),
        sa.Column("reference", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_tax_instalments_amount_positive")),
        sa.CheckConstraint("period_start <= period_end", name=op.f("ck_tax_instalments_period_order")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_tax_instalments_currency")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_instalments")),
        schema="billing",
    )
    op.create_index(
        "ix_tax_instalments_org_paid", "tax_instalments", ["org_id", "paid_on", "id"], schema="billing"
    )
    op.create_index(
        "ix_tax_instalments_org_period", "tax_instalments", ["org_id", "period_start", "id"], schema="billing"
    )
    op.create_table(
        "accounting_exports",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("period", postgresql.CHAR(length=7), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("period ~ '^[0-9]{4}-[0-9]{2}$'", name=op.f("ck_accounting_exports_period")),
        sa.PrimaryKeyConstraint("org_id", "period", name=op.f("pk_accounting_exports")),
        schema="billing",
    )
    op.create_index(
        "ix_invoices_org_issued",
        "invoices",
        ["org_id", "issued_at", "id"],
        schema="billing",
        postgresql_where=sa.text("issued_at IS NOT NULL"),
    )
    op.create_index(
        "ix_invoice_payments_org_received", "invoice_payments", ["org_id", "received_at"], schema="billing"
    )
    enable_tenant_rls("billing", TENANT_TABLES)


def downgrade() -> None:
    op.drop_index("ix_invoice_payments_org_received", "invoice_payments", schema="billing")
    op.drop_index("ix_invoices_org_issued", "invoices", schema="billing")
    for table in reversed(TENANT_TABLES):
        op.drop_table(table, schema="billing")
