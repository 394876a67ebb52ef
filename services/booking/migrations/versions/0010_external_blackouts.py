"""booking: blackouts from an outside calendar, and bookings changed since a time

Integrations' gcal-sync (issue 17) turns busy time on the org's Google calendar into blackouts and
pushes bookings changed since its last pass to the calendar:

- `schedule_blocks.external_key` names such a blackout ("gcal:<calendar>:<event>"), unique per org,
  team and key, so a sync rerun after a crash moves the blackout it made instead of adding another.
  Outside calendars overlap themselves (two meetings at once) and may overlap a job assigned before
  the event was added: the team exclusion constraint that refuses double-booking now leaves these
  blackouts out, and assigning or rescheduling checks them itself (resources.refuse_external_busy).
- `bookings.updated_at` is moved by a trigger on every change of a row, whoever makes it (erasure,
  a team's ON DELETE SET NULL, ...), and indexed with org_id so "changed since" is an index range.

Rebuilding the team exclusion constraint rebuilds its gist index under an exclusive lock (seconds
for hundreds of thousands of blocks).

Revision ID: 0010_external_blackouts
Revises: 0009_schedule_block_bounds
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_external_blackouts"
down_revision = "0009_schedule_block_bounds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedule_blocks", sa.Column("external_key", sa.Text(), nullable=True), schema="booking")
    op.create_check_constraint(
        op.f("ck_schedule_blocks_external_team_blackout"),
        "schedule_blocks",
        "external_key IS NULL OR (kind = 'blackout' AND team_id IS NOT NULL)",
        schema="booking",
    )
    op.create_index(
        "uq_schedule_blocks_external",
        "schedule_blocks",
        ["org_id", "external_key", "team_id"],
        unique=True,
        schema="booking",
        postgresql_where=sa.text("external_key IS NOT NULL"),
    )
    _exclusions("AND external_key IS NULL")

    op.create_index("ix_bookings_org_updated", "bookings", ["org_id", "updated_at", "id"], schema="booking")
    op.execute(
        """
        CREATE FUNCTION booking.bookings_touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW IS DISTINCT FROM OLD THEN
            NEW.updated_at := now();
          END IF;
          RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER bookings_touch BEFORE UPDATE ON booking.bookings "
        "FOR EACH ROW EXECUTE FUNCTION booking.bookings_touch()"
    )


def _exclusions(extra: str) -> None:
    # Only a team's: external blackouts are never a worker's (the check constraint above).
    op.execute("ALTER TABLE booking.schedule_blocks DROP CONSTRAINT ex_schedule_blocks_team_overlap")
    op.execute(
        "ALTER TABLE booking.schedule_blocks ADD CONSTRAINT ex_schedule_blocks_team_overlap "
        f"EXCLUDE USING gist (team_id WITH =, period WITH &&) WHERE (team_id IS NOT NULL {extra})"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS bookings_touch ON booking.bookings")
    op.execute("DROP FUNCTION IF EXISTS booking.bookings_touch()")
    op.drop_index("ix_bookings_org_updated", table_name="bookings", schema="booking")
    # The outside calendar's busy time may overlap: it goes before the old constraints come back.
    op.execute("DELETE FROM booking.schedule_blocks WHERE external_key IS NOT NULL")
    _exclusions("")
    op.drop_index("uq_schedule_blocks_external", table_name="schedule_blocks", schema="booking")
    op.drop_constraint(
        op.f("ck_schedule_blocks_external_team_blackout"), "schedule_blocks", schema="booking", type_="check"
    )
    op.drop_column("schedule_blocks", "external_key", schema="booking")
