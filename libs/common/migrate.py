"""`python -m libs.common.migrate`: run every service's Alembic history as the owner role, then
grant the runtime role what it needs (DML, no ownership, so row-level security binds it).

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

from libs.common.settings import CommonSettings, libpq_url

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
    done = []
    for name, path in service_migration_dirs().items():
        if only and name not in only:
            continue
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
    settings = CommonSettings()
    url = settings.migrations_database_url or settings.database_url
    done = migrate(url, settings.database_app_role, os.environ.get("DATABASE_APP_PASSWORD"), args.service)
    print(f"migrated: {', '.join(done) or 'nothing'}", file=sys.stderr)


if __name__ == "__main__":
    main()
