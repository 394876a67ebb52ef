"""Seed 004's rollback ("restore the most recent backup") against a live database on a real
PostgreSQL: restore_pg.sh restores beside it, verifies, and swap_db.sh swaps it in (or says exactly
what to run while sessions are connected); the drill checks seed 002's core tables with their row
counts; backup.sh and restore.sh take and put back the database and the local photos as one set.

Every database and role here has a random name of this test's own and is dropped afterwards."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.deploy.test_backup_restore import ORG_ID, Pg

PHOTO = f"orders/{ORG_ID}/00000000-0000-0000-0000-0000000000b2/p1.jpg"
HEADS = "billing=0001_billing booking=0002_booking iam=0001_iam_initial"


@pytest.fixture
def pg(pg_server_admin_url: str, tmp_path: Path) -> Iterator[Pg]:
    pg = Pg(pg_server_admin_url, tmp_path)
    try:
        yield pg
    finally:
        pg.drop_all()


def create_live(pg: Pg) -> tuple[str, str, str]:
    """A database shaped like the suite's: owned by an owner role, CONNECT for the runtime role only
    (deploy/postgres/initdb), service schemas with Alembic versions and seed 002's core tables."""
    owner, app = pg.new_role(), pg.new_role()
    name = pg.new_name()
    pg.admin(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    pg.admin(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    pg.admin(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name), sql.Identifier(app)))
    with psycopg.connect(pg.db_url(name)) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        conn.execute("""
            CREATE SCHEMA iam;
            CREATE TABLE iam.alembic_version (version_num text PRIMARY KEY);
            INSERT INTO iam.alembic_version VALUES ('0001_iam_initial');
            CREATE TABLE iam.orgs (org_id uuid PRIMARY KEY, name text NOT NULL);
            CREATE TABLE iam.users (user_id serial PRIMARY KEY, org_id uuid NOT NULL, email text);
            CREATE SCHEMA booking;
            CREATE TABLE booking.alembic_version (version_num text PRIMARY KEY);
            INSERT INTO booking.alembic_version VALUES ('0001_booking');
            CREATE TABLE booking.leads (id serial PRIMARY KEY, org_id uuid NOT NULL);
            CREATE TABLE booking.bookings (id serial PRIMARY KEY, org_id uuid NOT NULL);
            CREATE TABLE booking.workers (id serial PRIMARY KEY, org_id uuid NOT NULL);
            ALTER TABLE booking.leads ENABLE ROW LEVEL SECURITY;
            ALTER TABLE booking.leads FORCE ROW LEVEL SECURITY;
            CREATE POLICY leads_org_isolation ON booking.leads
                USING (org_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid);
            CREATE SCHEMA billing;
            CREATE TABLE billing.alembic_version (version_num text PRIMARY KEY);
            INSERT INTO billing.alembic_version VALUES ('0001_billing');
            CREATE TABLE billing.invoices (id serial PRIMARY KEY, org_id uuid NOT NULL);
        """)
        conn.execute("RESET ROLE")
        conn.execute("INSERT INTO iam.orgs VALUES (%s, 'Acme Cleaning')", (ORG_ID,))
        conn.execute("INSERT INTO iam.users (org_id, email) VALUES (%s, 'owner@example.com')", (ORG_ID,))
        for table in (
            "booking.leads",
            "booking.leads",
            "booking.bookings",
            "booking.workers",
            "billing.invoices",
        ):
            conn.execute(sql.SQL("INSERT INTO {} (org_id) VALUES (%s)").format(sql.SQL(table)), (ORG_ID,))
    return name, owner, app


def scalar(pg: Pg, dbname: str, query: str) -> object:
    with psycopg.connect(pg.db_url(dbname)) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def database_acl(pg: Pg, dbname: str) -> tuple[str, str]:
    with psycopg.connect(pg.admin_url) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname = %s", (dbname,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_rollback_restores_beside_the_live_database_and_swaps_it_in_once_it_is_free(pg: Pg) -> None:
    live, owner, app = create_live(pg)
    pg.backup(live)
    # After the backup: a bad release adds rows and a migration.
    with psycopg.connect(pg.db_url(live), autocommit=True) as conn:
        conn.execute("INSERT INTO booking.leads (org_id) SELECT %s FROM generate_series(1, 5)", (ORG_ID,))
        conn.execute("UPDATE booking.alembic_version SET version_num = '0003_bad'")

    # A service still connected: restored and verified beside the live database, not swapped.
    service = psycopg.connect(pg.db_url(live), autocommit=True)
    try:
        held = pg.run("restore_pg.sh", "latest", dbname=live, ALEMBIC_HEADS=HEADS)
        assert held.returncode == 3, held.stderr
        assert "NOTE: booking at 0001_booking, the code's head is 0002_booking" in held.stderr
        assert "ok: iam at 0001_iam_initial (the code's head)" in held.stderr
        assert "ok: booking.leads (2 rows)" in held.stderr and "ok: billing.invoices (1 rows)" in held.stderr
        assert f"NOT SWAPPED: sessions are connected to '{live}'" in held.stderr
        (restored,) = pg.databases_like(f"{live}_restore_")
        swap_command = f"swap_db.sh {restored} {live}"
        assert "docker compose stop gateway iam booking billing media notify jobs integrations" in held.stderr
        assert swap_command in held.stderr and "RESTORE_TERMINATE=1 " in held.stderr
        assert scalar(pg, live, "SELECT version_num FROM booking.alembic_version") == "0003_bad"
        assert service.execute("SELECT 1").fetchone() == (1,)
        psycopg.connect(pg.db_url(live)).close()  # new connections are allowed again

        # The printed command, ending the service's session.
        swapped = pg.run("swap_db.sh", restored, live, dbname=live, RESTORE_TERMINATE="1")
        assert swapped.returncode == 0, swapped.stderr
        assert "RESTORE_TERMINATE=1: ending the sessions" in swapped.stderr
        with pytest.raises(psycopg.OperationalError):
            service.execute("SELECT 1")
    finally:
        service.close()

    assert scalar(pg, live, "SELECT version_num FROM booking.alembic_version") == "0001_booking"
    assert scalar(pg, live, "SELECT count(*) FROM booking.leads") == 2
    (before,) = pg.databases_like(f"{live}_before_restore_")
    assert scalar(pg, before, "SELECT count(*) FROM booking.leads") == 7
    assert not pg.databases_like(f"{live}_restore_")
    # The database's owner and privileges, which a dump without --create does not carry, and the
    # objects' owner (restored by a superuser, the dump's owners are kept).
    assert database_acl(pg, live) == database_acl(pg, before)
    assert f"{app}=c/" in database_acl(pg, live)[1] and "=Tc/" not in database_acl(pg, live)[1]
    assert scalar(pg, live, "SELECT tableowner FROM pg_tables WHERE tablename = 'leads'") == owner
    assert scalar(pg, live, "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'booking.leads'::regclass")


def test_rollback_swaps_at_once_when_nothing_is_connected(pg: Pg) -> None:
    live, _owner, _app = create_live(pg)
    dump = pg.backup(live)
    with psycopg.connect(pg.db_url(live), autocommit=True) as conn:
        conn.execute("DELETE FROM booking.bookings")

    result = pg.run("restore_pg.sh", str(dump), dbname=live)

    assert result.returncode == 0, result.stderr
    assert f"'{live}' has 9 tables: restoring into the fresh database '{live}_restore_" in result.stderr
    assert scalar(pg, live, "SELECT count(*) FROM booking.bookings") == 1
    (before,) = pg.databases_like(f"{live}_before_restore_")
    assert scalar(pg, before, "SELECT count(*) FROM booking.bookings") == 0


def test_a_backup_that_does_not_verify_leaves_the_live_database_alone(pg: Pg) -> None:
    live, _owner, _app = create_live(pg)
    with psycopg.connect(pg.db_url(live), autocommit=True) as conn:
        conn.execute("DROP TABLE booking.workers")
        conn.execute("DELETE FROM billing.alembic_version")
    dump = pg.backup(live)

    result = pg.run("restore_pg.sh", str(dump), dbname=live)

    assert result.returncode == 1
    assert "FAIL: billing has no Alembic version" in result.stderr
    assert "FAIL: core table booking.workers is missing" in result.stderr
    assert f"'{live}' is untouched" in result.stderr and "DROP DATABASE" in result.stderr
    assert not pg.databases_like(f"{live}_before_restore_")
    assert scalar(pg, live, "SELECT count(*) FROM booking.leads") == 2


def test_drill_checks_the_core_tables_and_their_row_counts(pg: Pg) -> None:
    live, _owner, _app = create_live(pg)

    result = pg.run("backup_restore_drill.sh", dbname=live)

    assert result.returncode == 0, result.stderr
    for table, rows in (
        ("iam.orgs", 1),
        ("iam.users", 1),
        ("booking.leads", 2),
        ("booking.bookings", 1),
        ("booking.workers", 1),
        ("billing.invoices", 1),
    ):
        assert (
            f"ok: {table} ({rows} rows; the source had {rows} before the dump, {rows} now)" in result.stderr
        )
    assert "DRILL PASSED" in result.stderr

    with psycopg.connect(pg.db_url(live), autocommit=True) as conn:
        conn.execute("DROP TABLE billing.invoices")
    missing = pg.run("backup_restore_drill.sh", dbname=live, BACKUP_DIR=str(pg.backup_dir / "second"))
    assert missing.returncode != 0
    assert "FAIL: core table billing.invoices is missing in" in missing.stderr


def photo_store(root: Path, content: bytes) -> Path:
    (root / PHOTO).parent.mkdir(parents=True, exist_ok=True)
    (root / PHOTO).write_bytes(content)
    return root


def test_one_backup_set_holds_the_database_and_the_photos_and_restore_puts_both_back(
    pg: Pg, tmp_path: Path
) -> None:
    live, _owner, _app = create_live(pg)
    uploads = photo_store(tmp_path / "uploads", b"\xff\xd8before")

    taken = pg.run("backup.sh", dbname=live, ORDER_UPLOAD_ROOT=str(uploads))

    assert taken.returncode == 0, taken.stderr
    dump, archive = (Path(line) for line in taken.stdout.split())
    stamp = dump.name.removeprefix(f"pg_{live}_").removesuffix(".dump")
    assert archive.name == f"uploads_{stamp}.tar.gz"
    assert Path(f"{dump}.sha256").exists() and Path(f"{archive}.sha256").exists()
    with tarfile.open(archive) as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == [f"./{PHOTO}"]

    # After the backup: more rows, a replaced photo.
    with psycopg.connect(pg.db_url(live), autocommit=True) as conn:
        conn.execute("INSERT INTO billing.invoices (org_id) VALUES (%s)", (ORG_ID,))
    photo_store(uploads, b"\xff\xd8after")

    restored = pg.run("restore.sh", "latest", dbname=live, ORDER_UPLOAD_ROOT=str(uploads))

    assert restored.returncode == 0, restored.stderr
    assert f"backup set {stamp}" in restored.stderr
    assert scalar(pg, live, "SELECT count(*) FROM billing.invoices") == 1
    assert (uploads / PHOTO).read_bytes() == b"\xff\xd8before"


def test_backup_and_restore_refuse_to_leave_local_photos_out(pg: Pg, tmp_path: Path) -> None:
    live, _owner, _app = create_live(pg)

    refused = pg.run("backup.sh", dbname=live, ORDER_UPLOAD_ROOT="")
    assert refused.returncode != 0 and "ORDER_UPLOAD_ROOT is not set" in refused.stderr
    assert not pg.backup_dir.exists() or not list(pg.backup_dir.iterdir())

    db_only = pg.run("backup.sh", dbname=live, ORDER_UPLOAD_ROOT="", ORDER_STORAGE_BACKEND="r2")
    assert db_only.returncode == 0, db_only.stderr
    assert "backing up the database only" in db_only.stderr and len(db_only.stdout.split()) == 1

    no_photos = pg.run("restore.sh", "latest", dbname=live, ORDER_UPLOAD_ROOT=str(tmp_path / "uploads"))
    assert no_photos.returncode != 0 and "this backup set has no photos" in no_photos.stderr
    assert not pg.databases_like(f"{live}_restore_")
