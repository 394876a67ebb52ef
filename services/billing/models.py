"""Tables of the billing schema. Every tenant table has org_id and a forced RLS policy (migration 0001).

An invoice is a DRAFT until it is issued; issuing gives it the org's next number (from
`invoice_number_counters`, one row per org, taken in the issuing transaction) and freezes the totals
snapshot of seed 002 ("Invoice tax snapshots and reporting"). The CHECK constraints hold what must never
be stored whatever the code does: negative cents, a status outside the six, a numbered DRAFT, an
issued invoice without a number, totals that do not add up."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    Numeric,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import CHAR, UUID

from libs.common.db import service_metadata

SCHEMA = "billing"
metadata, event_tables = service_metadata(SCHEMA)

INVOICE_STATUSES = ("DRAFT", "SENT", "PARTIAL", "PAID", "OVERDUE", "VOID")
ISSUED_STATUSES = ("SENT", "PARTIAL", "PAID", "OVERDUE")
SNAPSHOT_COLUMNS = ("subtotal_cents", "taxable_subtotal_cents", "tax_cents", "total_cents")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


invoices = Table(
    "invoices",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    # "INV-000001", per org; NULL until issued (NULLs are distinct, so drafts do not collide).
    Column("number", String(20), nullable=True),
    Column("status", String(10), nullable=False, server_default="DRAFT"),
    Column("currency", CHAR(3), nullable=False),
    Column("client_name", String(200), nullable=False),
    Column("client_email", String(320), nullable=False),
    Column("booking_id", UUID(as_uuid=True), nullable=True),
    Column("issued_at", DateTime(timezone=True), nullable=True),
    Column("due_date", Date, nullable=True),
    # The snapshot: kept current on a DRAFT (each item edit), frozen from issuance on.
    Column("subtotal_cents", BigInteger, nullable=False, server_default="0"),
    Column("taxable_subtotal_cents", BigInteger, nullable=False, server_default="0"),
    Column("tax_cents", BigInteger, nullable=False, server_default="0"),
    Column("tax_rate_basis", Numeric(9, 4), nullable=False, server_default="0"),
    Column("total_cents", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("org_id", "number"),
    # The target of invoice_items' (org_id, invoice_id) key: an item can only belong to its own org's invoice.
    UniqueConstraint("org_id", "id"),
    CheckConstraint(_in("status", INVOICE_STATUSES), name="status"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    CheckConstraint("number IS NULL OR number ~ '^INV-[0-9]{6,}$'", name="number_format"),
    CheckConstraint(
        "(status = 'DRAFT' AND number IS NULL AND issued_at IS NULL)"
        f" OR ({_in('status', ISSUED_STATUSES)} AND number IS NOT NULL AND issued_at IS NOT NULL)"
        " OR status = 'VOID'",
        name="number_when_issued",
    ),
    CheckConstraint(" AND ".join(f"{c} >= 0" for c in SNAPSHOT_COLUMNS), name="cents_not_negative"),
    CheckConstraint("taxable_subtotal_cents <= subtotal_cents", name="taxable_within_subtotal"),
    CheckConstraint("total_cents = subtotal_cents + tax_cents", name="total_adds_up"),
    CheckConstraint("tax_rate_basis >= 0", name="tax_rate_basis"),
)

invoice_items = Table(
    "invoice_items",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("invoice_id", UUID(as_uuid=True), nullable=False),
    Column("position", Integer, nullable=False),
    Column("description", String(500), nullable=False),
    Column("quantity", Numeric(12, 2), nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("tax_rate", Numeric(7, 4), nullable=False),  # percent: 13.0000 is 13 %
    Column("amount_cents", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["org_id", "invoice_id"],
        ["billing.invoices.org_id", "billing.invoices.id"],
        name="fk_invoice_items_invoice",
        ondelete="CASCADE",
    ),
    UniqueConstraint("invoice_id", "position"),
    CheckConstraint("position >= 0", name="position"),
    CheckConstraint("quantity > 0", name="quantity"),
    CheckConstraint("unit_price_cents >= 0 AND amount_cents >= 0", name="cents_not_negative"),
    CheckConstraint("tax_rate >= 0 AND tax_rate <= 100", name="tax_rate"),
)

# One row per org: the last number issued. Taken with INSERT ... ON CONFLICT DO UPDATE in the issuing
# transaction, so the row lock serializes issuers and a rollback gives the number back (invoices.py).
invoice_number_counters = Table(
    "invoice_number_counters",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("last_number", Integer, nullable=False),
    CheckConstraint("last_number > 0", name="last_number"),
)

TENANT_TABLES = ("invoices", "invoice_items", "invoice_number_counters")
