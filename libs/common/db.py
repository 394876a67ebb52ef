"""Database access: one async engine per process, and the unit of work every change goes through.

The unit of work owns the transaction. It sets the org for row-level security with
`set_config('app.current_org_id', ..., true)` (transaction-local, so a pooled connection never
carries one request's org into the next), collects the domain events the work raises, writes them
to the service's event outbox in the same transaction, and commits or rolls back as one.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from cws.common.v1 import audit_pb2
from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.elements import TextClause

from libs.common import context as request_context
from libs.common import tracing
from libs.common.errors import Unavailable
from libs.common.event_types import Event, M, audit_event
from libs.common.logs import get_logger
from libs.common.settings import libpq_url, sqlalchemy_url

log = get_logger(__name__)

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ORG_SETTING = "app.current_org_id"
# The RLS predicate every tenant table uses. A setting that was used once in a session reads back
# as '' rather than NULL, hence NULLIF.
ORG_PREDICATE = "org_id = NULLIF(current_setting('app.current_org_id', true), '')::uuid"
# Transaction-local (is_local true): a pooled connection never carries one unit's org into the next.
# One statement object for every unit of work (not parsed again per call).
_SET_ORG = text("SELECT set_config(:name, :org, true)")


@dataclass(frozen=True)
class OutboxTables:
    outbox: Table
    inbox: Table
    dead_letters: Table


def service_metadata(schema: str) -> tuple[MetaData, OutboxTables]:
    """The MetaData of one service's schema, with the event tables every service has.

    The event tables are infrastructure, not tenant data: the relay and consumers read them across
    orgs, and no endpoint serves them, so they carry org_id for routing but no RLS policy.
    """
    metadata = MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
    outbox = Table(
        "event_outbox",
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True),
        Column("subject", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("org_id", UUID(as_uuid=True), nullable=True),
        Column("request_id", String(100), nullable=False, server_default=""),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text, nullable=True),
        # The W3C traceparent of the span that raised the event (tracing on): the relay publishes
        # later, from another task, and carries it on in the message's headers.
        Column("trace_context", String(64), nullable=True),
        Index("ix_event_outbox_unpublished", "created_at", postgresql_where=text("published_at IS NULL")),
    )
    inbox = Table(
        "event_inbox",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(100), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    dead_letters = Table(
        "event_dead_letters",
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True),
        Column("consumer", String(100), nullable=False),
        Column("event_id", String(100), nullable=False),
        Column("subject", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False, server_default="{}"),
        Column("org_id", UUID(as_uuid=True), nullable=True),
        Column("error", Text, nullable=False),
        Column("deliveries", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("replayed_at", DateTime(timezone=True), nullable=True),
    )
    return metadata, OutboxTables(outbox=outbox, inbox=inbox, dead_letters=dead_letters)


def outbox_channel(schema: str) -> str:
    return f"cws_outbox_{schema}"


async def wake_on_notify(
    db: Database, channel: str, wake: asyncio.Event, max_retry_seconds: float = 5.0
) -> None:
    """LISTEN on `channel` for as long as the task runs, setting `wake` on every notification (and once
    on each (re)connect, to catch up on what was notified while not listening). A lost connection is
    retried at once and then with doubling pauses up to `max_retry_seconds`, never at the caller's
    poll interval: a worker polling hourly must not go deaf for an hour after a database restart."""
    delay = 0.1
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(db.url), autocommit=True, application_name=f"cws-{db.schema}-listen"
            ) as conn:
                await conn.execute(f'LISTEN "{channel}"')
                delay = 0.1
                wake.set()
                async for _ in conn.notifies():
                    wake.set()
        except Exception as exc:  # connection lost: logged, retried; never ends the task
            log.warning("listen_lost", channel=channel, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry_seconds)


# SQLSTATEs that say the server is going away or not yet back: 57P01 admin_shutdown (a fast stop
# ends the session), 57P02 crash_shutdown, 57P03 cannot_connect_now (shutting down, starting up,
# in recovery). Class 08 is every connection exception.
_SERVER_AWAY = {"57P01", "57P02", "57P03"}


def database_away(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached or dropped the connection (a restart,
    a failover, a network cut), as opposed to a fault of the request or the code: the caller may
    simply try again. A libpq error with no SQLSTATE is one the server never answered (refused,
    closed mid-query); a pool checkout that times out waits on connections that cannot be made."""
    if isinstance(error, sa_exc.TimeoutError):
        return True
    cause: BaseException | None = error
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        cause = error.orig
    if not isinstance(cause, psycopg.OperationalError):
        return False
    state = cause.sqlstate
    return state is None or state.startswith("08") or state in _SERVER_AWAY


async def unavailable_if_database_away(call: Awaitable[T]) -> T:
    """Await an RPC handler; a database that is away becomes a typed Unavailable (gRPC UNAVAILABLE,
    503 at the gateway) instead of an unexpected INTERNAL error, so a client retries rather than
    reports a bug. Any other error passes through unchanged."""
    try:
        return await call
    except Exception as error:
        if not database_away(error):
            raise
        log.warning("database_unavailable", error=f"{type(error).__name__}: {error}"[:300])
        raise Unavailable(
            "the database is unavailable; try again shortly", code="database_unavailable"
        ) from error


class Database:
    """The process's engine and session factory, created at start-up inside the running loop."""

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        tables: OutboxTables,
        pool_size: int = 7,
        max_overflow: int = 0,
        pool_timeout: float = 5,
        statement_timeout_ms: int = 5000,
        audit_admin_writes: bool = False,
    ) -> None:
        self.url = url
        self.schema = schema
        self.tables = tables
        # Looked up at call time: with tracing on, the SQLAlchemy instrumentation has wrapped it.
        self.engine: AsyncEngine = sa_asyncio.create_async_engine(
            sqlalchemy_url(url),
            pool_size=pool_size,
            # A steady pool: overflow connections are opened and closed per burst, which costs more
            # than they save; size DATABASE_POOL_SIZE to the concurrency a process serves instead.
            # Pool plus overflow is this process's share of the connection budget.
            max_overflow=max_overflow,
            # No ping per checkout (a round trip per unit of work): a connection that died meanwhile (a
            # database restart, a failover) fails its first statement instead, which invalidates the
            # whole pool, and unit_of_work retries that first statement once on a fresh connection.
            pool_pre_ping=False,
            pool_timeout=pool_timeout,
            connect_args={
                "options": f"-c statement_timeout={statement_timeout_ms}",
                "connect_timeout": 5,
                # Who holds which connection, in pg_stat_activity (docs/operations.md).
                "application_name": f"cws-{schema}",
            },
        )
        # With audit_admin_writes, every unit of work in which an admin changed rows raises
        # cws.<schema>.audit.recorded in the same transaction; iam turns it into admin_audit_logs.
        self.audit_admin_writes = audit_admin_writes
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=_WriteTrackingSession
        )

    async def dispose(self) -> None:
        await self.engine.dispose()


@dataclass
class PendingEvent:
    subject: str
    message: Message
    org_id: uuid.UUID | None


@dataclass
class UnitOfWork:
    session: AsyncSession
    org_id: uuid.UUID | None
    db: Database
    events: list[PendingEvent] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # What an audited admin write changed, when the domain says (set by `audit_change`).
    audit_before: dict[str, Any] | None = None
    audit_after: dict[str, Any] | None = None

    def audit_change(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Attach before/after to this unit's admin audit record (cws.<service>.audit.recorded). The
        action is audited even when it changed nothing (a reconcile run twice): who looked matters."""
        self.audit_before, self.audit_after = before, after
        self.session.info["wrote"] = True

    def add_event(self, event: Event[M], message: M, org_id: uuid.UUID | None = None) -> None:
        """Record a domain event; it is written to the outbox when the work commits, never before.
        A message of another type than the event's is refused here, at the line that raised it."""
        event.check(message)
        self.events.append(PendingEvent(event.subject, message, org_id or self.org_id))

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this work has committed (never if it rolls back): for in-process caches,
        which must not forget an entry while readers can still see the old row."""
        self.after_commit.append(callback)

    async def set_org(self, org_id: uuid.UUID) -> None:
        """Switch the org for the rest of this transaction (sign-up, login after an email lookup)."""
        self.org_id = org_id
        await self.session.execute(_SET_ORG, {"name": ORG_SETTING, "org": str(org_id)})

    def _audit_admin_write(self) -> None:
        ctx = request_context._current.get()
        call = request_context.current_call()
        if not (
            self.db.audit_admin_writes and self.session.info.get("wrote") and request_context.is_admin(ctx)
        ):
            return
        assert ctx is not None
        method, request = call if call else ("", None)
        resource_type, resource_id = _resource_of(request)
        record = audit_pb2.AdminAuditRecorded(
            org_id=ctx.org_id,
            actor=ctx.principal_id,
            role=ctx.role,
            auth_method=_AUDIT_AUTH_LABELS.get(ctx.auth_method, "jwt"),
            action=f"{self.db.schema}.{method.rsplit('/', 1)[-1]}",
            resource_type=resource_type,
            resource_id=resource_id,
            request_id=ctx.request_id,
            client_ip=ctx.client_ip,
            break_glass_session_id=ctx.break_glass_session_id if ctx.break_glass else "",
            break_glass_reason=ctx.break_glass_reason if ctx.break_glass else "",
        )
        if self.audit_before is not None:
            record.before.update(self.audit_before)
        if self.audit_after is not None:
            record.after.update(self.audit_after)
        self.add_event(audit_event(self.db.schema), record, uuid.UUID(ctx.org_id) if ctx.org_id else None)

    async def _flush_events(self) -> None:
        self._audit_admin_write()
        if not self.events:
            return
        ctx = request_context._current.get()
        request_id = ctx.request_id if ctx else ""
        trace_context = tracing.current_traceparent()
        now = datetime.now(UTC)
        # The rows and the NOTIFY in one statement: one round trip per unit of work that raises
        # events, not two. The NOTIFY reaches LISTENers only when this transaction commits, which is
        # exactly when the relay may publish.
        params: dict[str, Any] = {
            "request_id": request_id,
            "trace_context": trace_context,
            "channel": outbox_channel(self.db.schema),
        }
        for position, pending in enumerate(self.events):
            params[f"id{position}"] = uuid.uuid4()
            params[f"subject{position}"] = pending.subject
            params[f"payload{position}"] = pending.message.SerializeToString()
            params[f"org_id{position}"] = pending.org_id
            # The relay publishes in (created_at, id) order and ids are random: a microsecond apart
            # keeps one unit's events in the order they were raised.
            params[f"created_at{position}"] = now + timedelta(microseconds=position)
        outbox = self.db.tables.outbox
        await self.session.execute(
            _insert_outbox_and_notify(f'"{outbox.schema}"."{outbox.name}"', len(self.events)), params
        )


@functools.lru_cache(maxsize=256)
def _insert_outbox_and_notify(table: str, rows: int) -> TextClause:
    """`rows` outbox rows and a NOTIFY in one statement (a data-modifying WITH runs whether or not
    the query reads it). Text, built once per table and row count: SQLAlchemy compiles the same
    statement made of insert().values().cte() on every call, which cost more CPU (0.5 ms per unit
    of work, measured) than the round trip it saves; this costs 0.4 ms less than the two statements
    it replaced. Every column it leaves out has a server default."""
    values = ", ".join(
        f"(CAST(:id{n} AS uuid), :subject{n}, :payload{n}, CAST(:org_id{n} AS uuid), :request_id,"
        f" :created_at{n}, :trace_context)"
        for n in range(rows)
    )
    return text(
        f"WITH written AS (INSERT INTO {table} (id, subject, payload, org_id, request_id, created_at,"
        f" trace_context) VALUES {values}) SELECT pg_notify(:channel, '')"
    )


_AUDIT_AUTH_LABELS = {
    request_context.AuthMethod.Value("AUTH_METHOD_BASIC"): "basic",
    request_context.AuthMethod.Value("AUTH_METHOD_JWT"): "jwt",
    request_context.SERVICE: "service",
}


class _WriteTrackingSession(Session):
    """Notes in `info` whether the session ran any INSERT, UPDATE or DELETE."""


@event.listens_for(_WriteTrackingSession, "do_orm_execute")
def _note_writes(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


def _resource_of(request: Message | None) -> tuple[str, str]:
    """The first `<thing>_id` the request names: ("booking", "<uuid>") for AssignBooking."""
    if request is None:
        return "", ""
    for descriptor, value in request.ListFields():
        if descriptor.name.endswith("_id") and isinstance(value, str) and value:
            return descriptor.name[: -len("_id")], value
    return "", ""


async def _begin_in_org(uow: UnitOfWork, org_id: uuid.UUID) -> None:
    """The transaction's first statement: its org. The pool does not ping a connection before handing
    it out, so a connection the server ended meanwhile (a restart) fails here, before anything of the
    unit was done; that error invalidates the pool (every connection opened before it is replaced on
    its next checkout), and the statement is tried once more on a fresh connection. A second failure
    is the database away (a typed 503 at the interceptor)."""
    try:
        await uow.set_org(org_id)
    except sa_exc.DBAPIError as error:
        if not error.connection_invalidated:  # not a pooled connection that died: no retry
            raise
        log.info("stale_connection_replaced", error=f"{type(error).__name__}: {error}"[:200])
        await uow.session.rollback()  # releases the dead connection; the next statement checks out anew
        await uow.set_org(org_id)


@asynccontextmanager
async def unit_of_work(db: Database, org_id: uuid.UUID | str | None = None) -> AsyncIterator[UnitOfWork]:
    """Open a transaction in the given org (or none: then tenant tables show no rows)."""
    async with db.sessions() as session:
        uow = UnitOfWork(session=session, org_id=None, db=db)
        if org_id:
            await _begin_in_org(uow, uuid.UUID(str(org_id)))
        # Committed here, rolled back by the session's close on any error (or a cancellation).
        yield uow
        await uow._flush_events()
        await session.commit()
    for callback in uow.after_commit:
        callback()
