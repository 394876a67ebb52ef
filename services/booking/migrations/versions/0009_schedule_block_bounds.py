"""booking: schedule blocks' start and end as stored columns, with btree indexes led by org_id

Under row-level security Postgres lets only LEAKPROOF operators drive an index, and the range
operator `&&` is not: the gist index on (org_id, period) was never used by the runtime role, so the
window queries went through bookings' btree index and found blackouts by scanning every one of the
org's (issue 15). The period's bounds are now stored columns Postgres computes itself (no writer
changes, existing rows filled by the ALTER), plus `long_span` (longer than 24 hours, only long
blackouts), so a window query is `starts_at < :end AND ends_at > :start` with plain timestamptz
comparisons: an index range on (org_id, long_span, starts_at), bounded below by a day for the
other blocks. Per team and per worker, the same under their ids. The exclusion constraints that
refuse double-booking stay as they are; the unusable gist index goes.

Adding stored generated columns rewrites the table under an exclusive lock (a few seconds for
hundreds of thousands of blocks).

Revision ID: 0009_schedule_block_bounds
Revises: 0008_trace_context
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_schedule_block_bounds"
down_revision = "0008_trace_context"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One ALTER: the table is rewritten once for the three columns.
    op.execute(
        "ALTER TABLE booking.schedule_blocks "
        "ADD COLUMN starts_at timestamptz NOT NULL GENERATED ALWAYS AS (lower(period)) STORED, "
        "ADD COLUMN ends_at timestamptz NOT NULL GENERATED ALWAYS AS (upper(period)) STORED, "
        "ADD COLUMN long_span boolean NOT NULL "
        "GENERATED ALWAYS AS ((upper(period) - lower(period)) > interval '24 hours') STORED"
    )
    op.create_index(
        "ix_schedule_blocks_org_span_starts",
        "schedule_blocks",
        ["org_id", "long_span", "starts_at"],
        unique=False,
        schema="booking",
    )
    op.create_index(
        "ix_schedule_blocks_org_team_starts",
        "schedule_blocks",
        ["org_id", "team_id", "long_span", "starts_at"],
        unique=False,
        schema="booking",
        postgresql_where=sa.text("team_id IS NOT NULL"),
    )
    op.create_index(
        "ix_schedule_blocks_org_worker_starts",
        "schedule_blocks",
        ["org_id", "worker_id", "long_span", "starts_at"],
        unique=False,
        schema="booking",
        postgresql_where=sa.text("worker_id IS NOT NULL"),
    )
    op.drop_index("ix_schedule_blocks_org_period", table_name="schedule_blocks", schema="booking")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_schedule_blocks_org_period ON booking.schedule_blocks USING gist (org_id, period)"
    )
    op.drop_index("ix_schedule_blocks_org_worker_starts", table_name="schedule_blocks", schema="booking")
    op.drop_index("ix_schedule_blocks_org_team_starts", table_name="schedule_blocks", schema="booking")
    op.drop_index("ix_schedule_blocks_org_span_starts", table_name="schedule_blocks", schema="booking")
    op.execute(
        "ALTER TABLE booking.schedule_blocks DROP COLUMN long_span, DROP COLUMN ends_at, DROP COLUMN starts_at"
    )
