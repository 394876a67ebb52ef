"""Tables of the integrations schema. Every tenant table has org_id and a forced RLS policy (migration
0001): the OAuth connections (tokens sealed, crypto.py), the consent round trips' states, each
provider's sync state, and the id mappings that keep a rerun from creating anything twice.

Mappings are kept on disconnect (a reconnect to the same calendar or company finds what it pushed)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from libs.common.db import service_metadata

SCHEMA = "integrations"
metadata, event_tables = service_metadata(SCHEMA)

PROVIDER_CHECK = "provider IN ('google_calendar', 'quickbooks')"
CONNECTION_STATUSES = ("connected", "disconnected", "revoked")

connections = Table(
    "connections",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="disconnected"),
    # AES-GCM sealed (crypto.py), bound to org, provider and kind; NULL once disconnected or revoked.
    Column("access_token_sealed", LargeBinary, nullable=True),
    Column("refresh_token_sealed", LargeBinary, nullable=True),
    Column("token_expires_at", DateTime(timezone=True), nullable=True),
    Column("scopes", Text, nullable=False, server_default=""),
    # Calendar id (google_calendar, "" until chosen) or realm id (quickbooks).
    Column("account_id", Text, nullable=False, server_default=""),
    Column("account_name", Text, nullable=False, server_default=""),
    # The team busy time blocks; NULL = every team (google_calendar only).
    Column("busy_team_id", UUID(as_uuid=True), nullable=True),
    Column("connected_by", UUID(as_uuid=True), nullable=True),
    Column("connected_at", DateTime(timezone=True), nullable=True),
    Column("status_reason", Text, nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(PROVIDER_CHECK, name="provider"),
    CheckConstraint("status IN ('connected', 'disconnected', 'revoked')", name="status"),
    UniqueConstraint("org_id", "provider"),
)

oauth_states = Table(
    "oauth_states",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("provider", String(32), nullable=False),
    # sha256 of the state the browser carries: a leaked table row completes no consent.
    Column("state_hash", LargeBinary, nullable=False, unique=True),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("code_verifier_sealed", LargeBinary, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(PROVIDER_CHECK, name="provider"),
)

sync_states = Table(
    "sync_states",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("provider", String(32), primary_key=True),
    # The account the cursor belongs to: another calendar or realm starts from no cursor.
    Column("account_id", Text, nullable=False, server_default=""),
    Column("cursor", Text, nullable=False, server_default=""),
    Column("last_sync_at", DateTime(timezone=True), nullable=True),
    Column("last_success_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("last_error_at", DateTime(timezone=True), nullable=True),
    Column("counts", JSONB, nullable=False, server_default="{}"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(PROVIDER_CHECK, name="provider"),
)

gcal_events = Table(
    "gcal_events",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("calendar_id", Text, primary_key=True),
    Column("booking_id", UUID(as_uuid=True), primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("pushed_hash", Text, nullable=False, server_default=""),
    Column("etag", Text, nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

gcal_busy = Table(
    "gcal_busy",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("calendar_id", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

qbo_customers = Table(
    "qbo_customers",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("realm_id", Text, primary_key=True),
    Column("email_key", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
)

qbo_invoices = Table(
    "qbo_invoices",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("realm_id", Text, primary_key=True),
    Column("invoice_id", UUID(as_uuid=True), primary_key=True),
    Column("qbo_invoice_id", Text, nullable=False),
    Column("sync_token", Text, nullable=False, server_default=""),
    Column("pushed_hash", Text, nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("org_id", "realm_id", "qbo_invoice_id"),
)

qbo_payments = Table(
    "qbo_payments",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("realm_id", Text, primary_key=True),
    Column("qbo_payment_id", Text, primary_key=True),
    Column("invoice_id", UUID(as_uuid=True), primary_key=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Our payment (billing's invoice_payments.id) for a row "pushed": a payment recorded in the suite
    # (Stripe, manual) that qbo-sync created in QuickBooks. NULL for a payment pulled from QuickBooks.
    Column("payment_id", UUID(as_uuid=True), nullable=True),
    CheckConstraint("outcome IN ('applied', 'skipped', 'pushed')", name="outcome"),
    UniqueConstraint("org_id", "realm_id", "payment_id"),
)

TENANT_TABLES = (
    "connections",
    "oauth_states",
    "sync_states",
    "gcal_events",
    "gcal_busy",
    "qbo_customers",
    "qbo_invoices",
    "qbo_payments",
)
