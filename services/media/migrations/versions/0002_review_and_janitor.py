"""media: the review queue's index and the storage janitor's retry-queue count

The queue lists live photos awaiting review or a retake, oldest first: a partial index over exactly
those rows, ordered as the queue reads them, so a page is an index range scan however many approved
or deleted photos the org has. The storage janitor leases due tombstones of every org through the
SECURITY DEFINER media.claim_tombstones (ids and org ids only; the work is then done in each org), and
the retry-queue gauge reads two counts from media.tombstone_queue(); both run as the table owner, which
alone gets the owner-only policies.

Revision ID: 0002_review_and_janitor
Revises: 0001_media_initial
"""

import sqlalchemy as sa
from alembic import op

from libs.common.migration_helpers import owner_only_policy

revision = "0002_review_and_janitor"
down_revision = "0001_media_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_order_photos_review_queue",
        "order_photos",
        ["org_id", "created_at", "id"],
        schema="media",
        postgresql_where=sa.text("deleted_at IS NULL AND status IN ('pending', 'needs_retake')"),
    )
    # The janitor serves every org in one call: it leases due tombstones through this function (run
    # as the owner, which alone gets these policies), then works each off inside its own org.
    owner_only_policy("media", "photo_tombstones", "photo_tombstones_owner_claim_read", "SELECT")
    owner_only_policy("media", "photo_tombstones", "photo_tombstones_owner_claim", "UPDATE", with_check=True)
    op.execute(
        """
        CREATE FUNCTION media.claim_tombstones(p_backend text, p_batch integer, p_lease_seconds integer)
        RETURNS TABLE (id uuid, org_id uuid)
        LANGUAGE sql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, media
        AS $$
          WITH due AS (
            SELECT d.id FROM media.photo_tombstones AS d
             WHERE d.backend = p_backend AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at
             LIMIT p_batch
             FOR UPDATE SKIP LOCKED
          )
          UPDATE media.photo_tombstones AS t
             SET next_attempt_at = now() + make_interval(secs => p_lease_seconds)
            FROM due
           WHERE t.id = due.id
          RETURNING t.id, t.org_id
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION media.claim_tombstones(text, integer, integer) FROM PUBLIC")
    # For the retry-queue gauge and the janitor's answer: two counts across orgs, never a row.
    op.execute(
        """
        CREATE FUNCTION media.tombstone_queue()
        RETURNS TABLE (total bigint, retrying bigint)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, media
        AS $$
          SELECT count(*), count(*) FILTER (WHERE t.attempts > 0) FROM media.photo_tombstones AS t
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION media.tombstone_queue() FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS media.tombstone_queue()")
    op.execute("DROP FUNCTION IF EXISTS media.claim_tombstones(text, integer, integer)")
    op.execute("DROP POLICY IF EXISTS photo_tombstones_owner_claim ON media.photo_tombstones")
    op.execute("DROP POLICY IF EXISTS photo_tombstones_owner_claim_read ON media.photo_tombstones")
    op.drop_index("ix_order_photos_review_queue", table_name="order_photos", schema="media")
