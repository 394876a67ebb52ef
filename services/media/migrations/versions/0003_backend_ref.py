"""media: the storage backend's own reference per photo and per tombstone

Cloudflare Images keeps an image private (requireSignedURLs) only when it has no custom id, so such an
image is known by the id Cloudflare gives it, not by our storage key. `backend_ref` holds that id;
NULL (every local and r2 object, and images stored before this revision) means the storage key is the
reference. A tombstone carries it too, so the janitor deletes the right object.

Revision ID: 0003_backend_ref
Revises: 0002_review_and_janitor
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_backend_ref"
down_revision = "0002_review_and_janitor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "order_photos", sa.Column("backend_ref", sa.String(length=300), nullable=True), schema="media"
    )
    op.add_column(
        "photo_tombstones", sa.Column("backend_ref", sa.String(length=300), nullable=True), schema="media"
    )


def downgrade() -> None:
    op.drop_column("photo_tombstones", "backend_ref", schema="media")
    op.drop_column("order_photos", "backend_ref", schema="media")
