"""What media holds about a person, for seed 002's data export/delete playbook (issue 13). No gRPC here.

Media knows a person only through their bookings (booking resolved them: Person.booking_ids): the
bookings' photos and photo consents. Nothing else here is about a client.

Export: the photos' metadata (never a storage key, a link or a token) and the consents.

Erasure, one idempotent, resumable step:
1. every live photo of the bookings is deleted exactly as an admin deletes one (review.delete: soft
   delete, a tombstone for the storage janitor, `cws.media.photo.deleted`), one unit of work each, so
   a run cut short keeps what it did and the next run finishes the rest;
2. in one unit of work: the review notes (free text a reviewer wrote about the job) are cleared,
   principals that are emails (a client acting from the portal) become ERASED, an object still known
   by a legacy key gets tombstones for that key's spellings too, the consents go (`granted_by` may be
   the client's email), and the published events and dead letters that mention the person are
   forgotten. Events not yet published are left for the relay: the step answers a pending reason and
   the driver runs it again later."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import NotFound
from libs.common.privacy import ERASED, forget_published_events, needles, uuids
from services.media import review
from services.media.models import order_photos, photo_consents, photo_tombstones
from services.media.storage import legacy_candidates
from services.media.storage.errors import InvalidStorageKey

PHOTOS = "photos"
CONSENTS = "photo_consents"


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def export(db: Database, org_id: uuid.UUID, person: Person) -> dict[str, list[dict[str, Any]]]:
    """The person's photos (deleted ones too, with when) and consents, oldest first: metadata only."""
    booking_ids = uuids(person.booking_ids)
    if not booking_ids:
        return {PHOTOS: [], CONSENTS: []}
    async with unit_of_work(db, org_id) as uow:
        photos = (
            await uow.session.execute(
                select(
                    order_photos.c.id,
                    order_photos.c.booking_id,
                    order_photos.c.status,
                    order_photos.c.mime,
                    order_photos.c.bytes,
                    order_photos.c.width,
                    order_photos.c.height,
                    order_photos.c.created_at,
                    order_photos.c.reviewed_at,
                    order_photos.c.deleted_at,
                )
                .where(order_photos.c.org_id == org_id, order_photos.c.booking_id.in_(booking_ids))
                .order_by(order_photos.c.created_at, order_photos.c.id)
            )
        ).all()
        consents = (
            await uow.session.execute(
                select(photo_consents)
                .where(photo_consents.c.org_id == org_id, photo_consents.c.booking_id.in_(booking_ids))
                .order_by(photo_consents.c.granted_at, photo_consents.c.booking_id)
            )
        ).all()
    return {
        PHOTOS: [
            {
                "id": str(row.id),
                "booking_id": str(row.booking_id),
                "status": row.status,
                "mime": row.mime,
                "bytes": row.bytes,
                "width": row.width,
                "height": row.height,
                "created_at": _time(row.created_at),
                "reviewed_at": _time(row.reviewed_at),
                "deleted_at": _time(row.deleted_at),
            }
            for row in photos
        ],
        CONSENTS: [
            {
                "booking_id": str(row.booking_id),
                "granted": row.granted,
                "granted_at": _time(row.granted_at),
                "withdrawn_at": _time(row.withdrawn_at),
                "source": row.source,
            }
            for row in consents
        ],
    }


@dataclass(frozen=True)
class Erased:
    changed: int
    # Empty when the step is done; else why it must run again.
    pending_reason: str = ""


async def erase(db: Database, org_id: uuid.UUID, person: Person) -> Erased:
    booking_ids = uuids(person.booking_ids)
    changed = 0
    for photo_id in await _live_photos(db, org_id, booking_ids):
        try:
            await review.delete(db, org_id, photo_id)
        except NotFound:
            continue  # deleted meanwhile (an operator, a concurrent run): nothing left to do for it
        changed += 1
    async with unit_of_work(db, org_id) as uow:
        if booking_ids:
            changed += await _clear_notes(uow, booking_ids)
            changed += await _erase_email_principals(uow, booking_ids)
            changed += await _tombstone_legacy_objects(uow, booking_ids)
            changed += await _delete_consents(uow, booking_ids)
        forgotten = await forget_published_events(uow.session, db.tables, org_id, needles(person))
        changed += forgotten.deleted
        if changed:
            uow.audit_change({}, {"erased_rows": changed, "bookings": len(booking_ids)})
    if forgotten.unpublished:
        return Erased(
            changed,
            f"{forgotten.unpublished} media events mentioning the person are not published yet",
        )
    return Erased(changed)


async def _live_photos(db: Database, org_id: uuid.UUID, booking_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    if not booking_ids:
        return []
    async with unit_of_work(db, org_id) as uow:
        rows = await uow.session.execute(
            select(order_photos.c.id)
            .where(
                order_photos.c.org_id == org_id,
                order_photos.c.booking_id.in_(booking_ids),
                order_photos.c.deleted_at.is_(None),
            )
            .order_by(order_photos.c.created_at, order_photos.c.id)
        )
        return [row.id for row in rows]


def _of_bookings(uow: UnitOfWork, booking_ids: Sequence[uuid.UUID]) -> Any:
    return (order_photos.c.org_id == uow.org_id) & order_photos.c.booking_id.in_(booking_ids)


async def _clear_notes(uow: UnitOfWork, booking_ids: Sequence[uuid.UUID]) -> int:
    """A note is free text about the client's job ("Mrs Doe's kitchen is too dark"): cleared, not
    scrubbed, since the photos it was about are gone."""
    result = await uow.session.execute(
        update(order_photos)
        .where(_of_bookings(uow, booking_ids), order_photos.c.review_note.is_not(None))
        .values(review_note=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _erase_email_principals(uow: UnitOfWork, booking_ids: Sequence[uuid.UUID]) -> int:
    """A staff user's or service's principal is an id and stays; an email is a client's and goes."""
    changed = 0
    for column in (order_photos.c.uploaded_by, order_photos.c.reviewed_by):
        result = await uow.session.execute(
            update(order_photos)
            .where(_of_bookings(uow, booking_ids), column.contains("@", autoescape=True))
            .values({column.name: ERASED})
        )
        changed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return changed


async def _tombstone_legacy_objects(uow: UnitOfWork, booking_ids: Sequence[uuid.UUID]) -> int:
    """A deleted photo imported with a legacy key may have its object there (delivery reads it as a
    fallback) while review.delete tombstones only the canonical reference: every spelling of the
    legacy key gets a tombstone too (deleting a missing object is a success), then the key goes."""
    rows = (
        await uow.session.execute(
            select(order_photos.c.id, order_photos.c.legacy_key, order_photos.c.backend).where(
                _of_bookings(uow, booking_ids),
                order_photos.c.deleted_at.is_not(None),
                order_photos.c.legacy_key.is_not(None),
            )
        )
    ).all()
    for row in rows:
        try:
            keys = legacy_candidates(row.legacy_key)
        except InvalidStorageKey:
            keys = []  # no backend would take it: there is no object to delete under it
        for key in keys:
            await uow.session.execute(
                pg_insert(photo_tombstones)
                .values(
                    id=uuid.uuid4(), org_id=uow.org_id, photo_id=row.id, storage_key=key, backend=row.backend
                )
                .on_conflict_do_nothing(index_elements=["backend", "storage_key"])
            )
        await uow.session.execute(
            update(order_photos).where(order_photos.c.id == row.id).values(legacy_key=None)
        )
    return len(rows)


async def _delete_consents(uow: UnitOfWork, booking_ids: Sequence[uuid.UUID]) -> int:
    result = await uow.session.execute(
        delete(photo_consents).where(
            photo_consents.c.org_id == uow.org_id, photo_consents.c.booking_id.in_(booking_ids)
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
