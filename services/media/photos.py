"""Job photos: upload (stream in, check, store, record) and the staff reads. No gRPC here.

An upload runs in this order, so that nothing is half done:
1. the org may upload (its subscription is not paused) and the booking is the org's (`check_booking`,
   booking's own answer), before a byte of the file is read;
2. the intake (services/media/intake.py) spools the chunks to a temp file under ORDER_UPLOAD_ROOT's
   `.incoming/`, counting bytes (payload_too_large past ORDER_PHOTO_MAX_BYTES, while streaming), decides
   the type from the content against the allowlist, and rewrites the image without its metadata;
3. the object is stored under its canonical key (built from ids only); the row keeps the reference
   the backend returned when it differs from the key (Cloudflare Images' own id) as `backend_ref`;
4. the row and `cws.media.photo.stored` are written in one unit of work (the pause is checked again
   there, FOR SHARE, so a pause that lands meanwhile wins or waits). If that fails, the object just
   stored gets a tombstone in a separate transaction (the janitor deletes it), so no orphan is left
   behind and no row ever names a missing object.
The temp file is removed in every case."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cws.media.v1 import events_pb2 as media_events
from sqlalchemy import insert, select

from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import NotFound, Unavailable
from libs.common.logs import get_logger
from services.media import entitlements, intake
from services.media.events import PHOTO_STORED
from services.media.models import Record, order_photos, photo_tombstones
from services.media.storage import StorageError, canonical_key
from services.media.storage.base import Storage

log = get_logger(__name__)

# Checks that the booking is the org's (booking's GetBooking through media's peers); raises NotFound.
BookingCheck = Callable[[uuid.UUID, uuid.UUID], Awaitable[Any]]


async def upload(
    db: Database,
    storage: Storage,
    *,
    org_id: uuid.UUID,
    booking_id: uuid.UUID,
    uploaded_by: str,
    uploader_role: str,
    chunks: AsyncIterator[bytes],
    check_booking: BookingCheck,
    max_bytes: int,
    allowed_mime: frozenset[str],
    spool_dir: Path,
) -> Record:
    async with unit_of_work(db, org_id) as uow:
        await entitlements.require_active(uow, "photos")
    await check_booking(org_id, booking_id)

    received = await intake.receive(
        chunks, max_bytes=max_bytes, allowed_mime=allowed_mime, spool_dir=spool_dir
    )
    try:
        photo_id = uuid.uuid4()
        key = canonical_key(str(org_id), str(booking_id), str(photo_id), received.ext)
        ref = await storage.put(key, received.path, received.mime)
    except StorageError as error:
        # Nothing was recorded; the client may send the photo again once the backend answers.
        log.warning("photo_store_failed", backend=storage.name, error=repr(error))
        raise Unavailable(
            "the photo storage is unavailable; try the upload again shortly", code="storage_unavailable"
        ) from None
    finally:
        received.path.unlink(missing_ok=True)

    try:
        async with unit_of_work(db, org_id) as uow:
            await entitlements.require_active(uow, "photos")
            row = (
                await uow.session.execute(
                    insert(order_photos)
                    .values(
                        id=photo_id,
                        org_id=org_id,
                        booking_id=booking_id,
                        storage_key=key,
                        backend_ref=None if ref == key else ref,
                        backend=storage.name,
                        mime=received.mime,
                        ext=received.ext,
                        bytes=received.bytes,
                        sha256=received.sha256,
                        width=received.width,
                        height=received.height,
                        uploaded_by=uploaded_by,
                        uploader_role=uploader_role,
                    )
                    .returning(*order_photos.c)
                )
            ).one()
            uow.add_event(
                PHOTO_STORED,
                media_events.PhotoStored(
                    org_id=str(org_id),
                    booking_id=str(booking_id),
                    photo_id=str(photo_id),
                    bytes=received.bytes,
                    occurred_at=to_ts(datetime.now(UTC)),
                ),
            )
    except BaseException:
        await _tombstone_orphan(db, org_id, photo_id, key, ref, storage.name)
        raise
    log.info("photo_stored", photo_id=str(photo_id), booking_id=str(booking_id), bytes=received.bytes)
    return row


async def _tombstone_orphan(
    db: Database, org_id: uuid.UUID, photo_id: uuid.UUID, key: str, ref: str, backend: str
) -> None:
    """The object of an upload whose row was not written: the janitor deletes it."""
    try:
        async with unit_of_work(db, org_id) as uow:
            await uow.session.execute(
                insert(photo_tombstones).values(
                    id=uuid.uuid4(),
                    org_id=org_id,
                    photo_id=photo_id,
                    storage_key=key,
                    backend_ref=None if ref == key else ref,
                    backend=backend,
                )
            )
    except Exception:  # the database is away: say which object is left, for an operator
        log.exception("photo_orphan_not_tombstoned", storage_key=key, backend_ref=ref, backend=backend)


async def list_for_booking(
    db: Database, org_id: uuid.UUID, booking_id: uuid.UUID, check_booking: BookingCheck
) -> list[Record]:
    """The booking's photos, newest first. Another org's booking is NotFound (booking's answer), not
    an empty list: which ids exist elsewhere is nobody's business, and a list must not say otherwise."""
    await check_booking(org_id, booking_id)
    async with unit_of_work(db, org_id) as uow:
        rows = await uow.session.execute(
            select(order_photos)
            .where(
                order_photos.c.booking_id == booking_id,
                order_photos.c.org_id == org_id,
                order_photos.c.deleted_at.is_(None),
            )
            .order_by(order_photos.c.created_at.desc(), order_photos.c.id)
        )
        return list(rows.all())


async def get(db: Database, org_id: uuid.UUID, photo_id: uuid.UUID) -> Record:
    async with unit_of_work(db, org_id) as uow:
        row = (
            await uow.session.execute(
                select(order_photos).where(
                    order_photos.c.id == photo_id,
                    order_photos.c.org_id == org_id,
                    order_photos.c.deleted_at.is_(None),
                )
            )
        ).one_or_none()
    if row is None:
        raise NotFound("photo not found", code="photo_not_found")
    return row
