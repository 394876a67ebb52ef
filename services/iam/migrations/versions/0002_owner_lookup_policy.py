"""iam: let the SECURITY DEFINER login lookup see users when the owner role is not a superuser

FORCE ROW LEVEL SECURITY binds the table owner too, and iam.find_login runs as the owner. Under a
superuser owner that did not matter; under a plain owner role (production) the lookup found nothing.
This SELECT-only policy is granted to the owner role alone; the runtime role is unaffected.

Revision ID: 0002_owner_lookup_policy
Revises: 0001_iam_initial
"""

from alembic import op

revision = "0002_owner_lookup_policy"
down_revision = "0001_iam_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE POLICY users_owner_lookup ON iam.users FOR SELECT TO CURRENT_USER USING (true)")


def downgrade() -> None:
    op.execute("DROP POLICY IF EXISTS users_owner_lookup ON iam.users")
