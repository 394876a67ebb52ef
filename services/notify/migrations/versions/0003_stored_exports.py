"""notify: export_events also keeps exports for review (mode), beside the export dead letters

Seed 002 "Accounting export v1": with EXPORT_MODE other than webhook, the monthly accounting CSV of the
`accounting-export` job is kept in export_events with mode=accounting_csv for review. Until now every
row there was an export dead letter (outbox_id NOT NULL); those become mode 'dead_letter', and a stored
export has no outbox row, so outbox_id may be NULL (a check keeps dead letters with theirs). A stored
export is one per org and dedupe key (export:accounting_csv:YYYY-MM), by a unique partial index.

Revision ID: 0003_stored_exports
Revises: 0002_owner_role_policies
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_stored_exports"
down_revision = "0002_owner_role_policies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "export_events",
        sa.Column("mode", sa.String(length=20), server_default="dead_letter", nullable=False),
        schema="notify",
    )
    op.add_column(
        "export_events", sa.Column("dedupe_key", sa.String(length=300), nullable=True), schema="notify"
    )
    op.alter_column("export_events", "outbox_id", existing_type=sa.UUID(), nullable=True, schema="notify")
    op.create_check_constraint(
        op.f("ck_export_events_mode"),
        "export_events",
        "mode IN ('dead_letter', 'accounting_csv')",
        schema="notify",
    )
    op.create_check_constraint(
        op.f("ck_export_events_outbox_of_dead_letter"),
        "export_events",
        "(mode = 'dead_letter') = (outbox_id IS NOT NULL)",
        schema="notify",
    )
    op.create_index(
        "uq_export_events_dedupe",
        "export_events",
        ["org_id", "dedupe_key"],
        unique=True,
        schema="notify",
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )


def downgrade() -> None:
    # Stored exports have no place in the old table (outbox_id NOT NULL): they go with the columns.
    # FORCE RLS binds the owner too (no org set: no rows), so it is lifted for the delete.
    op.execute("ALTER TABLE notify.export_events NO FORCE ROW LEVEL SECURITY")
    op.execute("DELETE FROM notify.export_events WHERE mode <> 'dead_letter'")
    op.execute("ALTER TABLE notify.export_events FORCE ROW LEVEL SECURITY")
    op.drop_index(
        "uq_export_events_dedupe",
        table_name="export_events",
        schema="notify",
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )
    op.drop_constraint(
        op.f("ck_export_events_outbox_of_dead_letter"), "export_events", type_="check", schema="notify"
    )
    op.drop_constraint(op.f("ck_export_events_mode"), "export_events", type_="check", schema="notify")
    op.alter_column("export_events", "outbox_id", existing_type=sa.UUID(), nullable=False, schema="notify")
    op.drop_column("export_events", "dedupe_key", schema="notify")
    op.drop_column("export_events", "mode", schema="notify")
