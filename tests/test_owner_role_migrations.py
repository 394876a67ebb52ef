"""Migrations as production runs them: as a plain owner role (no superuser, no BYPASSRLS), then the
runtime role's narrow cross-org lookups (login by email, public org key) must still work, and
everything else must stay invisible without an org."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest
from alembic import command
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from psycopg import sql

from libs.common.migrate import alembic_config, migrate, service_migration_dirs
from tools.devstack import ROOT, drop_database, with_user
from tools.processes import service_proc
from tools.testkit import as_role, eventually, ready, signing_channel


def test_plain_owner_role_migrations_keep_lookups_working(pg_server_admin_url):
    suffix = secrets.token_hex(4)
    owner, db = f"cws_owner_{suffix}", f"cws_owner_test_{suffix}"
    with psycopg.connect(pg_server_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE").format(sql.Identifier(owner))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner)))
    base = pg_server_admin_url.rsplit("/", 1)[0] + f"/{db}"
    try:
        migrate(with_user(base, owner), "cws_app", None)
        org, user = uuid.uuid4(), uuid.uuid4()
        with psycopg.connect(with_user(base, "cws_app")) as app:
            with app.transaction():
                app.execute("SELECT set_config('app.current_org_id', %s, true)", (str(org),))
                app.execute("INSERT INTO iam.orgs (id, name) VALUES (%s, 'Owner Test')", (org,))
                app.execute(
                    "INSERT INTO iam.users (id, org_id, email, role, password_hash) VALUES (%s, %s, %s, 'OWNER', 'x')",
                    (user, org, "boss@owner.test"),
                )
                app.execute(
                    "INSERT INTO booking.org_profiles (org_id, name, public_key) VALUES (%s, 'Owner Test', 'owner-test')",
                    (org,),
                )
            assert app.execute(
                "SELECT user_id, org_id FROM iam.find_login('BOSS@owner.test')"
            ).fetchone() == (user, org)
            assert app.execute("SELECT org_id FROM booking.org_for_key('owner-test')").fetchone() == (org,)
            assert app.execute("SELECT count(*) FROM iam.users").fetchone() == (0,)
            assert app.execute("SELECT count(*) FROM booking.org_profiles").fetchone() == (0,)
    finally:
        drop_database(pg_server_admin_url, db)
        with psycopg.connect(pg_server_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))


# --- hole 1: a runtime role that also migrates sees every org ---------------------------------
# Every deployment path we document migrates as an owner role and runs the services as the runtime
# role. Each test below gets its own database and its own pair of roles (the cluster-wide cws_app
# belongs to the session stack), and checks what the runtime role owns and sees.

SERVICE_SCHEMAS = ["iam", "booking", "notify", "jobs", "billing", "media", "integrations"]
# The owner-only policies the SECURITY DEFINER lookups need (FORCE RLS binds the table owner too).
OWNER_POLICIES = {
    ("iam", "users", "users_owner_lookup"),
    ("iam", "orgs", "orgs_owner_list"),
    ("booking", "org_profiles", "org_profiles_owner_lookup"),
    ("notify", "outbox_events", "outbox_events_owner_claim"),
}
# Alembic heads of the histories as they were before the owner-role revisions (the hole).
HOLE_REVISIONS = {
    "iam": "0003_list_orgs",
    "booking": "0002_owner_lookup_policy",
    "notify": "0001_notify_initial",
    # Billing's owner-only policies (0002) came after the fix; the old way stops before them.
    "billing": "0001_billing_initial",
    "media": "0001_media_initial",
    # Integrations came long after the fix: no database was ever migrated the old way with it.
    "integrations": "base",
}
STRONG = "s" * 40
PROD_SECRETS = {
    name: STRONG
    for name in (
        "AUTH_SECRET_KEY",
        "CLIENT_PORTAL_SECRET",
        "WORKER_PORTAL_SECRET",
        "METRICS_TOKEN",
    )
}


class Roles:
    """A database of its own with an owner role and a runtime role, as deploy/postgres/initdb makes
    them (plain roles: no superuser, no BYPASSRLS); `db_owner` says which of them owns the database."""

    def __init__(self, admin_url: str, db_owner: str = "owner") -> None:
        suffix = secrets.token_hex(4)
        self.admin_url = admin_url
        self.owner, self.runtime, self.db = f"cws_owner_{suffix}", f"cws_app_{suffix}", f"cws_roles_{suffix}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for role in (self.owner, self.runtime):
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE").format(
                        sql.Identifier(role)
                    )
                )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.db),
                    sql.Identifier(self.owner if db_owner == "owner" else self.runtime),
                )
            )
        base = admin_url.rsplit("/", 1)[0] + f"/{self.db}"
        self.db_admin_url = base
        self.owner_url, self.runtime_url = with_user(base, self.owner), with_user(base, self.runtime)

    def drop(self) -> None:
        drop_database(self.admin_url, self.db)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for role in (self.runtime, self.owner):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def roles(pg_server_admin_url):
    made: list[Roles] = []

    def make(db_owner: str = "owner") -> Roles:
        made.append(Roles(pg_server_admin_url, db_owner))
        return made[-1]

    yield make
    for each in made:
        each.drop()


def seed_two_orgs(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Two orgs with a user, a public profile, an outbox row and an invoice each, written as `url`'s role
    with each org set in turn (as the services write)."""
    orgs = (uuid.uuid4(), uuid.uuid4())
    with psycopg.connect(url) as conn:
        for org in orgs:
            with conn.transaction():
                conn.execute("SELECT set_config('app.current_org_id', %s, true)", (str(org),))
                conn.execute("INSERT INTO iam.orgs (id, name) VALUES (%s, %s)", (org, f"Org {org}"))
                conn.execute(
                    "INSERT INTO iam.users (id, org_id, email, role, password_hash) VALUES (%s, %s, %s, 'ADMIN', 'x')",
                    (uuid.uuid4(), org, f"admin-{org}@roles.test"),
                )
                conn.execute(
                    "INSERT INTO booking.org_profiles (org_id, name, public_key) VALUES (%s, 'P', %s)",
                    (org, f"key-{org}"),
                )
                conn.execute(
                    "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload) "
                    "VALUES (%s, %s, 'email', 'k', '{}')",
                    (uuid.uuid4(), org),
                )
                conn.execute(
                    "INSERT INTO billing.invoices (id, org_id, currency, client_name, client_email) "
                    "VALUES (%s, %s, 'CAD', 'C', 'c@roles.test')",
                    (uuid.uuid4(), org),
                )
    return orgs


def orgs_visible_to(url: str, org: uuid.UUID) -> dict[str, set[uuid.UUID]]:
    """Which orgs' rows `url`'s role sees in each owner-policy table (and billing's invoices), with `org`
    set (as an ADMIN of that org's ListUsers runs)."""
    seen = {}
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.current_org_id', %s, true)", (str(org),))
        for schema, table, column in (
            ("iam", "users", "org_id"),
            ("iam", "orgs", "id"),
            ("booking", "org_profiles", "org_id"),
            ("notify", "outbox_events", "org_id"),
            ("billing", "invoices", "org_id"),
        ):
            query = sql.SQL("SELECT DISTINCT {} FROM {}.{}").format(
                sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
            )
            seen[f"{schema}.{table}"] = {row[0] for row in conn.execute(query).fetchall()}
    return seen


def assert_runtime_confined(admin_url: str, runtime: str, owner: str | None = None) -> None:
    """The runtime role owns nothing in a service schema (schemas, tables, sequences, views,
    functions), and every owner-only policy names a role that is not it (the table owner)."""
    with psycopg.connect(admin_url) as conn:
        owned = conn.execute(
            """
            SELECT 'schema ' || n.nspname FROM pg_namespace n
             WHERE n.nspname = ANY(%(schemas)s) AND pg_get_userbyid(n.nspowner) = %(role)s
            UNION ALL
            SELECT 'relation ' || n.nspname || '.' || c.relname FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY(%(schemas)s) AND pg_get_userbyid(c.relowner) = %(role)s
            UNION ALL
            SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = ANY(%(schemas)s) AND pg_get_userbyid(p.proowner) = %(role)s
            """,
            {"schemas": SERVICE_SCHEMAS, "role": runtime},
        ).fetchall()
        assert owned == [], f"the runtime role {runtime} owns {owned}"
        policies = {
            (schema, table, name): (roles, table_owner)
            for schema, table, name, roles, table_owner in conn.execute(
                "SELECT p.schemaname, p.tablename, p.policyname, p.roles::text[], t.tableowner::text "
                "FROM pg_policies p JOIN pg_tables t USING (schemaname, tablename) "
                "WHERE p.schemaname = ANY(%s) AND p.roles <> '{public}'",
                (SERVICE_SCHEMAS,),
            ).fetchall()
        }
    assert set(policies) >= OWNER_POLICIES, policies
    for key, (policy_roles, table_owner) in policies.items():
        assert policy_roles == [table_owner], (key, policy_roles, table_owner)
        assert runtime not in policy_roles, (key, policy_roles)
        if owner is not None:
            assert policy_roles == [owner], (key, policy_roles)


def assert_sees_only_its_org(runtime_url: str, orgs: tuple[uuid.UUID, uuid.UUID]) -> None:
    for org in orgs:
        seen = orgs_visible_to(runtime_url, org)
        assert seen == {key: {org} for key in seen}, f"with org {org} set, the runtime role sees {seen}"


def run_migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m libs.common.migrate` as compose's migrate container and the k8s Job run it."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "libs.common.migrate"],
        cwd=ROOT,
        env={**keep, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrating_as_the_runtime_role_is_refused(roles):
    """The attack: a deployment whose runtime role can create schemas migrates with DATABASE_URL alone.
    Before the fix it owned every table and the owner-only policies, and an ADMIN of org A saw every
    org's users; now it is refused, naming the setting to give."""
    db = roles(db_owner="runtime")
    try:
        migrate(db.runtime_url, db.runtime, None)
    except SystemExit as refused:
        message = str(refused)
    else:
        org_a, org_b = seed_two_orgs(db.runtime_url)
        assert_sees_only_its_org(db.runtime_url, (org_a, org_b))
        raise AssertionError("migrating as the runtime role was not refused")
    assert "MIGRATIONS_DATABASE_URL" in message and db.runtime in message, message
    with psycopg.connect(db.db_admin_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", (SERVICE_SCHEMAS,)
        ).fetchone() == (0,), "refused before migrating anything"


def test_migrate_with_only_database_url_is_refused(roles):
    """`make migrate` / the migrate container with DATABASE_URL and no MIGRATIONS_DATABASE_URL: as the
    runtime role it is refused in every APP_ENV, and outside dev/test it is refused whatever role
    DATABASE_URL names (it is the runtime connection, never the owner's)."""
    db = roles(db_owner="runtime")
    as_runtime = run_migrate(
        {"APP_ENV": "test", "DATABASE_URL": db.runtime_url, "DATABASE_APP_ROLE": db.runtime}
    )
    assert as_runtime.returncode != 0, as_runtime.stderr
    assert "MIGRATIONS_DATABASE_URL" in as_runtime.stderr, as_runtime.stderr
    prod = run_migrate(
        {"APP_ENV": "prod", "DATABASE_URL": db.owner_url, "DATABASE_APP_ROLE": db.runtime, **PROD_SECRETS}
    )
    assert prod.returncode != 0, prod.stderr
    assert "MIGRATIONS_DATABASE_URL is not set" in prod.stderr, prod.stderr
    with psycopg.connect(db.db_admin_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", (SERVICE_SCHEMAS,)
        ).fetchone() == (0,), "nothing was migrated"


def test_owner_url_deployment_confines_the_runtime_role(roles):
    """compose (deploy/env.example) and Kubernetes (migrate-job.yaml): APP_ENV=prod, the owner role in
    MIGRATIONS_DATABASE_URL, the runtime role in DATABASE_URL and DATABASE_APP_ROLE."""
    db = roles()
    done = run_migrate(
        {
            "APP_ENV": "prod",
            "MIGRATIONS_DATABASE_URL": db.owner_url,
            "DATABASE_URL": db.runtime_url,
            "DATABASE_APP_ROLE": db.runtime,
            **PROD_SECRETS,
        }
    )
    assert done.returncode == 0, done.stderr
    assert_runtime_confined(db.db_admin_url, db.runtime, owner=db.owner)
    assert_sees_only_its_org(db.runtime_url, seed_two_orgs(db.runtime_url))


def test_a_database_the_runtime_role_migrated_is_fixed_forward(roles):
    """A database already migrated the old way (the runtime role owns it all): migrating as the owner
    refuses until ownership is handed over, then the new revisions rename the owner-only policies'
    role, and the runtime role sees only its org."""
    db = roles(db_owner="runtime")
    for name, path in service_migration_dirs().items():
        command.upgrade(alembic_config(path, db.runtime_url), HOLE_REVISIONS.get(name, "head"))
    org_a, org_b = seed_two_orgs(db.runtime_url)
    assert orgs_visible_to(db.runtime_url, org_a)["iam.users"] == {org_a, org_b}, "the hole, as it was"

    with pytest.raises(SystemExit, match=f"REASSIGN OWNED BY {db.runtime}"):
        migrate(db.owner_url, db.runtime, None)
    with psycopg.connect(db.db_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(db.runtime), sql.Identifier(db.owner))
        )
    migrate(db.owner_url, db.runtime, None)
    assert_runtime_confined(db.db_admin_url, db.runtime, owner=db.owner)
    assert_sees_only_its_org(db.runtime_url, (org_a, org_b))
    # The owner-only lookups still work for the runtime role, through their SECURITY DEFINER doors.
    with psycopg.connect(db.runtime_url) as conn:
        assert conn.execute("SELECT org_id FROM booking.org_for_key(%s)", (f"key-{org_b}",)).fetchone() == (
            org_b,
        )


def test_renamed_owner_role_keeps_its_policies(roles):
    """Policies hold role oids: renaming the owner role keeps them naming it (and not the runtime role)."""
    db = roles()
    migrate(db.owner_url, db.runtime, None)
    renamed = db.owner + "_renamed"
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} RENAME TO {}").format(sql.Identifier(db.owner), sql.Identifier(renamed))
        )
    try:
        assert_runtime_confined(db.db_admin_url, db.runtime, owner=renamed)
    finally:
        with psycopg.connect(db.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} RENAME TO {}").format(
                    sql.Identifier(renamed), sql.Identifier(db.owner)
                )
            )


def test_dev_and_test_stack_confine_the_runtime_role(stack):
    """`make dev` (embedded Postgres) and the test stack migrate as the server's superuser and run the
    services as cws_app: cws_app owns nothing there either."""
    assert_runtime_confined(stack.admin_url, "cws_app")


async def test_admin_of_one_org_lists_only_its_users_through_iam(iam, make_org):
    """ListUsers through the real IAM, as an ADMIN of org A, on the session stack."""
    org_a, org_b = await make_org("Roles A"), await make_org("Roles B")
    async with signing_channel(iam.target) as channel:
        stub = iam_pb2_grpc.IamServiceStub(channel)
        listed = await stub.ListUsers(
            iam_pb2.ListUsersRequest(limit=200), metadata=as_role(org_a.org_id, "ADMIN")
        )
    assert {u.org_id for u in listed.users} == {org_a.org_id}
    assert org_b.owner_email not in {u.email for u in listed.users}


async def _readyz(url: str) -> dict:
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            return (await client.get(url)).json()
        except (httpx.HTTPError, ValueError):
            return {}


async def test_iam_on_an_owner_url_deployment_lists_one_org_and_refuses_the_owner_connection(
    roles, stack, work_dir
):
    """The compose/k8s split through the real IAM: as the runtime role an ADMIN of org A lists only
    org A's users; a DATABASE_URL that connects as the owner role keeps the service not ready (its
    connection would see every org through the owner-only policies)."""
    db = roles()
    migrate(db.owner_url, db.runtime, None)
    org_a, _ = seed_two_orgs(db.runtime_url)
    env = {**stack.env(), "DATABASE_URL": db.runtime_url, "MIGRATIONS_DATABASE_URL": db.owner_url}
    iam = service_proc("iam", env, work_dir / "logs", label=f"iam-{db.db}").start()
    as_owner = service_proc(
        "iam", {**env, "DATABASE_URL": db.owner_url}, work_dir / "logs", label=f"iam-owner-{db.db}"
    ).start()
    try:
        await iam.wait_ready_async()
        async with signing_channel(iam.target) as channel:
            stub = iam_pb2_grpc.IamServiceStub(channel)
            listed = await stub.ListUsers(
                iam_pb2.ListUsersRequest(limit=200), metadata=as_role(str(org_a), "ADMIN")
            )
        assert {u.org_id for u in listed.users} == {str(org_a)}, listed

        async def refused_as_owner() -> bool:
            checks = {c["name"]: c for c in (await _readyz(as_owner.readyz_url)).get("checks", [])}
            return "owns objects of schema iam" in checks.get("db", {}).get("detail", {}).get("message", "")

        await eventually(refused_as_owner, timeout=30, message="iam as the owner role reporting not ready")
        assert not await ready(as_owner.readyz_url)
    finally:
        as_owner.stop()
        iam.stop()
