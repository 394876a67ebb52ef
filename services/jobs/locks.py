"""The advisory locks a jobs process takes, all on one Postgres connection of their own.

A lock is session-level (pg_try_advisory_lock): it goes when the run unlocks it, or when the
connection closes with its process, so a runner killed mid-job never blocks the next one. Before, each
running job opened a connection for its lock, so a jobs process held up to one connection per job on
top of its pool (thirteen when every job started in the same loop); now the whole process holds one,
a fixed line of the connection budget (docs/operations.md "Connection budget").

Postgres grants a session a lock it already holds again, so locks taken in this process are also
remembered here: a second run of the same key in the same process is refused as if another runner
held it. If the connection is lost, the locks it held are gone in Postgres while their runs go on (as
they did when each lock had its own connection); the next lock opens a new connection, and a run
whose lock was on the lost one does not unlock anything on the new one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg

from libs.common.logs import get_logger
from libs.common.settings import libpq_url

log = get_logger(__name__)


class AdvisoryLocks:
    def __init__(self, database_url: str, *, application_name: str = "cws-jobs-locks") -> None:
        self._url = libpq_url(database_url)
        self._application_name = application_name
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._generation = 0
        # key -> the generation of the connection it was taken on
        self._held: dict[str, int] = {}
        self._mutex = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        """Try the lock of `key` for the length of the block: yields whether it is held."""
        held = await self._try(key)
        try:
            yield held
        finally:
            if held:
                await self._release(key)

    def held_keys(self) -> set[str]:
        return set(self._held)

    async def close(self) -> None:
        async with self._mutex:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await self._conn.close()
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=5, application_name=self._application_name
            )
            self._generation += 1
        return self._conn

    async def _try(self, key: str) -> bool:
        async with self._mutex:
            if key in self._held:
                return False
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    cursor = await conn.execute(
                        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
                    )
                    row = await cursor.fetchone()
                    break
                except psycopg.OperationalError as error:
                    # A connection that died while idle (a database restart) is found here: once
                    # with a new one, then the error is the caller's (nothing runs).
                    if attempt == 2 or not conn.broken:
                        raise
                    log.warning("job_lock_connection_lost", error=str(error))
            if row and row[0]:
                self._held[key] = self._generation
                return True
            return False

    async def _release(self, key: str) -> None:
        async with self._mutex:
            generation = self._held.pop(key, None)
            conn = self._conn
            if generation != self._generation or conn is None or conn.closed or conn.broken:
                return  # taken on a connection that is gone: Postgres released it then
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
