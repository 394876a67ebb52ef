"""Which database errors mean "the database is away, try again" (a typed Unavailable: gRPC
UNAVAILABLE, 503 at the gateway) and which stay faults of the request or the code, each raised by
a real Postgres or a real refused connection. The whole path under a real restart is
tests/faults/test_postgres_restart.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import text

from libs.common.db import Database, database_away, service_metadata, unavailable_if_database_away
from libs.common.errors import Unavailable
from tools.devstack import free_port

_, TABLES = service_metadata("unused")  # no table is touched: these tests run bare statements


async def failure(db: Database, statement: str) -> BaseException:
    """The error `statement` raises on a session of `db`."""
    with pytest.raises(Exception) as raised:
        async with db.sessions() as session:
            await session.execute(text(statement))
    return raised.value


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema="public", tables=TABLES, pool_size=1, statement_timeout_ms=100)
    yield database
    await database.dispose()


async def test_a_refused_connection_is_the_database_away() -> None:
    nowhere = Database(
        f"postgresql://cws_app@127.0.0.1:{free_port()}/cws", schema="public", tables=TABLES, pool_size=1
    )
    try:
        error = await failure(nowhere, "SELECT 1")
    finally:
        await nowhere.dispose()
    assert database_away(error), repr(error)
    with pytest.raises(psycopg.OperationalError) as raw:
        await psycopg.AsyncConnection.connect(f"postgresql://x@127.0.0.1:{free_port()}/x")
    assert database_away(raw.value)


async def test_a_session_the_server_ends_is_the_database_away(db: Database, stack: Any) -> None:
    """What a fast shutdown does to every open session (57P01 admin_shutdown)."""
    async with db.sessions() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(Exception) as raised:
            await session.execute(text("SELECT 1"))
    assert database_away(raised.value), repr(raised.value)


async def test_faults_of_the_statement_are_not_the_database_away(db: Database) -> None:
    # A statement timeout (57014) is a slow query to fix, not an outage to wait out.
    assert not database_away(await failure(db, "SELECT pg_sleep(1)"))
    assert not database_away(await failure(db, "SELECT 1 / 0"))
    assert not database_away(await failure(db, "SELECT * FROM no_such_table"))
    assert not database_away(RuntimeError("not a database error"))


async def test_a_handler_whose_database_is_away_answers_unavailable(db: Database) -> None:
    async def handler() -> None:
        await psycopg.AsyncConnection.connect(f"postgresql://x@127.0.0.1:{free_port()}/x")

    with pytest.raises(Unavailable) as raised:
        await unavailable_if_database_away(handler())
    assert raised.value.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.code == "database_unavailable"
    assert "127.0.0.1" not in raised.value.detail  # no connection details reach a client

    # Anything else passes through as it was raised (and stays INTERNAL at the interceptor).
    async def divides() -> None:
        async with db.sessions() as session:
            await session.execute(text("SELECT 1 / 0"))

    with pytest.raises(Exception) as other:
        await unavailable_if_database_away(divides())
    assert not isinstance(other.value, Unavailable)
    assert await unavailable_if_database_away(asyncio.sleep(0, "answer")) == "answer"
