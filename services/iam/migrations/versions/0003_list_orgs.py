"""iam: iam.list_orgs, the one door through which a service may walk every org

Sweeping jobs (the jobs service) act per org and must know the orgs. This SECURITY DEFINER function
returns ids, names and time zones only, keyset-paged; the owner gets a SELECT policy on iam.orgs to
run it under FORCE RLS, and the servicer lets only service callers reach it.

Revision ID: 0003_list_orgs
Revises: 0002_owner_lookup_policy
"""

from alembic import op

revision = "0003_list_orgs"
down_revision = "0002_owner_lookup_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE POLICY orgs_owner_list ON iam.orgs FOR SELECT TO CURRENT_USER USING (true)")
    op.execute(
        """
        CREATE FUNCTION iam.list_orgs(p_after uuid, p_limit integer)
        RETURNS TABLE (id uuid, name text, time_zone text)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, iam
        AS $$
          SELECT o.id, o.name::text, o.time_zone::text FROM iam.orgs AS o
           WHERE p_after IS NULL OR o.id > p_after
           ORDER BY o.id
           LIMIT p_limit
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION iam.list_orgs(uuid, integer) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS iam.list_orgs(uuid, integer)")
    op.execute("DROP POLICY IF EXISTS orgs_owner_list ON iam.orgs")
