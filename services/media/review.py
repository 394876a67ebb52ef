"""Photo review and deletion: the review queue, approve, needs-retake, delete with a tombstone. No gRPC.

Transitions (anything else is FailedPrecondition, 409 at the gateway, code photo_transition_invalid):
- approve:       pending | needs_retake -> approved
- needs-retake:  pending | approved     -> needs_retake (with a note for whoever retakes it)
Each runs on the row locked FOR UPDATE, so two reviewers racing see one win and one 409, and records
before/after in the unit of work's admin audit record (cws.media.audit.recorded).

Deleting marks the row deleted, writes a tombstone for its object and `cws.media.photo.deleted`, all in
one unit of work; the object itself is removed later by the storage janitor (janitor.py), so a backend
that is down at delete time loses nothing and blocks nobody. A deleted photo is 404 everywhere after."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cws.media.v1 import events_pb2 as media_events
from sqlalchemy import func, insert, select, update

from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, FieldViolation, NotFound, invalid
from services.media.events import PHOTO_DELETED
from services.media.models import Record, order_photos, photo_tombstones

# The queue's filters (seed 002 "Operator productivity queues"): photos awaiting review or a retake.
QUEUE_STATUSES = {
    "pending": ("pending",),
    "needs_retake": ("needs_retake",),
    "all": ("pending", "needs_retake"),
}
MAX_NOTE_CHARS = 1000
APPROVABLE = ("pending", "needs_retake")
RETAKEABLE = ("pending", "approved")


def queue_statuses(status: str) -> tuple[str, ...]:
    found = QUEUE_STATUSES.get(status or "all")
    if found is None:
        raise invalid("status", "must be pending, needs_retake or all")
    return found


async def queue(db: Database, org_id: uuid.UUID, statuses: tuple[str, ...], limit: int) -> list[Record]:
    """Oldest first (the longest waiting is reviewed first), at most `limit`. Served by the partial
    index ix_order_photos_review_queue (org_id, created_at, id) over live photos awaiting action."""
    async with unit_of_work(db, org_id) as uow:
        rows = await uow.session.execute(
            select(order_photos)
            .where(
                order_photos.c.org_id == org_id,
                order_photos.c.deleted_at.is_(None),
                order_photos.c.status.in_(statuses),
            )
            .order_by(order_photos.c.created_at, order_photos.c.id)
            .limit(limit)
        )
        return list(rows.all())


def _review_view(row: Record) -> dict[str, object]:
    return {
        "status": row.status,
        "review_note": row.review_note,
        "reviewed_by": row.reviewed_by,
    }


async def transition(
    db: Database,
    org_id: uuid.UUID,
    photo_id: uuid.UUID,
    *,
    to: str,
    allowed_from: tuple[str, ...],
    reviewer: str,
    note: str | None,
) -> Record:
    """Move a live photo to `to` if its status is one of `allowed_from`; the updated row."""
    async with unit_of_work(db, org_id) as uow:
        before = (
            await uow.session.execute(
                select(order_photos)
                .where(
                    order_photos.c.id == photo_id,
                    order_photos.c.org_id == org_id,
                    order_photos.c.deleted_at.is_(None),
                )
                .with_for_update()
            )
        ).one_or_none()
        if before is None:
            raise NotFound("photo not found", code="photo_not_found")
        if before.status not in allowed_from:
            raise FailedPrecondition(
                f"a photo that is {before.status} cannot become {to}",
                code="photo_transition_invalid",
                violations=[FieldViolation("status", f"is {before.status}")],
            )
        after = (
            await uow.session.execute(
                update(order_photos)
                .where(order_photos.c.id == photo_id)
                .values(status=to, review_note=note, reviewed_by=reviewer, reviewed_at=func.now())
                .returning(*order_photos.c)
            )
        ).one()
        uow.audit_change(
            {"photo_id": str(photo_id), **_review_view(before)},
            {"photo_id": str(photo_id), **_review_view(after)},
        )
        return after


def clean_note(note: str) -> str:
    note = note.strip()
    if not note:
        raise invalid("note", "must say what to retake")
    if len(note) > MAX_NOTE_CHARS:
        raise invalid("note", f"must be at most {MAX_NOTE_CHARS} characters")
    return note


async def delete(db: Database, org_id: uuid.UUID, photo_id: uuid.UUID) -> Record:
    """Mark the photo deleted, tombstone its object and announce it, in one unit of work. A photo
    already deleted is NotFound (deleting twice is not an error worth a different answer)."""
    async with unit_of_work(db, org_id) as uow:
        row = (
            await uow.session.execute(
                update(order_photos)
                .where(
                    order_photos.c.id == photo_id,
                    order_photos.c.org_id == org_id,
                    order_photos.c.deleted_at.is_(None),
                )
                .values(deleted_at=func.now())
                .returning(*order_photos.c)
            )
        ).one_or_none()
        if row is None:
            raise NotFound("photo not found", code="photo_not_found")
        await uow.session.execute(
            insert(photo_tombstones).values(
                id=uuid.uuid4(),
                org_id=org_id,
                photo_id=photo_id,
                storage_key=row.storage_key,
                backend_ref=row.backend_ref,
                backend=row.backend,
            )
        )
        uow.add_event(
            PHOTO_DELETED,
            media_events.PhotoDeleted(
                org_id=str(org_id),
                booking_id=str(row.booking_id),
                photo_id=str(photo_id),
                bytes=row.bytes,
                occurred_at=to_ts(datetime.now(UTC)),
            ),
        )
        uow.audit_change(
            {"photo_id": str(photo_id), "status": row.status, "deleted": False},
            {"photo_id": str(photo_id), "status": row.status, "deleted": True},
        )
        return row
