"""booking: let the SECURITY DEFINER org-key lookup see profiles when the owner is not a superuser

FORCE ROW LEVEL SECURITY binds the table owner too, and booking.org_for_key runs as the owner. This
SELECT-only policy is granted to the owner role alone; the runtime role is unaffected.

Revision ID: 0002_owner_lookup_policy
Revises: 0001_booking_initial
"""

from alembic import op

revision = "0002_owner_lookup_policy"
down_revision = "0001_booking_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE POLICY org_profiles_owner_lookup ON booking.org_profiles FOR SELECT TO CURRENT_USER USING (true)"
    )


def downgrade() -> None:
    op.execute("DROP POLICY IF EXISTS org_profiles_owner_lookup ON booking.org_profiles")
