"""Readiness checks a service runs: its database, its migrations against the code's Alembic head,
and NATS. The same results feed the gRPC health status, the service's /readyz and the gateway's."""

from __future__ import annotations

import ast
import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from libs.common.bus import EventBus
from libs.common.db import Database

# Whether the connected role is a runtime role row-level security binds: not a superuser, no
# BYPASSRLS, owning nothing in the service's schema (libs/common/migrate.py refuses to make it so).
CONFINED_ROLE = text(
    """
    SELECT r.rolname AS role,
           NOT (r.rolsuper OR r.rolbypassrls)
           AND NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = :schema AND n.nspowner = r.oid)
           AND NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = :schema AND c.relowner = r.oid) AS confined
      FROM pg_roles r WHERE r.rolname = current_user
    """
)


@dataclass
class CheckResult:
    name: str
    ok: bool
    ms: float
    detail: dict[str, Any] = field(default_factory=dict)


def _revision_ids(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """A migration file's `revision` and `down_revision`s, read from its source without importing it."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            found[target.id] = ast.literal_eval(node.value)
    revision, down = found.get("revision"), found.get("down_revision")
    if not isinstance(revision, str):
        return None
    downs = (down,) if isinstance(down, str) else tuple(down) if isinstance(down, (tuple, list)) else ()
    return revision, tuple(str(d) for d in downs)


def alembic_head(migrations_dir: Path) -> str:
    """The migrations' head revision. Read from the files' `revision = ...` lines: importing Alembic
    (and through it mako) to ask it costs about 0.3 s of CPU at every process start, and every test
    that starts a service pays it. Anything this simple reading cannot settle (no single head, a
    revision computed at import) is asked of Alembic itself; a test holds the two to the same answer."""
    revisions: dict[str, tuple[str, ...]] = {}
    for path in sorted((migrations_dir / "versions").glob("*.py")):
        try:
            ids = _revision_ids(path)
        except (SyntaxError, ValueError):
            ids = None
        if ids is None:
            return _alembic_head_by_alembic(migrations_dir)
        revisions[ids[0]] = ids[1]
    referenced = {down for downs in revisions.values() for down in downs}
    heads = [revision for revision in revisions if revision not in referenced]
    return heads[0] if len(heads) == 1 else _alembic_head_by_alembic(migrations_dir)


def _alembic_head_by_alembic(migrations_dir: Path) -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    head = ScriptDirectory.from_config(config).get_current_head()
    return head or ""


class Readiness:
    def __init__(self, *, service: str, db: Database, bus: EventBus, migrations_dir: Path) -> None:
        self.service = service
        self.db = db
        self.bus = bus
        self.expected_head = alembic_head(migrations_dir)
        self.last: list[CheckResult] = []

    @property
    def ok(self) -> bool:
        return bool(self.last) and all(check.ok for check in self.last)

    async def run(self) -> list[CheckResult]:
        self.last = list(await asyncio.gather(self._database(), self._migrations(), self._nats()))
        return self.last

    async def _database(self) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(2):
                async with self.db.engine.connect() as conn:
                    row = (await conn.execute(CONFINED_ROLE, {"schema": self.db.schema})).one()
        except Exception as exc:  # any failure means not ready; the reason is shown to operators
            return CheckResult(
                "db", False, _ms(started), {"message": f"database unreachable: {type(exc).__name__}"}
            )
        if not row.confined:
            # A runtime connection that owns tables (or bypasses RLS) sees every org through the
            # owner-only policies: serve nothing until DATABASE_URL names the runtime role.
            return CheckResult(
                "db",
                False,
                _ms(started),
                {
                    "message": "the role DATABASE_URL connects as owns objects of schema "
                    f"{self.db.schema} or bypasses row-level security: connect as the runtime role "
                    "(DATABASE_APP_ROLE) and migrate as the owner role (MIGRATIONS_DATABASE_URL)"
                },
            )
        return CheckResult("db", True, _ms(started), {"message": "database reachable"})

    async def _migrations(self) -> CheckResult:
        started = time.perf_counter()
        current = ""
        try:
            async with asyncio.timeout(2):
                async with self.db.engine.connect() as conn:
                    current = (
                        await conn.scalar(text(f'SELECT version_num FROM "{self.db.schema}".alembic_version'))
                    ) or ""
        except Exception:  # table missing means nothing migrated yet
            current = ""
        in_sync = bool(current) and current == self.expected_head
        return CheckResult(
            "migrations",
            in_sync,
            _ms(started),
            {
                "message": "migrations in sync" if in_sync else "migrations pending",
                "migrations_current": in_sync,
                "current_version": current,
                "expected_head": self.expected_head,
            },
        )

    async def _nats(self) -> CheckResult:
        started = time.perf_counter()
        ok = self.bus.is_connected
        return CheckResult("nats", ok, _ms(started), {"message": "connected" if ok else "not connected"})


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
