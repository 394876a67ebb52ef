"""Tables of the iam schema, and the records the domain reads from them. Every tenant table has
org_id and a forced RLS policy (migration 0001)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from libs.common.db import service_metadata
from libs.common.roles import STAFF

SCHEMA = "iam"
metadata, event_tables = service_metadata(SCHEMA)

# A user of an org is one of its staff; portal clients and workers are not users here.
ROLES = STAFF

orgs = Table(
    "orgs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), ForeignKey("iam.orgs.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(320), nullable=False),
    Column("full_name", String(200), nullable=False, server_default=""),
    Column("role", String(20), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("must_change_password", Boolean, nullable=False, server_default=text("false")),
    Column("totp_secret_enc", Text, nullable=True),
    Column("totp_enabled", Boolean, nullable=False, server_default=text("false")),
    # The last accepted TOTP time step: a code is accepted only for a later step (RFC 6238 §5.2).
    Column("totp_last_step", BigInteger, nullable=False, server_default="0"),
    Column("failed_login_count", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When the temporary password (must_change_password) stops working: AUTH_TEMP_PASSWORD_TTL_MINUTES
    # after an admin set it. NULL for a password the user chose.
    Column("password_expires_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(f"role IN ({', '.join(repr(str(role)) for role in ROLES)})", name="role_known"),
    Index("uq_users_email_lower", text("lower(email)"), unique=True),
    Index("ix_users_org_id", "org_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True), ForeignKey("iam.users.id", ondelete="CASCADE"), nullable=False),
    Column("mfa_verified", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", String(100), nullable=True),
    Column("client_ip", String(64), nullable=False, server_default=""),
    Index("ix_sessions_org_user", "org_id", "user_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column(
        "session_id", UUID(as_uuid=True), ForeignKey("iam.sessions.id", ondelete="CASCADE"), nullable=False
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index("ix_refresh_tokens_session", "session_id"),
)

break_glass_sessions = Table(
    "break_glass_sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Portal links (issue 9, hole 8): a magic link is used once, to open a portal session. Both tokens
# are stored as SHA-256 hashes only. `subject` is the client's email or the worker's id.
portal_links = Table(
    "portal_links",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("subject", String(320), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", String(100), nullable=True),
    CheckConstraint("kind IN ('client', 'worker')", name="kind_known"),
    Index("ix_portal_links_org_subject", "org_id", "kind", "subject"),
)

portal_sessions = Table(
    "portal_sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("subject", String(320), nullable=False),
    Column(
        "link_id", UUID(as_uuid=True), ForeignKey("iam.portal_links.id", ondelete="SET NULL"), nullable=True
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", String(100), nullable=True),
    CheckConstraint("kind IN ('client', 'worker')", name="kind_known"),
    Index("ix_portal_sessions_org_subject", "org_id", "kind", "subject"),
)

admin_audit_logs = Table(
    "admin_audit_logs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(20), nullable=False, server_default=""),
    Column("auth_method", String(20), nullable=False, server_default=""),
    Column("action", String(100), nullable=False),
    Column("resource_type", String(100), nullable=False, server_default=""),
    Column("resource_id", String(100), nullable=False, server_default=""),
    Column("before", JSONB, nullable=True),
    Column("after", JSONB, nullable=True),
    Column("request_id", String(100), nullable=False, server_default=""),
    Column("client_ip", String(64), nullable=False, server_default=""),
    Column("break_glass_session_id", UUID(as_uuid=True), nullable=True),
    Column("break_glass_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_admin_audit_logs_org_created", "org_id", "created_at"),
    # A booking's or an invoice's timeline: the newest entries of one resource (migration 0007).
    Index("ix_admin_audit_logs_org_resource", "org_id", "resource_type", "resource_id", "created_at"),
)

# A temporary password waiting for notify to email it (EMAIL_TEMP_PASSWORDS), encrypted with a key
# derived from AUTH_SECRET_KEY, which the database does not hold (temp_passwords.py). Deleted when
# notify claims it, when the user changes or is given another password, and once it expires.
temp_password_handoffs = Table(
    "temp_password_handoffs",
    metadata,
    Column("user_id", UUID(as_uuid=True), ForeignKey("iam.users.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("password_enc", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_temp_password_handoffs_expires_at", "expires_at"),
)

# Sign-up requests waiting for their email to be confirmed (signups.py). No org exists yet, so this is
# no tenant table; org_id is the id the org will get. Only the argon2id hash of the password is kept.
signup_requests = Table(
    "signup_requests",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("email", String(320), nullable=False),
    Column("org_name", String(200), nullable=False),
    Column("full_name", String(200), nullable=False, server_default=""),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_signup_requests_expires_at", "expires_at"),
)

TENANT_TABLES = (
    "users",
    "sessions",
    "refresh_tokens",
    "break_glass_sessions",
    "admin_audit_logs",
    "portal_links",
    "portal_sessions",
    "temp_password_handoffs",
    "signup_requests",
)


@dataclass(frozen=True)
class User:
    """A row of iam.users."""

    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    full_name: str
    role: str
    password_hash: str
    must_change_password: bool
    totp_secret_enc: str | None
    totp_enabled: bool
    totp_last_step: int
    failed_login_count: int
    locked_until: datetime | None
    active: bool
    created_at: datetime
    updated_at: datetime
    password_expires_at: datetime | None = None

    @classmethod
    def of(cls, row: Row[Any]) -> User:
        return cls(**row._mapping)


@dataclass(frozen=True)
class AuditEntry:
    """A row of iam.admin_audit_logs."""

    id: uuid.UUID
    org_id: uuid.UUID
    actor: str
    role: str
    auth_method: str
    action: str
    resource_type: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str
    client_ip: str
    break_glass_session_id: uuid.UUID | None
    break_glass_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Row[Any]) -> AuditEntry:
        return cls(**row._mapping)


@dataclass(frozen=True)
class OrgSummary:
    """An org as service callers that sweep every org see it (iam.list_orgs)."""

    id: uuid.UUID
    name: str
    time_zone: str
