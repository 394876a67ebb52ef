"""billing: claim_stripe_events hands leased events back in Stripe's order (event time, then arrival)

UPDATE ... RETURNING gives rows in storage order, so two events of one payment that arrived close
together could be processed out of order: a late `payment_intent.payment_failed` before the
`payment_intent.succeeded` Stripe sent after it, and a dunning email to a client who had paid.

Revision ID: 0005_claim_in_event_order
Revises: 0004_owed_invoices_index
"""

from alembic import op

revision = "0005_claim_in_event_order"
down_revision = "0004_owed_invoices_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP FUNCTION billing.claim_stripe_events(integer, integer)")
    op.execute(
        """
        CREATE FUNCTION billing.claim_stripe_events(p_batch integer, p_lease_seconds integer)
        RETURNS TABLE (event_id text, org_id uuid)
        LANGUAGE sql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, billing
        AS $$
          WITH due AS (
            SELECT d.event_id FROM billing.stripe_events AS d
             WHERE d.processed_status IN ('pending', 'failed') AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at
             LIMIT p_batch
             FOR UPDATE SKIP LOCKED
          ), leased AS (
            UPDATE billing.stripe_events AS e
               SET next_attempt_at = now() + make_interval(secs => p_lease_seconds)
              FROM due
             WHERE e.event_id = due.event_id
            RETURNING e.event_id::text AS event_id, e.org_id, e.created_at, e.received_at
          )
          SELECT leased.event_id, leased.org_id FROM leased
           ORDER BY leased.created_at, leased.received_at, leased.event_id
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION billing.claim_stripe_events(integer, integer) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION billing.claim_stripe_events(integer, integer)")
    op.execute(
        """
        CREATE FUNCTION billing.claim_stripe_events(p_batch integer, p_lease_seconds integer)
        RETURNS TABLE (event_id text, org_id uuid)
        LANGUAGE sql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, billing
        AS $$
          UPDATE billing.stripe_events AS e
             SET next_attempt_at = now() + make_interval(secs => p_lease_seconds)
           WHERE e.event_id IN (SELECT d.event_id FROM billing.stripe_events AS d
                                 WHERE d.processed_status IN ('pending', 'failed')
                                   AND d.next_attempt_at <= now()
                                 ORDER BY d.next_attempt_at
                                 LIMIT p_batch
                                 FOR UPDATE SKIP LOCKED)
          RETURNING e.event_id::text, e.org_id
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION billing.claim_stripe_events(integer, integer) FROM PUBLIC")
