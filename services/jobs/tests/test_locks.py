"""The process's job locks on one connection (services/jobs/locks.py): exclusive across processes and
within one, one connection however many locks, released on unlock, and a lost connection replaced."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from services.jobs.locks import AdvisoryLocks


def _key() -> str:
    return f"cws.jobs:test-locks:{uuid.uuid4().hex}"


async def _lock_connections(admin_url: str, name: str) -> int:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def test_many_locks_share_one_connection_and_exclude_each_other(stack: Any) -> None:
    name = f"cws-locks-{uuid.uuid4().hex[:8]}"
    mine, theirs = AdvisoryLocks(stack.app_url, application_name=name), AdvisoryLocks(stack.app_url)
    first, second = _key(), _key()
    try:
        async with mine.hold(first) as a, mine.hold(second) as b:
            assert a and b
            assert await _lock_connections(stack.admin_url, name) == 1
            # The same key again in this process is refused, though Postgres would grant it again.
            async with mine.hold(first) as again:
                assert not again
            # Another process (another connection) cannot take it either.
            async with theirs.hold(first) as other:
                assert not other
        # Released on leaving the block: the other side takes both now.
        async with theirs.hold(first) as other_first, theirs.hold(second) as other_second:
            assert other_first and other_second
        assert mine.held_keys() == set()
    finally:
        await mine.close()
        await theirs.close()
    assert await _lock_connections(stack.admin_url, name) == 0


async def test_a_terminated_lock_connection_is_replaced_and_its_locks_are_gone(stack: Any) -> None:
    name = f"cws-locks-{uuid.uuid4().hex[:8]}"
    locks, other = AdvisoryLocks(stack.app_url, application_name=name), AdvisoryLocks(stack.app_url)
    key, later = _key(), _key()
    try:
        async with locks.hold(key) as held:
            assert held
            async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
                    (name,),
                )
            # The lock died with its connection: another runner may take it (as before, when each
            # lock had a connection of its own that could die).
            async with other.hold(key) as taken_elsewhere:
                assert taken_elsewhere
            # The next lock of this process opens a new connection rather than failing.
            async with locks.hold(later) as next_held:
                assert next_held
                assert await _lock_connections(stack.admin_url, name) == 1
        # Leaving the first block unlocked nothing on the new connection: `later` was released by its
        # own block, and `key` is free.
        async with other.hold(later) as free_later:
            assert free_later
    finally:
        await locks.close()
        await other.close()
