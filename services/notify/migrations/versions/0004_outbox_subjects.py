"""notify: outbox rows name their booking and invoice (issue 13 timelines and erasure)

outbox_events gets booking_id and invoice_id, filled at enqueue from the dedupe key's structured
segments ("booking" then a UUID, "invoice" then a UUID, split on ':'; services/notify/subject_keys.py),
so a booking's or an invoice's rows are found by an indexed equality and never by searching the key's
text. Rows already there are backfilled by the same rule. A person's rows are found by address for
the data export and the erasure (expression indexes on lower(target) and lower(recipient)), and an
invoice's emails by their outbox row.

Revision ID: 0004_outbox_subjects
Revises: 0003_stored_exports
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_outbox_subjects"
down_revision = "0003_stored_exports"
branch_labels = None
depends_on = None

_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def _segment(name: str) -> str:
    # The first `name` segment followed by a whole UUID segment, as subject_keys.subjects_of reads it.
    return f"(regexp_match(dedupe_key, '(?:^|:){name}:({_UUID})(?::|$)'))[1]::uuid"


def upgrade() -> None:
    op.add_column("outbox_events", sa.Column("booking_id", sa.UUID(), nullable=True), schema="notify")
    op.add_column("outbox_events", sa.Column("invoice_id", sa.UUID(), nullable=True), schema="notify")
    # FORCE RLS binds the owner too (no org set: no rows), so it is lifted for the one-off backfill.
    op.execute("ALTER TABLE notify.outbox_events NO FORCE ROW LEVEL SECURITY")
    op.execute(
        f"UPDATE notify.outbox_events SET booking_id = {_segment('booking')}, "
        f"invoice_id = {_segment('invoice')} "
        "WHERE dedupe_key ~ '(?:^|:)(booking|invoice):'"
    )
    op.execute("ALTER TABLE notify.outbox_events FORCE ROW LEVEL SECURITY")
    op.create_index(
        "ix_outbox_events_booking",
        "outbox_events",
        ["org_id", "booking_id", "created_at"],
        schema="notify",
        postgresql_where=sa.text("booking_id IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_events_invoice",
        "outbox_events",
        ["org_id", "invoice_id", "created_at"],
        schema="notify",
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_events_org_target",
        "outbox_events",
        ["org_id", sa.literal_column("lower(target)")],
        schema="notify",
    )
    op.create_index("ix_email_events_outbox", "email_events", ["outbox_id"], schema="notify")
    op.create_index(
        "ix_email_events_org_recipient",
        "email_events",
        ["org_id", sa.literal_column("lower(recipient)")],
        schema="notify",
    )


def downgrade() -> None:
    op.drop_index("ix_email_events_org_recipient", table_name="email_events", schema="notify")
    op.drop_index("ix_email_events_outbox", table_name="email_events", schema="notify")
    op.drop_index("ix_outbox_events_org_target", table_name="outbox_events", schema="notify")
    op.drop_index(
        "ix_outbox_events_invoice",
        table_name="outbox_events",
        schema="notify",
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )
    op.drop_index(
        "ix_outbox_events_booking",
        table_name="outbox_events",
        schema="notify",
        postgresql_where=sa.text("booking_id IS NOT NULL"),
    )
    op.drop_column("outbox_events", "invoice_id", schema="notify")
    op.drop_column("outbox_events", "booking_id", schema="notify")
