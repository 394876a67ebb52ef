"""`python -m libs.common.migrate`: run every service's Alembic history as the owner role, then
grant the runtime role what it needs (DML, no ownership, so row-level security binds it).

Never as the runtime role: whoever migrates owns every table, and the owner is the role the owner-only
policies (the SECURITY DEFINER lookups' `USING (true)`) let see every org. So this refuses to migrate
as DATABASE_APP_ROLE, or while that role owns anything in a service schema or may act as the
migrating role, and outside dev/test it needs MIGRATIONS_DATABASE_URL (never falls back to
DATABASE_URL, the runtime connection).

Services are found on disk (services/<name>/migrations), so libs.common imports no service.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from pydantic import ValidationError

from libs.common.settings import CommonSettings, explain, libpq_url, use_dev_env

ROOT = Path(__file__).resolve().parents[2]


def service_migration_dirs(root: Path = ROOT) -> dict[str, Path]:
    return {
        path.parent.name: path
        for path in sorted((root / "services").glob("*/migrations"))
        if (path / "env.py").exists()
    }


def alembic_config(migrations_dir: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrations_url(settings: CommonSettings) -> str:
    """MIGRATIONS_DATABASE_URL; in dev and test DATABASE_URL may stand in (refused later if it is the
    runtime role), elsewhere its absence is refused."""
    if settings.migrations_database_url:
        return settings.migrations_database_url
    if settings.is_dev_or_test:
        return settings.database_url
    raise SystemExit(
        f"refusing to migrate: MIGRATIONS_DATABASE_URL is not set (APP_ENV={settings.app_env}). Set it to "
        "the owner role's URL (the role that owns the service schemas, e.g. cws_owner); DATABASE_URL is "
        "the runtime role's connection and never runs migrations"
    )


def refuse_runtime_role(conn: psycopg.Connection, app_role: str, schemas: list[str]) -> None:
    """Refuse before migrating anything when the migration would leave the runtime role owning tables
    (or able to act as their owner): RLS's owner-only policies would then let it see every org."""
    row = conn.execute("SELECT current_user::text").fetchone()
    user = row[0] if row else ""
    if user == app_role:
        raise SystemExit(
            f"refusing to migrate as the runtime role {app_role} (DATABASE_APP_ROLE): it would own every "
            "table and see every org. Set MIGRATIONS_DATABASE_URL to the owner role's URL (e.g. "
            "cws_owner, see deploy/env.example); DATABASE_URL stays the runtime role's"
        )
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app_role,)).fetchone()
    if not exists:
        return
    member = conn.execute("SELECT pg_has_role(%s, current_user, 'MEMBER')", (app_role,)).fetchone()
    if member and member[0]:
        raise SystemExit(
            f"refusing to migrate as {user}: the runtime role {app_role} is a member of it and could act "
            f"as the owner of every table. REVOKE {user} FROM {app_role}, or set MIGRATIONS_DATABASE_URL "
            "to an owner role the runtime role is not a member of"
        )
    owned = [
        name
        for (name,) in conn.execute(
            """
            SELECT 'schema ' || n.nspname FROM pg_namespace n
             WHERE n.nspname = ANY(%(schemas)s) AND n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
            UNION ALL
            SELECT 'table ' || n.nspname || '.' || c.relname FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY(%(schemas)s) AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
            UNION ALL
            SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = ANY(%(schemas)s) AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
            """,
            {"schemas": schemas, "role": app_role},
        ).fetchall()
    ]
    if owned:
        listed = ", ".join(owned[:5]) + (f" and {len(owned) - 5} more" if len(owned) > 5 else "")
        raise SystemExit(
            f"refusing to migrate: the runtime role {app_role} owns {listed} (migrated as it, before "
            f"MIGRATIONS_DATABASE_URL was required). As a superuser, in this database: "
            f"REASSIGN OWNED BY {app_role} TO <owner role>; then migrate again with "
            "MIGRATIONS_DATABASE_URL set to the owner role's URL"
        )


def ensure_app_role(conn: psycopg.Connection, role: str, password: str | None) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE").format(
            sql.Identifier(role)
        )
        if password:
            statement = statement + sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        conn.execute(statement)
    bypass = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)
    ).fetchone()
    if bypass and bypass[0]:
        raise SystemExit(
            f"runtime role {role} is a superuser or has BYPASSRLS: row-level security would not bind it"
        )


def grant(conn: psycopg.Connection, schema: str, role: str) -> None:
    s, r = sql.Identifier(schema), sql.Identifier(role)
    for statement in (
        "GRANT USAGE ON SCHEMA {s} TO {r}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
        "REVOKE ALL ON {s}.alembic_version FROM {r}",
        "GRANT SELECT ON {s}.alembic_version TO {r}",
    ):
        conn.execute(sql.SQL(statement).format(s=s, r=r))


def migrate(url: str, app_role: str, app_password: str | None, only: list[str] | None = None) -> list[str]:
    dirs = {name: path for name, path in service_migration_dirs().items() if not only or name in only}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        refuse_runtime_role(conn, app_role, list(service_migration_dirs()))
    done = []
    for name, path in dirs.items():
        command.upgrade(alembic_config(path, url), "head")
        done.append(name)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        ensure_app_role(conn, app_role, app_password)
        for name in done:
            grant(conn, name, app_role)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run every service's migrations")
    parser.add_argument("--service", action="append", help="only this service (repeatable)")
    args = parser.parse_args(argv)
    use_dev_env()  # beside make dev, its database (APP_ENV unset or dev only)
    try:
        settings = CommonSettings()
    except ValidationError as error:
        raise SystemExit(f"error: refusing to migrate: {explain(error)}") from None
    done = migrate(
        migrations_url(settings),
        settings.database_app_role,
        os.environ.get("DATABASE_APP_PASSWORD"),
        args.service,
    )
    print(f"migrated: {', '.join(done) or 'nothing'}", file=sys.stderr)


if __name__ == "__main__":
    main()
