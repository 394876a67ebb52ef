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
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import CHAR, JSONB, UUID

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
    # When the invoice was last emailed to the client (send); issuing does not email by itself.
    Column("sent_at", DateTime(timezone=True), nullable=True),
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
    # One invoice per booking: the booking-completed consumer and the backfill both insert with
    # ON CONFLICT DO NOTHING on it, so a redelivered event or a second backfill adds nothing.
    Index(
        "ux_invoices_booking",
        "org_id",
        "booking_id",
        unique=True,
        postgresql_where=text("booking_id IS NOT NULL"),
    ),
    Index("ix_invoices_org_status_due", "org_id", "status", "due_date"),
    # Reports and the accounting export read issued invoices by issue time, in keyset pages (0006).
    Index(
        "ix_invoices_org_issued",
        "org_id",
        "issued_at",
        "id",
        postgresql_where=text("issued_at IS NOT NULL"),
    ),
    # The invoices queue: owed invoices, longest overdue first (migration 0004).
    Index(
        "ix_invoices_owed_by_due",
        "org_id",
        "due_date",
        "id",
        postgresql_where=text("status IN ('SENT', 'PARTIAL', 'OVERDUE')"),
    ),
    # A person's invoices by their email (data export and erasure, 0009): emails compare lower case.
    Index("ix_invoices_org_client_email", "org_id", text("lower(client_email)")),
    # The invoices list, newest first, a page at a time (0011).
    Index("ix_invoices_org_created", "org_id", text("created_at DESC"), "id"),
    # Invoices changed since a cursor, oldest change first (integrations' qbo-sync, 0012).
    Index("ix_invoices_org_updated", "org_id", "updated_at", "id"),
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


def _invoice_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["org_id", "invoice_id"],
        ["billing.invoices.org_id", "billing.invoices.id"],
        name=f"fk_{table}_invoice",
    )


# quickbooks: a payment an accountant entered in QuickBooks Online, pulled back by qbo-sync (0012).
PAYMENT_PROVIDERS = ("manual", "stripe", "quickbooks")
PAYMENT_METHODS = ("cash", "etransfer", "cheque", "card", "other")
PAYMENT_STATUSES = ("pending", "succeeded", "failed")
REFUND_STATUSES = ("pending", "succeeded", "failed", "canceled")

# Money received against an invoice: recorded by finance (manual) or settled by Stripe (one row per
# PaymentIntent, keyed by its id, so a webhook delivered twice finds the row it already wrote).
invoice_payments = Table(
    "invoice_payments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("invoice_id", UUID(as_uuid=True), nullable=False),
    Column("provider", String(10), nullable=False),
    Column("method", String(10), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("status", String(10), nullable=False),
    # The PaymentIntent id for Stripe, "qbo:<realm>:<payment>:<invoice>" for QuickBooks; NULL for manual.
    Column("provider_ref", String(255), nullable=True),
    # Finance's note for a manual payment (cheque number, e-transfer reference); never card data.
    Column("reference", String(200), nullable=False, server_default=""),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # "user:<id>" for finance, "stripe" for a webhook, "service:integrations" for an outside ledger.
    Column("recorded_by", String(80), nullable=False, server_default=""),
    _invoice_fk("invoice_payments"),
    UniqueConstraint("org_id", "provider_ref"),
    CheckConstraint(_in("provider", PAYMENT_PROVIDERS), name="provider"),
    CheckConstraint(_in("method", PAYMENT_METHODS), name="method"),
    CheckConstraint(_in("status", PAYMENT_STATUSES), name="status"),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    CheckConstraint("provider = 'manual' OR provider_ref IS NOT NULL", name="stripe_has_ref"),
    Index("ix_invoice_payments_invoice", "org_id", "invoice_id"),
    # The tax export's payments of a period (0006).
    Index("ix_invoice_payments_org_received", "org_id", "received_at"),
)

# Refunds go through Stripe (full or partial) and are keyed by Stripe's refund id. A refund's event can
# arrive before its payment's: it names the PaymentIntent, not our payment row, so it is stored either way.
invoice_refunds = Table(
    "invoice_refunds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("invoice_id", UUID(as_uuid=True), nullable=False),
    Column("stripe_refund_id", String(255), nullable=False),
    Column("payment_intent_id", String(255), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("status", String(10), nullable=False),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("requested_by", String(80), nullable=False, server_default=""),
    _invoice_fk("invoice_refunds"),
    UniqueConstraint("org_id", "stripe_refund_id"),
    CheckConstraint(_in("status", REFUND_STATUSES), name="status"),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    Index("ix_invoice_refunds_invoice", "org_id", "invoice_id"),
    # The refunds of a period (GetMetrics, 0009).
    Index("ix_invoice_refunds_org_created", "org_id", "created_at"),
)

CHECKOUT_PURPOSES = ("invoice", "deposit")

# Hosted Checkout sessions billing opened: a second "pay" click reuses the open one (no second
# session for the same amount), and a deposit's session names the booking it pays for.
checkout_sessions = Table(
    "checkout_sessions",
    metadata,
    Column("id", String(255), primary_key=True),  # Stripe's cs_... id
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("purpose", String(10), nullable=False),
    Column("invoice_id", UUID(as_uuid=True), nullable=True),
    Column("booking_id", UUID(as_uuid=True), nullable=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("status", String(10), nullable=False, server_default="open"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(_in("purpose", CHECKOUT_PURPOSES), name="purpose"),
    CheckConstraint(_in("status", ("open", "complete", "expired")), name="status"),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint(
        "(purpose = 'invoice' AND invoice_id IS NOT NULL) OR (purpose = 'deposit' AND booking_id IS NOT NULL)",
        name="purpose_target",
    ),
    Index("ix_checkout_sessions_invoice", "org_id", "invoice_id"),
    Index("ix_checkout_sessions_booking", "org_id", "booking_id"),
)

# A Stripe customer per client (by email) per org, created once and reused.
stripe_customers = Table(
    "stripe_customers",
    metadata,
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("email", String(320), nullable=False),  # lower case
    Column("customer_id", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "email"),
)

STRIPE_EVENT_STATUSES = ("pending", "processed", "failed", "ignored")

# Every verified webhook, keyed by Stripe's event id, stored before anything else happens. `facts` holds
# the few fields processing needs (object ids, amounts, currency, status, our metadata), never the raw
# payload: no card details, names or addresses are kept (seed 002).
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("type", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),  # Stripe's event time
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("invoice_id", UUID(as_uuid=True), nullable=True),
    Column("booking_id", UUID(as_uuid=True), nullable=True),
    Column("facts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("processed_status", String(10), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(1000), nullable=True),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("processed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(_in("processed_status", STRIPE_EVENT_STATUSES), name="processed_status"),
    Index("ix_stripe_events_org_received", "org_id", "received_at"),
    # An invoice's or a booking's events, newest first (the timelines, 0009).
    Index(
        "ix_stripe_events_org_invoice",
        "org_id",
        "invoice_id",
        "created_at",
        postgresql_where=text("invoice_id IS NOT NULL"),
    ),
    Index(
        "ix_stripe_events_org_booking",
        "org_id",
        "booking_id",
        "created_at",
        postgresql_where=text("booking_id IS NOT NULL"),
    ),
    Index(
        "ix_stripe_events_due",
        "next_attempt_at",
        postgresql_where=text("processed_status IN ('pending', 'failed')"),
    ),
)

# Public links to an invoice (emailed by send): only the SHA-256 of the token is kept, so a database
# read does not give anyone a working link. billing.invoice_for_token maps a hash to its org.
invoice_public_tokens = Table(
    "invoice_public_tokens",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("invoice_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _invoice_fk("invoice_public_tokens"),
    Index("ix_invoice_public_tokens_invoice", "org_id", "invoice_id"),
)

# The org as billing needs it: its name and time zone for invoices and PDFs (from cws.iam.org.created),
# and the defaults a draft from a booking takes (tax rate, payment terms).
org_settings = Table(
    "org_settings",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("tax_rate", Numeric(7, 4), nullable=True),  # NULL: INVOICE_DEFAULT_TAX_RATE
    Column("payment_terms_days", Integer, nullable=True),  # NULL: INVOICE_PAYMENT_TERMS_DAYS
    Column("currency", CHAR(3), nullable=True),  # NULL: INVOICE_DEFAULT_CURRENCY
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("tax_rate IS NULL OR (tax_rate >= 0 AND tax_rate <= 100)", name="tax_rate"),
    CheckConstraint(
        "payment_terms_days IS NULL OR (payment_terms_days >= 0 AND payment_terms_days <= 365)",
        name="payment_terms_days",
    ),
    CheckConstraint("currency IS NULL OR currency ~ '^[A-Z]{3}$'", name="currency"),
)

# --- finance books (issue 11): what a GST return needs beyond invoices --------------------------------

# An expense paid by the business: `amount_cents` is what was paid, GST included; `gst_cents` is the GST
# within it, claimable as an input tax credit. Reports take expenses by `spent_on` (a calendar date).
expenses = Table(
    "expenses",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("spent_on", Date, nullable=False),
    Column("category", String(64), nullable=False),
    Column("vendor", String(200), nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("amount_cents", BigInteger, nullable=False),
    Column("gst_cents", BigInteger, nullable=False, server_default="0"),
    Column("currency", CHAR(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint("gst_cents >= 0 AND gst_cents <= amount_cents", name="gst_within_amount"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    Index("ix_expenses_org_spent", "org_id", "spent_on", "id"),
)

# A GST instalment toward a tax period; `paid_on` NULL while it is only planned. A report counts the
# instalments paid within its range.
tax_instalments = Table(
    "tax_instalments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("paid_on", Date, nullable=True),
    Column("reference", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
    CheckConstraint("period_start <= period_end", name="period_order"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    Index("ix_tax_instalments_org_paid", "org_id", "paid_on", "id"),
    Index("ix_tax_instalments_org_period", "org_id", "period_start", "id"),
)

# One row per org and month the `accounting-export` job has handed over (to notify, as an export
# webhook or a stored export for review), so a daily run exports each month once.
accounting_exports = Table(
    "accounting_exports",
    metadata,
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("period", CHAR(7), nullable=False),  # "2026-11", the month in the org's time zone
    Column("rows", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("delivery", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("org_id", "period"),
    CheckConstraint("period ~ '^[0-9]{4}-[0-9]{2}$'", name="period"),
)

# --- the suite's own subscription (issue 11) ----------------------------------------------------

SUBSCRIPTION_STATUSES = ("active", "paused")
USAGE_METRICS = ("workers", "bookings", "storage_bytes")

# The plans the platform sells: reference data, the same for every org (no org_id, no RLS); rows are
# written by migrations.
plans = Table(
    "plans",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("max_workers", Integer, nullable=False),
    Column("max_bookings_per_month", Integer, nullable=False),
    Column("max_storage_bytes", BigInteger, nullable=False),
    Column("monthly_price_cents", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    CheckConstraint(
        "max_workers >= 0 AND max_bookings_per_month >= 0 AND max_storage_bytes >= 0", name="limits"
    ),
    CheckConstraint("monthly_price_cents >= 0", name="price"),
)

# Each org's plan and status. An org without a row is on SUBSCRIPTION_DEFAULT_PLAN and active; the
# first pause or plan change writes its row. Pausing keeps the plan: only the status gates entitlements.
org_subscriptions = Table(
    "org_subscriptions",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("plan_code", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("pause_reason_code", String(64), nullable=True),
    Column("paused_at", DateTime(timezone=True), nullable=True),
    Column("resume_reason_code", String(64), nullable=True),
    Column("resumed_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(["plan_code"], ["billing.plans.code"], name="fk_org_subscriptions_plan_code_plans"),
    CheckConstraint(_in("status", SUBSCRIPTION_STATUSES), name="status"),
)

# Usage as the domain events told it: one row per counted event (+1 worker added, -1 worker left, +1
# booking created, +/- photo bytes). `source_event` is the event's id, unique per org, so a redelivered
# event is counted once; a lost one is missing here and shows as drift against the owning service.
usage_events = Table(
    "usage_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("metric", String(32), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("subject_id", String(64), nullable=False, server_default=""),
    Column("source_event", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("org_id", "source_event"),
    CheckConstraint(_in("metric", USAGE_METRICS), name="metric"),
    Index("ix_usage_events_org_metric_time", "org_id", "metric", "occurred_at"),
)

# Reference data the same for every org, without org_id and RLS.
GLOBAL_TABLES = ("plans",)

TENANT_TABLES = (
    "invoices",
    "invoice_items",
    "invoice_number_counters",
    "invoice_payments",
    "invoice_refunds",
    "checkout_sessions",
    "stripe_customers",
    "stripe_events",
    "invoice_public_tokens",
    "org_settings",
    "expenses",
    "tax_instalments",
    "accounting_exports",
    "org_subscriptions",
    "usage_events",
)
