"""Row-level security of the booking schema, in the database itself."""

from __future__ import annotations

import psycopg

from services.booking.tests.helpers import create_booking
from tools import testkit

INFRASTRUCTURE = {"event_outbox", "event_inbox", "event_dead_letters", "alembic_version"}


def test_every_tenant_table_has_forced_rls_and_a_policy(stack):
    with psycopg.connect(stack.admin_url) as conn:
        tables = conn.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'booking' AND p.tablename = c.relname
                           AND p.policyname = c.relname || '_org_isolation')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'booking' AND c.relkind = 'r'
              AND EXISTS (SELECT 1 FROM information_schema.columns col WHERE col.table_schema = 'booking'
                          AND col.table_name = c.relname AND col.column_name = 'org_id')
            """
        ).fetchall()
        constraints = {
            row[0]
            for row in conn.execute(
                "SELECT conname FROM pg_constraint WHERE contype = 'x' AND conrelid = 'booking.schedule_blocks'::regclass"
            )
        }
        public_can_resolve = conn.execute(
            "SELECT has_function_privilege('public', 'booking.org_for_key(text)', 'EXECUTE')"
        ).fetchone()[0]
    tenant = [t for t in tables if t[0] not in INFRASTRUCTURE]
    assert len(tenant) >= 9
    assert all(enabled and forced and policy for _, enabled, forced, policy in tenant), tenant
    assert constraints == {"ex_schedule_blocks_team_overlap", "ex_schedule_blocks_worker_overlap"}
    assert public_can_resolve is False


async def test_runtime_role_sees_nothing_without_an_org_and_only_its_org_with_one(
    gateway, http, make_org, stack
):
    a, b = await make_org(), await make_org()
    for org in (a, b):
        await create_booking(http, gateway.url, await testkit.owner(http, gateway.url, org))
    with psycopg.connect(stack.app_url) as conn:
        assert conn.execute("SELECT count(*) FROM booking.bookings").fetchone()[0] == 0
        with conn.transaction():
            conn.execute("SELECT set_config('app.current_org_id', %s, true)", (a.org_id,))
            orgs = {str(r[0]) for r in conn.execute("SELECT DISTINCT org_id FROM booking.bookings")}
        assert orgs == {a.org_id}


async def test_a_used_pricing_config_cannot_change(gateway, http, make_org, stack):
    org = await make_org()
    estimate = await http.post(
        f"{gateway.url}/v1/estimate",
        headers={"X-Test-Org": org.org_id},
        json={"beds": 1, "baths": 1, "cleaning_type": "standard"},
    )
    config_id = estimate.json()["pricing_config_id"]
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        try:
            conn.execute("UPDATE booking.pricing_configs SET min_total_cents = 1 WHERE id = %s", (config_id,))
            raise AssertionError("a used pricing config was changed")
        except psycopg.errors.CheckViolation as error:
            assert "cannot change" in str(error)
        # Retiring it (a new version takes over) is allowed.
        conn.execute("UPDATE booking.pricing_configs SET active = false WHERE id = %s", (config_id,))
