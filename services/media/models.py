"""Tables of the media schema. Every tenant table has org_id and a forced RLS policy (migration 0001).

A photo's row is written in the same transaction as its `cws.media.photo.stored` event, after its
object was stored: a row always names an object that exists (by `backend_ref`, else `storage_key`).
Consent is per booking and separate from the photos (withdrawing it hides links, it deletes nothing). Deleting a photo leaves a tombstone that
the storage janitor works off against the backend, with retries."""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from libs.common.db import service_metadata

SCHEMA = "media"
metadata, event_tables = service_metadata(SCHEMA)

Record: TypeAlias = Row[*tuple[Any, ...]]

PHOTO_STATUSES = ("pending", "approved", "needs_retake")

order_photos = Table(
    "order_photos",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("booking_id", UUID(as_uuid=True), nullable=False),
    # orders/{org_id}/{booking_id}/{photo_id}.{ext}: built from ids only, never from a client's name.
    Column("storage_key", String(300), nullable=False, unique=True),
    # What the backend knows the object by when that is not the key: Cloudflare Images' own image id
    # (only an image without a custom id can be private). NULL: the key is the reference (0003).
    Column("backend_ref", String(300), nullable=True),
    # A key the object was known by before (imported history); reads resolve it too.
    Column("legacy_key", String(500), nullable=True),
    Column("backend", String(32), nullable=False),
    Column("mime", String(64), nullable=False),
    Column("ext", String(8), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("uploaded_by", String(100), nullable=False),
    Column("uploader_role", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("review_note", Text, nullable=True),
    Column("reviewed_by", String(100), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("status IN ('pending', 'approved', 'needs_retake')", name="status"),
    CheckConstraint("bytes > 0", name="bytes_positive"),
    CheckConstraint("width > 0 AND height > 0", name="dimensions_positive"),
    Index("ix_order_photos_org_booking", "org_id", "booking_id", "created_at"),
    Index("ix_order_photos_org_status", "org_id", "status", "created_at"),
    # The metrics view: photos approved or sent back in a period (metrics.py, migration 0004).
    Index(
        "ix_order_photos_org_reviewed",
        "org_id",
        "status",
        "reviewed_at",
        postgresql_where=text("reviewed_at IS NOT NULL"),
    ),
    # The review queue (review.py): live photos awaiting action, oldest first (migration 0003).
    Index(
        "ix_order_photos_review_queue",
        "org_id",
        "created_at",
        "id",
        postgresql_where=text("deleted_at IS NULL AND status IN ('pending', 'needs_retake')"),
    ),
    Index(
        "uq_order_photos_legacy_key",
        "legacy_key",
        unique=True,
        postgresql_where=text("legacy_key IS NOT NULL"),
    ),
)

photo_consents = Table(
    "photo_consents",
    metadata,
    Column("org_id", UUID(as_uuid=True), nullable=False, primary_key=True),
    Column("booking_id", UUID(as_uuid=True), nullable=False, primary_key=True),
    Column("granted", Boolean, nullable=False),
    # Who recorded it (a principal id) and from where: client_portal or staff.
    Column("granted_by", String(100), nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("withdrawn_at", DateTime(timezone=True), nullable=True),
    Column("source", String(32), nullable=False),
    CheckConstraint("source IN ('client_portal', 'staff')", name="source"),
)

photo_tombstones = Table(
    "photo_tombstones",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", UUID(as_uuid=True), nullable=False),
    Column("photo_id", UUID(as_uuid=True), nullable=True),
    Column("storage_key", String(500), nullable=False),
    # The photo's backend_ref: what the janitor deletes (NULL: the key).
    Column("backend_ref", String(300), nullable=True),
    Column("backend", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("backend", "storage_key"),
    Index("ix_photo_tombstones_due", "next_attempt_at"),
)

# The latest pause/resume of the org's subscription, as billing announced it (entitlements.py).
org_entitlements = Table(
    "org_entitlements",
    metadata,
    Column("org_id", UUID(as_uuid=True), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

TENANT_TABLES = ("order_photos", "photo_consents", "photo_tombstones", "org_entitlements")
