"""billing: an org's own invoicing currency (org_settings.currency; NULL: INVOICE_DEFAULT_CURRENCY)

Revision ID: 0003_org_currency
Revises: 0002_billing_payments
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_org_currency"
down_revision = "0002_billing_payments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("org_settings", sa.Column("currency", sa.CHAR(length=3), nullable=True), schema="billing")
    op.create_check_constraint(
        "ck_org_settings_currency",
        "org_settings",
        "currency IS NULL OR currency ~ '^[A-Z]{3}$'",
        schema="billing",
    )


def downgrade() -> None:
    op.drop_constraint("ck_org_settings_currency", "org_settings", schema="billing")
    op.drop_column("org_settings", "currency", schema="billing")
