"""billing: the invoices queue reads owed invoices in due-date order from one partial index

Without it a queue page under RLS sorted every owed invoice of the org to return 50 (make bench: 27 ms
at 15,000 owed invoices); the (org_id, status, due_date) index cannot give three statuses in one order.

Revision ID: 0004_owed_invoices_index
Revises: 0003_org_currency
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_owed_invoices_index"
down_revision = "0003_org_currency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_invoices_owed_by_due",
        "invoices",
        ["org_id", "due_date", "id"],
        schema="billing",
        postgresql_where=sa.text("status IN ('SENT', 'PARTIAL', 'OVERDUE')"),
    )


def downgrade() -> None:
    op.drop_index("ix_invoices_owed_by_due", table_name="invoices", schema="billing")
