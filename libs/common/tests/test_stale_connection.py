"""The pool hands out connections without pinging them first (issue 15: a round trip saved per unit of
work). A pooled connection the server ended meanwhile (a restart, a failover, an idle timeout) must
then cost no request an error when the unit of work starts in an org: its first statement is tried
once more on a fresh connection. A unit without an org fails once, typed as the database away (503),
and the next one gets a fresh connection. Real Postgres; the backend is ended with
pg_terminate_backend, as a fast shutdown ends every session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from libs.common.db import Database, database_away, service_metadata, unit_of_work

_, TABLES = service_metadata("unused")


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema="public", tables=TABLES, pool_size=1, max_overflow=0)
    yield database
    await database.dispose()


async def end_pooled_backend(db: Database, admin_url: str) -> int:
    """Open the pool's one connection, then end its backend from outside; its pid."""
    async with db.sessions() as session:
        pid = int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    return pid


async def test_the_pool_does_not_ping() -> None:
    database = Database("postgresql://cws_app@127.0.0.1:1/cws", schema="public", tables=TABLES)
    try:
        assert database.engine.pool._pre_ping is False
    finally:
        await database.dispose()


async def test_a_unit_in_an_org_survives_a_connection_the_server_ended(db: Database, stack: Any) -> None:
    dead = await end_pooled_backend(db, stack.admin_url)
    org = uuid.uuid4()
    async with unit_of_work(db, org) as uow:
        pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
        setting = await uow.session.scalar(text("SELECT current_setting('app.current_org_id', true)"))
    assert pid != dead
    assert setting == str(org)  # the org is set in the transaction that ran, on the new connection
    # Transaction-local as before: the next unit on this connection starts without it.
    async with unit_of_work(db) as uow:
        assert not await uow.session.scalar(text("SELECT current_setting('app.current_org_id', true)"))


async def test_a_unit_without_an_org_fails_once_then_gets_a_fresh_connection(
    db: Database, stack: Any
) -> None:
    dead = await end_pooled_backend(db, stack.admin_url)
    with pytest.raises(Exception) as raised:
        async with unit_of_work(db) as uow:
            await uow.session.execute(text("SELECT 1"))
    assert database_away(raised.value), repr(raised.value)
    async with unit_of_work(db) as uow:
        assert await uow.session.scalar(text("SELECT pg_backend_pid()")) != dead
