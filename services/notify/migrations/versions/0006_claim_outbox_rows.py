"""notify: claim due outbox rows and return what sending them needs (issue 15)

`notify.claim_outbox` returns only ids, org ids, kinds and attempts, so the delivery loop read each
claimed row's payload in a second transaction per org. `notify.claim_outbox_rows` is the same claim
(due rows, oldest first, FOR UPDATE SKIP LOCKED, leased, attempts + 1) returning the columns a send
needs too: one transaction per round instead of one plus one per org. Like the first, it serves the
delivery loop, which delivers every org's rows; it is executable by the runtime role only (the
migration runner's grant), and what it returns never reaches a tenant: each row's outcome is still
recorded in the row's own org, under RLS. `claim_outbox` stays for a process of the previous
version during a rolling deploy.

Revision ID: 0006_claim_outbox_rows
Revises: 0005_trace_context
"""

from alembic import op

revision = "0006_claim_outbox_rows"
down_revision = "0005_trace_context"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION notify.claim_outbox_rows(p_batch integer, p_lease_seconds integer)
        RETURNS TABLE (id uuid, org_id uuid, kind text, attempts integer, target text, payload jsonb,
                       trace_context text, request_id text)
        LANGUAGE sql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, notify
        AS $$
          UPDATE notify.outbox_events AS o
             SET status = 'sending', attempts = o.attempts + 1, updated_at = now(),
                 next_attempt_at = now() + make_interval(secs => p_lease_seconds)
           WHERE o.id IN (SELECT d.id FROM notify.outbox_events AS d
                           WHERE d.status IN ('pending', 'sending') AND d.next_attempt_at <= now()
                           ORDER BY d.next_attempt_at
                           LIMIT p_batch
                           FOR UPDATE SKIP LOCKED)
          RETURNING o.id, o.org_id, o.kind::text, o.attempts, o.target::text, o.payload,
                    o.trace_context::text, o.request_id::text
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION notify.claim_outbox_rows(integer, integer) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS notify.claim_outbox_rows(integer, integer)")
