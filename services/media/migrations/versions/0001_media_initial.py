"""media: order photos, photo consents, tombstones, org entitlements; forced RLS

Revision ID: 0001_media_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import create_event_tables, drop_event_tables, enable_tenant_rls

revision = "0001_media_initial"
down_revision = None
branch_labels = None
depends_on = None

TENANT_TABLES = ("order_photos", "photo_consents", "photo_tombstones", "org_entitlements")


def upgrade() -> None:
    create_event_tables("media")
    op.create_table(
        "order_photos",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("legacy_key", sa.String(length=500), nullable=True),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("mime", sa.String(length=64), nullable=False),
        sa.Column("ext", sa.String(length=8), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=100), nullable=False),
        sa.Column("uploader_role", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=100), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'needs_retake')", name=op.f("ck_order_photos_status")
        ),
        sa.CheckConstraint("bytes > 0", name=op.f("ck_order_photos_bytes_positive")),
        sa.CheckConstraint("width > 0 AND height > 0", name=op.f("ck_order_photos_dimensions_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_photos")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_order_photos_storage_key")),
        schema="media",
    )
    op.create_index(
        "ix_order_photos_org_booking", "order_photos", ["org_id", "booking_id", "created_at"], schema="media"
    )
    op.create_index(
        "ix_order_photos_org_status", "order_photos", ["org_id", "status", "created_at"], schema="media"
    )
    op.create_index(
        "uq_order_photos_legacy_key",
        "order_photos",
        ["legacy_key"],
        unique=True,
        schema="media",
        postgresql_where=sa.text("legacy_key IS NOT NULL"),
    )
    op.create_table(
        "photo_consents",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("booking_id", sa.UUID(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("granted_by", sa.String(length=100), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.CheckConstraint("source IN ('client_portal', 'staff')", name=op.f("ck_photo_consents_source")),
        sa.PrimaryKeyConstraint("org_id", "booking_id", name=op.f("pk_photo_consents")),
        schema="media",
    )
    op.create_table(
        "photo_tombstones",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("photo_id", sa.UUID(), nullable=True),
        sa.Column("storage_key", sa.String(length=500), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photo_tombstones")),
        sa.UniqueConstraint("backend", "storage_key", name=op.f("uq_photo_tombstones_backend_storage_key")),
        schema="media",
    )
    op.create_index("ix_photo_tombstones_due", "photo_tombstones", ["next_attempt_at"], schema="media")
    op.create_table(
        "org_entitlements",
        sa.Column("org_id", sa.UUID(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_entitlements")),
        schema="media",
    )
    enable_tenant_rls("media", TENANT_TABLES)


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        op.drop_table(table, schema="media")
    drop_event_tables("media")
