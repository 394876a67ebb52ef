"""Migrations as production runs them: as a plain owner role (no superuser, no BYPASSRLS), then the
runtime role's narrow cross-org lookups (login by email, public org key) must still work, and
everything else must stay invisible without an org."""

from __future__ import annotations

import secrets
import uuid

import psycopg
from psycopg import sql

from libs.common.migrate import migrate
from tools.devstack import drop_database, with_user


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
