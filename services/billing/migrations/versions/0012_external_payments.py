"""billing: payments recorded in an outside ledger, invoices by last change (issue 17)

integrations' qbo-sync records the payments an accountant enters in QuickBooks Online as
`provider = 'quickbooks'` rows (keyed by provider_ref, like Stripe's), and reads the org's invoices
changed since its cursor, oldest change first: an index on (org_id, updated_at, id) serves that read.

Revision ID: 0012_external_payments
Revises: 0011_invoices_newest_first
"""

from alembic import op

revision = "0012_external_payments"
down_revision = "0011_invoices_newest_first"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(
        op.f("ck_invoice_payments_provider"), "invoice_payments", schema="billing", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_invoice_payments_provider"),
        "invoice_payments",
        "provider IN ('manual', 'stripe', 'quickbooks')",
        schema="billing",
    )
    op.create_index("ix_invoices_org_updated", "invoices", ["org_id", "updated_at", "id"], schema="billing")


def downgrade() -> None:
    op.drop_index("ix_invoices_org_updated", table_name="invoices", schema="billing")
    op.drop_constraint(
        op.f("ck_invoice_payments_provider"), "invoice_payments", schema="billing", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_invoice_payments_provider"),
        "invoice_payments",
        "provider IN ('manual', 'stripe')",
        schema="billing",
    )
