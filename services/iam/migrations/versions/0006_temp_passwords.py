"""iam: temporary passwords expire and are handed to notify once, never kept in the outbox (issue 9)

Placeholder revision reserved for this change; its body is written with it.

Revision ID: 0006_temp_passwords
Revises: 0005_portal_sessions
"""

revision = "0006_temp_passwords"
down_revision = "0005_portal_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
