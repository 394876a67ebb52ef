"""notify: the owner-only claim policy on notify.outbox_events names the table owner

The policy was created `TO CURRENT_USER`, i.e. to whichever role ran the migration: where that was the
runtime role (MIGRATIONS_DATABASE_URL unset, DATABASE_URL used instead), the runtime role got
`USING (true)` and an ADMIN of one org saw every org's rows. Recreated here naming the table owner
(libs/common/migration_helpers.owner_only_policy says why the owner and not the migrating role);
libs/common/migrate.py now refuses to migrate as the runtime role or while it owns anything.

Revision ID: 0002_owner_role_policies
Revises: 0001_notify_initial
"""

from libs.common.migration_helpers import owner_only_policy

revision = "0002_owner_role_policies"
down_revision = "0001_notify_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    owner_only_policy("notify", "outbox_events", "outbox_events_owner_claim", "ALL", with_check=True)


def downgrade() -> None:
    # Nothing to undo: the policies keep their names (the earlier revisions' downgrades drop them), and
    # recreating them TO CURRENT_USER would only bring the hole back.
    pass
