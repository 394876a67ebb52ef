"""Per org and provider: the last pass, its cursor, counts and error (sync_states).

A pass records its result with `record_pass`; `due` says whether the interval has gone by since the
last pass that finished (success or not, so a failing provider is not hammered every minute)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert

from libs.common.db import Database, UnitOfWork, unit_of_work
from services.integrations.models import sync_states
from services.integrations.sync_types import SyncStateRow

__all__ = ["SyncStateRow", "all_states", "due", "load", "record_pass"]

MAX_ERROR_CHARS = 1000


def _row(org_id: uuid.UUID, provider: str, row: Any) -> SyncStateRow:
    if row is None:
        return SyncStateRow(org_id=org_id, provider=provider)
    return SyncStateRow(
        org_id=row.org_id,
        provider=row.provider,
        account_id=row.account_id,
        cursor=row.cursor,
        last_sync_at=row.last_sync_at,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        counts={str(k): int(v) for k, v in (row.counts or {}).items()},
    )


async def load_in(uow: UnitOfWork, org_id: uuid.UUID, provider: str) -> SyncStateRow:
    row = (
        await uow.session.execute(
            select(sync_states).where(sync_states.c.org_id == org_id, sync_states.c.provider == provider)
        )
    ).first()
    return _row(org_id, provider, row)


async def load(db: Database, org_id: uuid.UUID, provider: str) -> SyncStateRow:
    async with unit_of_work(db, org_id) as uow:
        return await load_in(uow, org_id, provider)


def due(row: SyncStateRow, interval_seconds: float, now: datetime) -> bool:
    return row.last_sync_at is None or now - row.last_sync_at >= timedelta(seconds=interval_seconds)


async def record_pass(
    db: Database,
    org_id: uuid.UUID,
    provider: str,
    account_id: str,
    cursor: str | None,
    counts: dict[str, int],
    error: str,
    *,
    success: bool | None = None,
) -> SyncStateRow:
    """The pass is over: last_sync_at now; on success (no `error`, unless success says otherwise)
    last_success_at too; cursor None keeps the stored one (a failed pass resumes where it was)."""
    succeeded = (not error) if success is None else success
    now = func.now()
    values: dict[str, Any] = {
        "account_id": account_id,
        "last_sync_at": now,
        "counts": {k: int(v) for k, v in counts.items()},
        "last_error": error[:MAX_ERROR_CHARS],
        "updated_at": now,
    }
    if cursor is not None:
        values["cursor"] = cursor
    if succeeded:
        values["last_success_at"] = now
    if error:
        values["last_error_at"] = now
    async with unit_of_work(db, org_id) as uow:
        statement = insert(sync_states).values(org_id=org_id, provider=provider, **values)
        statement = statement.on_conflict_do_update(index_elements=["org_id", "provider"], set_=values)
        await uow.session.execute(statement)
        return await load_in(uow, org_id, provider)


async def reset_cursor(uow: UnitOfWork, org_id: uuid.UUID, provider: str, account_id: str) -> None:
    """A new account (another calendar or company): the next pass starts from no cursor."""
    statement = insert(sync_states).values(org_id=org_id, provider=provider, account_id=account_id, cursor="")
    await uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=["org_id", "provider"],
            set_={"account_id": account_id, "cursor": "", "updated_at": func.now()},
        )
    )


async def all_states(db: Database, provider: str = "") -> list[SyncStateRow]:
    """Every org's state (the owner-run integrations.all_sync_states: no org context needed)."""
    async with unit_of_work(db) as uow:
        rows = (
            await uow.session.execute(
                text(
                    "SELECT org_id, provider, '' AS account_id, cursor, last_sync_at, last_success_at, "
                    "last_error, last_error_at, counts FROM integrations.all_sync_states(:provider)"
                ),
                {"provider": provider},
            )
        ).all()
    return [_row(row.org_id, row.provider, row) for row in rows]
