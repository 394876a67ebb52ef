"""iam: portal links are exchanged once for a revocable portal session (issue 9, hole 8)

Placeholder revision reserved for this change; its body is written with it.

Revision ID: 0005_portal_sessions
Revises: 0004_owner_role_policies
"""

revision = "0005_portal_sessions"
down_revision = "0004_owner_role_policies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
