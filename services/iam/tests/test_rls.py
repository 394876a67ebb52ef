"""Row-level security in the database itself, as the runtime role the services connect with."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

INFRASTRUCTURE_TABLES = {"event_outbox", "event_inbox", "event_dead_letters"}
# Tables whose rows the fixture below creates for both orgs.
SEEDED_TABLES = (
    "users",
    "sessions",
    "refresh_tokens",
    "break_glass_sessions",
    "admin_audit_logs",
    "portal_links",
    "portal_sessions",
)


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def scalar(conn: psycopg.AsyncConnection[Any], query: str, params: Any = ()) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    return row[0] if row else None


async def count(conn: psycopg.AsyncConnection[Any], table: str) -> int:
    return int(await scalar(conn, sql.SQL("SELECT count(*) FROM iam.{}").format(sql.Identifier(table))))


async def set_org(conn: psycopg.AsyncConnection[Any], org_id: str) -> None:
    await conn.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))


@pytest.fixture
async def two_orgs(stack: Any, make_org: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Two orgs with a row in every tenant table, written as superuser (which bypasses RLS)."""
    orgs = (await make_org("RLS A"), await make_org("RLS B"))
    async with await connect(stack.admin_url) as admin:
        for org in orgs:
            session_id = uuid.uuid4()
            await admin.execute(
                "INSERT INTO iam.sessions (id, org_id, user_id, expires_at) VALUES (%s, %s, %s, now() + interval '1 h')",
                (session_id, org.org_id, org.owner_id),
            )
            await admin.execute(
                "INSERT INTO iam.refresh_tokens (id, org_id, session_id, token_hash, expires_at) "
                "VALUES (%s, %s, %s, %s, now() + interval '1 h')",
                (uuid.uuid4(), org.org_id, session_id, uuid.uuid4().hex * 2),
            )
            await admin.execute(
                "INSERT INTO iam.break_glass_sessions (id, org_id, actor, role, reason, token_hash, expires_at) "
                "VALUES (%s, %s, 'owner', 'OWNER', 'test', %s, now() + interval '1 h')",
                (uuid.uuid4(), org.org_id, uuid.uuid4().hex * 2),
            )
            await admin.execute(
                "INSERT INTO iam.admin_audit_logs (id, org_id, actor, action) VALUES (%s, %s, 'owner', 'test')",
                (uuid.uuid4(), org.org_id),
            )
            link_id = uuid.uuid4()
            await admin.execute(
                "INSERT INTO iam.portal_links (id, org_id, kind, subject, token_hash, expires_at) "
                "VALUES (%s, %s, 'client', 'c@example.com', %s, now() + interval '1 h')",
                (link_id, org.org_id, uuid.uuid4().hex * 2),
            )
            await admin.execute(
                "INSERT INTO iam.portal_sessions (id, org_id, kind, subject, link_id, token_hash, expires_at) "
                "VALUES (%s, %s, 'client', 'c@example.com', %s, %s, now() + interval '1 h')",
                (uuid.uuid4(), org.org_id, link_id, uuid.uuid4().hex * 2),
            )
        for table in (*SEEDED_TABLES, "orgs"):
            assert await count(admin, table) >= 2, f"superuser sees rows of {table}"
    yield orgs


async def test_no_org_set_means_no_rows(stack: Any, two_orgs: Any) -> None:
    async with await connect(stack.app_url) as conn:
        assert await scalar(conn, "SELECT current_setting('app.current_org_id', true)") in (None, "")
        for table in (*SEEDED_TABLES, "orgs"):
            assert await count(conn, table) == 0, table


async def test_setting_an_org_shows_only_its_rows(stack: Any, two_orgs: Any) -> None:
    org_a, org_b = two_orgs
    async with await connect(stack.app_url) as conn:
        async with conn.transaction():
            await set_org(conn, org_a.org_id)
            for table in SEEDED_TABLES:
                rows = await (
                    await conn.execute(
                        sql.SQL("SELECT DISTINCT org_id::text FROM iam.{}").format(sql.Identifier(table))
                    )
                ).fetchall()
                assert rows == [(org_a.org_id,)], table
            assert await (await conn.execute("SELECT id::text FROM iam.orgs")).fetchall() == [(org_a.org_id,)]
            emails = await (await conn.execute("SELECT email FROM iam.users")).fetchall()
            assert emails == [(org_a.owner_email,)]
            assert await scalar(conn, "SELECT count(*) FROM iam.users WHERE id = %s", (org_b.owner_id,)) == 0
        # set_config(..., true) is transaction-local: afterwards the setting reads back as '' and
        # the connection sees nothing again.
        assert await scalar(conn, "SELECT current_setting('app.current_org_id', true)") == ""
        assert await count(conn, "users") == 0
        async with conn.transaction():
            await set_org(conn, str(uuid.uuid4()))
            assert await count(conn, "users") == 0


async def test_writes_into_another_org_are_refused(stack: Any, two_orgs: Any) -> None:
    org_a, org_b = two_orgs
    async with await connect(stack.app_url) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            async with conn.transaction():
                await set_org(conn, org_a.org_id)
                await conn.execute(
                    "INSERT INTO iam.users (id, org_id, email, role, password_hash) VALUES (%s, %s, %s, 'OWNER', 'x')",
                    (uuid.uuid4(), org_b.org_id, f"intruder-{uuid.uuid4().hex[:8]}@example.com"),
                )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            async with conn.transaction():
                await set_org(conn, org_a.org_id)
                await conn.execute(
                    "INSERT INTO iam.admin_audit_logs (id, org_id, actor, action) VALUES (%s, %s, 'x', 'forged')",
                    (uuid.uuid4(), org_b.org_id),
                )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            async with conn.transaction():
                await set_org(conn, org_a.org_id)
                await conn.execute(
                    "UPDATE iam.users SET org_id = %s WHERE id = %s", (org_b.org_id, org_a.owner_id)
                )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            async with conn.transaction():  # no org at all: nothing may be written either
                await conn.execute(
                    "INSERT INTO iam.sessions (id, org_id, user_id, expires_at) VALUES (%s, %s, %s, now())",
                    (uuid.uuid4(), org_a.org_id, org_a.owner_id),
                )
        async with conn.transaction():
            await set_org(conn, org_a.org_id)
            updated = await conn.execute(
                "UPDATE iam.users SET full_name = 'pwned' WHERE id = %s", (org_b.owner_id,)
            )
            assert updated.rowcount == 0
            deleted = await conn.execute(
                "DELETE FROM iam.admin_audit_logs WHERE org_id = %s", (org_b.org_id,)
            )
            assert deleted.rowcount == 0
            # Writing into its own org works, so the refusals above are RLS and not missing grants.
            inserted = await conn.execute(
                "INSERT INTO iam.admin_audit_logs (id, org_id, actor, action) VALUES (%s, %s, 'x', 'ok')",
                (uuid.uuid4(), org_a.org_id),
            )
            assert inserted.rowcount == 1
    async with await connect(stack.admin_url) as admin:
        assert (
            await scalar(admin, "SELECT full_name FROM iam.users WHERE id = %s", (org_b.owner_id,)) != "pwned"
        )
        assert (
            await scalar(
                admin, "SELECT count(*) FROM iam.admin_audit_logs WHERE org_id = %s", (org_b.org_id,)
            )
            == 1
        )


async def test_runtime_role_is_unprivileged_and_owns_nothing(stack: Any) -> None:
    async with await connect(stack.app_url) as conn:
        role = await (
            await conn.execute(
                "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            )
        ).fetchone()
        assert role == ("cws_app", False, False, False, False)
        owned = await (
            await conn.execute(
                "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'iam' AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
            )
        ).fetchall()
        assert owned == []
        assert (
            await scalar(
                conn,
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'iam' AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
            )
            == 0
        )
        assert (
            await scalar(conn, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'iam'")
            != "cws_app"
        )
        # Nor may it switch RLS off for itself.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("ALTER TABLE iam.users NO FORCE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SET row_security = off; SELECT count(*) FROM iam.users")


async def test_every_tenant_table_has_forced_rls_and_an_org_isolation_policy(stack: Any) -> None:
    async with await connect(stack.admin_url) as admin:
        tables = await (
            await admin.execute(
                """
                SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'iam' AND c.relkind IN ('r', 'p')
                  AND (c.relname = 'orgs' OR EXISTS (
                    SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped))
                ORDER BY c.relname
                """
            )
        ).fetchall()
        tenant = {name: (rls, forced) for name, rls, forced in tables if name not in INFRASTRUCTURE_TABLES}
        assert set(tenant) >= {*SEEDED_TABLES, "orgs"}
        not_forced = [name for name, flags in tenant.items() if flags != (True, True)]
        assert not_forced == [], "RLS must be enabled and forced"

        policies: dict[str, dict[str, tuple[str, str, str, list[str]]]] = {}
        for table, name, cmd, permissive, qual, roles in await (
            await admin.execute(
                "SELECT tablename, policyname, cmd, permissive, qual, roles::text[] FROM pg_policies "
                "WHERE schemaname = 'iam'"
            )
        ).fetchall():
            policies.setdefault(table, {})[name] = (cmd, permissive, qual, roles)
        for table in tenant:
            assert table in policies, f"{table} has no policy"
            table_policies = dict(policies[table])
            assert f"{table}_org_isolation" in table_policies, table_policies
            cmd, permissive, qual, roles = table_policies.pop(f"{table}_org_isolation")
            assert (cmd, permissive) == ("ALL", "PERMISSIVE")
            assert "current_setting('app.current_org_id'" in qual and "NULLIF" in qual, qual
            column = "id" if table == "orgs" else "org_id"
            assert qual.startswith(f"({column} = "), qual
            # The only other policies are the owner's doors for its SECURITY DEFINER functions: read
            # (find_login, list_orgs), and delete for prune_expired_handoffs (expired temporary
            # passwords and sign-up requests): never for the app role, never for PUBLIC.
            for name, (cmd, _permissive, _qual, roles) in table_policies.items():
                assert cmd == "SELECT" or (cmd, name) == ("DELETE", f"{table}_owner_prune"), (
                    f"{table}.{name} is {cmd}"
                )
                assert "public" not in roles and "cws_app" not in roles, f"{table}.{name} is for {roles}"


async def test_find_login_is_a_narrow_security_definer(stack: Any) -> None:
    async with await connect(stack.admin_url) as admin:
        definer, config, acl = await (
            await admin.execute(
                "SELECT p.prosecdef, p.proconfig, p.proacl::text[] FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'iam' AND p.proname = 'find_login'"
            )
        ).fetchone()
        assert definer is True
        assert any(c.startswith("search_path=") for c in config or [])
        assert acl is not None, "a NULL ACL means the default: EXECUTE for PUBLIC"
        assert not [entry for entry in acl if entry.startswith("=")], f"PUBLIC may execute: {acl}"
        assert (
            await scalar(admin, "SELECT has_function_privilege('public', 'iam.find_login(text)', 'EXECUTE')")
            is False
        )
        assert (
            await scalar(admin, "SELECT has_function_privilege('cws_app', 'iam.find_login(text)', 'EXECUTE')")
            is True
        )


async def test_find_login_reveals_only_user_and_org(stack: Any, make_org: Any) -> None:
    org = await make_org()
    async with await connect(stack.app_url) as conn:
        row = await (
            await conn.execute("SELECT * FROM iam.find_login(%s)", (org.owner_email.upper(),))
        ).fetchall()
        assert [tuple(str(v) for v in r) for r in row] == [(org.owner_id, org.org_id)]
        assert (
            await (await conn.execute("SELECT * FROM iam.find_login('nobody@example.com')")).fetchall() == []
        )
