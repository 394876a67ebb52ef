"""The storage janitor: deletes tombstoned objects from the backend, with retries and backoff. No gRPC.

Called by the jobs service's `storage-janitor` job (RunStorageJanitor, one call, no org). One call:
1. leases up to `batch` due tombstones of this process's backend across orgs through the SECURITY
   DEFINER media.claim_tombstones (FOR UPDATE SKIP LOCKED; next_attempt_at pushed past a lease), which
   hands back ids and org ids only, so two runners never delete the same key at once;
2. per org, inside that org's unit of work (RLS as everywhere), reads the leased tombstones and deletes
   each object by its reference (`backend_ref`, else the key; storage.delete is idempotent: an object
   already gone counts as deleted), with no transaction open while the backend is called;
3. removes the tombstones that succeeded; on the others records attempts + 1, last_error and
   next_attempt_at = now + backoff (BASE * 2^(attempts-1), capped at MAX).
A backend that is down therefore loses nothing: the tombstones stay, and a later run after the backend
returns deletes the objects. Tombstones of another backend (the deployment switched backends) are left
for a media process configured with that backend.

The retry queue (tombstones with attempts > 0, every org) is exported as the gauge
`media_storage_delete_retry_queue`, refreshed by a background loop through the SECURITY DEFINER
media.tombstone_queue() (migration 0003), which returns two counts and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import delete, func, select, text, update

from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from libs.common.logs import get_logger
from services.media.models import photo_tombstones
from services.media.storage.base import Storage

log = get_logger(__name__)

RETRY_QUEUE = Gauge(
    "media_storage_delete_retry_queue",
    "Tombstoned photo objects whose delete from the storage backend failed at least once (every org)",
)
# How long a leased tombstone is left alone by other runners while this one deletes it.
LEASE_SECONDS = 300
GAUGE_REFRESH_SECONDS = 30.0
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Backoff:
    base_seconds: int
    max_seconds: int

    def after(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failure: base, 2x, 4x, ... up to the cap."""
        exponent = min(max(attempts - 1, 0), 30)
        return timedelta(seconds=min(self.base_seconds * 2**exponent, self.max_seconds))


@dataclass(frozen=True)
class JanitorResult:
    deleted: int
    failed: int
    remaining: int
    retrying: int


async def run(db: Database, storage: Storage, *, batch: int, backoff: Backoff) -> JanitorResult:
    leased = await _claim(db, storage.name, batch)
    by_org: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for tombstone_id, org_id in leased:
        by_org[org_id].append(tombstone_id)
    deleted = failed = 0
    for org_id, ids in by_org.items():
        done, errors = await _work_off(db, storage, org_id, ids, backoff)
        deleted, failed = deleted + done, failed + errors
    total, retrying = await queue_size(db)
    if leased:
        log.info("storage_janitor_ran", deleted=deleted, failed=failed, remaining=total, retrying=retrying)
    RETRY_QUEUE.set(retrying)
    return JanitorResult(deleted=deleted, failed=failed, remaining=total, retrying=retrying)


async def _claim(db: Database, backend: str, batch: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    async with unit_of_work(db) as uow:
        rows = await uow.session.execute(
            text("SELECT id, org_id FROM media.claim_tombstones(:backend, :batch, :lease)"),
            {"backend": backend, "batch": batch, "lease": LEASE_SECONDS},
        )
        return [(row.id, row.org_id) for row in rows]


async def _work_off(
    db: Database, storage: Storage, org_id: uuid.UUID, ids: list[uuid.UUID], backoff: Backoff
) -> tuple[int, int]:
    """Delete the leased tombstones' objects of one org; (deleted, failed)."""
    with _in_org(org_id):
        return await _delete_objects(db, storage, org_id, ids, backoff)


@contextlib.contextmanager
def _in_org(org_id: uuid.UUID) -> Iterator[None]:
    """The caller's context (jobs, with no org) narrowed to `org_id` while that org's tombstones are
    worked off, so the admin audit record of the writes names the org they were made in."""
    caller = request_context._current.get()
    if caller is None:
        yield
        return
    narrowed = request_context.RequestContext()
    narrowed.CopyFrom(caller)
    narrowed.org_id = str(org_id)
    token = request_context.set_current(narrowed)
    try:
        yield
    finally:
        request_context.reset_current(token)


async def _delete_objects(
    db: Database, storage: Storage, org_id: uuid.UUID, ids: list[uuid.UUID], backoff: Backoff
) -> tuple[int, int]:
    async with unit_of_work(db, org_id) as uow:
        rows = (
            await uow.session.execute(
                select(
                    photo_tombstones.c.id,
                    photo_tombstones.c.storage_key,
                    photo_tombstones.c.backend_ref,
                    photo_tombstones.c.attempts,
                )
                .where(photo_tombstones.c.id.in_(ids), photo_tombstones.c.org_id == org_id)
                .order_by(photo_tombstones.c.created_at)
            )
        ).all()
    done: list[uuid.UUID] = []
    failed: list[tuple[Any, str]] = []
    for tombstone in rows:
        try:
            # The backend's own reference when it has one (Cloudflare Images' id), else the key.
            await storage.delete(tombstone.backend_ref or tombstone.storage_key)
        except Exception as error:  # any failure is retried later; the tombstone says what it was
            failed.append((tombstone, f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]))
            log.warning(
                "storage_delete_failed",
                storage_key=tombstone.storage_key,
                backend_ref=tombstone.backend_ref,
                backend=storage.name,
                attempts=tombstone.attempts + 1,
                error=repr(error),
            )
        else:
            done.append(tombstone.id)
    async with unit_of_work(db, org_id) as uow:
        if done:
            await uow.session.execute(delete(photo_tombstones).where(photo_tombstones.c.id.in_(done)))
        for tombstone, reason in failed:
            attempts = tombstone.attempts + 1
            await uow.session.execute(
                update(photo_tombstones)
                .where(photo_tombstones.c.id == tombstone.id)
                .values(
                    attempts=attempts,
                    last_error=reason,
                    next_attempt_at=func.now() + backoff.after(attempts),
                )
            )
    return len(done), len(failed)


async def queue_size(db: Database) -> tuple[int, int]:
    """(tombstones waiting, of which retrying) across orgs: counts only, through the definer function."""
    async with unit_of_work(db) as uow:
        row = (await uow.session.execute(text("SELECT total, retrying FROM media.tombstone_queue()"))).one()
        return int(row.total), int(row.retrying)


async def refresh_retry_gauge(db: Database, interval: float = GAUGE_REFRESH_SECONDS) -> None:
    """Background loop: keep the gauge at the current retry queue size (a count across orgs)."""
    while True:
        try:
            RETRY_QUEUE.set((await queue_size(db))[1])
        except Exception as error:  # database away: keep the last value, try again next tick
            log.warning("retry_gauge_refresh_failed", error=repr(error))
        await asyncio.sleep(interval)
