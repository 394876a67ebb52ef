"""What billing's usage report checks its `storage_bytes` counter against (GetStorageUsage): the bytes
media stores for the org now. No gRPC here.

The truth is the rows, not the backend: the sum of `bytes` (the stored, cleaned file's size, the same
number `cws.media.photo.stored` carried) over the org's photos that are not deleted. A deleted photo
left the count when it was tombstoned (`cws.media.photo.deleted` carried its bytes), even while the
janitor has yet to remove its object; an orphan tombstone (an upload whose row was never written)
was never counted, on either side. Read in the org of the unit of work (RLS), by
ix_order_photos_org_booking (org_id first)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from libs.common.db import UnitOfWork
from services.media.models import order_photos


@dataclass(frozen=True)
class StorageUsage:
    stored_bytes: int
    photos: int


async def storage_usage(uow: UnitOfWork) -> StorageUsage:
    """The org's live photos: how many, and their bytes."""
    count, total = (
        await uow.session.execute(
            select(func.count(), func.coalesce(func.sum(order_photos.c.bytes), 0)).where(
                order_photos.c.org_id == uow.org_id, order_photos.c.deleted_at.is_(None)
            )
        )
    ).one()
    return StorageUsage(stored_bytes=int(total), photos=int(count))
