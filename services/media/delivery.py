"""Signed delivery of photos: minting links for staff (consent required) and for the booking's own
client, the client portal's photo list, and opening a link. No gRPC here.

Every link is a token of services/media/links.py; nobody ever gets a bucket URL of ours that lives
longer than the backend's own short-lived one. Opening a link (`open_link`):
1. `links.verify`: signature, User-Agent binding, expiry (404 invalid / 410 expired);
2. the photo must still exist in the token's org (deleted or tombstoned: 404), its booking's consent
   must not have been withdrawn since the link was minted (404), and its object must be found (its
   reference, `backend_ref` or else the canonical key, then the legacy key's aliases);
3. a one-time token is marked used in Redis (`links.redeem`: 410 used, 503 without Redis), after the
   checks above, so a link to a deleted photo is not spent;
4. the backend's short-lived URL (`delivery_url`, R2 and Cloudflare Images) or, for local, the file's
   chunks, the first one already read (a missing file is a 404 before anything is sent)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from libs.common.db import Database, unit_of_work
from libs.common.errors import NotFound, Unavailable
from libs.common.logs import get_logger
from services.media import consent, links
from services.media.models import Record, order_photos
from services.media.settings import MediaSettings
from services.media.storage import StorageError, StorageNotFound, resolve_legacy
from services.media.storage.base import Storage

log = get_logger(__name__)

PHOTO_NOT_FOUND = "photo_not_found"


@dataclass(frozen=True)
class SignedLink:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedPhoto:
    mime: str
    size: int  # bytes
    redirect_url: str | None  # None: stream `chunks`
    chunks: AsyncIterator[bytes] | None


def _not_found() -> NotFound:
    return NotFound("photo not found", code=PHOTO_NOT_FOUND)


def mint(settings: MediaSettings, org_id: uuid.UUID, photo_id: uuid.UUID, user_agent: str) -> SignedLink:
    """A token for one photo, bound and one-time as the settings say."""
    secrets = settings.photo_token_secrets
    if not secrets:
        # Dev/test without PHOTO_TOKEN_SECRET (prod refuses to start so): a clear refusal, not a 500.
        raise Unavailable(
            "photo links are not configured (PHOTO_TOKEN_SECRET)", code="photo_links_unconfigured"
        )
    ttl = settings.photo_url_ttl_seconds
    issued = int(datetime.now(UTC).timestamp())
    token = links.mint(
        secrets[0],
        org_id=str(org_id),
        photo_id=str(photo_id),
        ttl_seconds=ttl,
        now=issued,
        user_agent=user_agent if settings.photo_token_bind_user_agent else None,
        one_time=settings.photo_token_one_time,
    )
    return SignedLink(token, datetime.fromtimestamp(issued + ttl, UTC))


async def _photo(uow: Any, photo_id: uuid.UUID, booking_id: uuid.UUID | None = None) -> Record:
    query = select(order_photos).where(order_photos.c.id == photo_id, order_photos.c.deleted_at.is_(None))
    if booking_id is not None:
        query = query.where(order_photos.c.booking_id == booking_id)
    row = (await uow.session.execute(query)).one_or_none()
    if row is None:
        raise _not_found()
    return row


async def sign_for_staff(
    db: Database, settings: MediaSettings, org_id: uuid.UUID, photo_id: uuid.UUID, user_agent: str
) -> SignedLink:
    """Staff of the photo's org; FailedPrecondition photo_consent_required without active consent."""
    async with unit_of_work(db, org_id) as uow:
        row = await _photo(uow, photo_id)
        state = await consent.get(uow, row.booking_id)
    consent.require_active(state)
    return mint(settings, org_id, photo_id, user_agent)


async def sign_for_client(
    db: Database,
    settings: MediaSettings,
    org_id: uuid.UUID,
    booking_id: uuid.UUID,
    photo_id: uuid.UUID,
    user_agent: str,
) -> SignedLink:
    """The booking's own client (the caller checked the booking is theirs): a photo of that booking
    only. The client needs no consent to see the photos of their own home."""
    async with unit_of_work(db, org_id) as uow:
        await _photo(uow, photo_id, booking_id)
    return mint(settings, org_id, photo_id, user_agent)


async def client_photos(
    db: Database, org_id: uuid.UUID, booking_id: uuid.UUID
) -> tuple[list[Record], consent.Consent]:
    async with unit_of_work(db, org_id) as uow:
        rows = await uow.session.execute(
            select(order_photos)
            .where(order_photos.c.booking_id == booking_id, order_photos.c.deleted_at.is_(None))
            .order_by(order_photos.c.created_at.desc(), order_photos.c.id)
        )
        state = await consent.get(uow, booking_id)
        return list(rows.all()), state


async def open_link(
    db: Database,
    settings: MediaSettings,
    storage: Storage,
    store: Callable[[], Redis],
    token: str,
    user_agent: str,
) -> OpenedPhoto:
    secrets = settings.photo_token_secrets
    if not secrets:
        raise NotFound("photo not found", code=links.INVALID)
    claims = links.verify(secrets, token, user_agent=user_agent)
    async with unit_of_work(db, claims.org_id) as uow:
        row = await _photo(uow, uuid.UUID(claims.photo_id))
        state = await consent.get(uow, row.booking_id)
    # A withdrawal ends every link minted before it (staff's and the client's alike: tokens do not say
    # who asked; the client simply asks again). Minted at expiry minus the TTL, as `mint` sets it.
    minted_at = claims.expires_at - settings.photo_url_ttl_seconds
    if not state.active and state.withdrawn_at is not None and state.withdrawn_at.timestamp() >= minted_at:
        raise _not_found()
    chunks: AsyncIterator[bytes] | None = None
    try:
        url = await storage.delivery_url(row.backend_ref or row.storage_key, settings.photo_url_ttl_seconds)
        if url is None:
            chunks = await _first_chunk_read(storage, row)
    except StorageError as error:
        if isinstance(error, StorageNotFound):
            raise _not_found() from None
        log.warning("photo_delivery_failed", backend=storage.name, error=repr(error))
        raise Unavailable(
            "the photo storage is unavailable; try again shortly", code="storage_unavailable"
        ) from None
    if claims.one_time:
        await links.redeem(store(), claims)
    log.info(
        "photo_link_opened", photo_id=claims.photo_id, one_time=claims.one_time, redirect=url is not None
    )
    return OpenedPhoto(mime=row.mime, size=row.bytes, redirect_url=url, chunks=chunks)


async def _first_chunk_read(storage: Storage, row: Record) -> AsyncIterator[bytes]:
    """The object's chunks with the first one already read: a missing object (its reference, the
    backend_ref or else the canonical key, then the legacy key's aliases) is NotFound here, before the
    caller answers anything."""
    for key in (row.backend_ref or row.storage_key, row.legacy_key):
        if not key:
            continue
        if key == row.legacy_key:
            found = await resolve_legacy(storage, key)
            if found is None:
                continue
            key = found
        stream = storage.open(key)
        try:
            first = await anext(stream)
        except StorageNotFound:
            continue
        except StopAsyncIteration:
            first = b""
        return _chained(first, stream)
    log.error("photo_object_missing", photo_id=str(row.id), storage_key=row.storage_key)
    raise _not_found()


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
