"""Media's share of a booking's timeline (issue 13, seed 002): what happened to the booking's photos.
No gRPC here.

Each photo gives up to three entries: uploaded (created_at), its latest review (approved or
needs_retake, reviewed_at; earlier reviews are not kept, the row holds the latest) and deleted
(deleted_at). Deleted photos are included: the timeline says what happened, not what is left.

The booking belongs to booking, not media: an id media holds no photo of (another org's, under RLS, or
one that does not exist) is an empty answer, never NotFound. Newest PHOTO_CAP photos by
ix_order_photos_org_booking (org_id, booking_id, created_at), one more read to tell the caller the
rest was cut.

Entries hold no personal data outside `details`: an actor is a principal id, but a client acting from
the portal is known by their email, so such an actor goes into details["email"]; a review note is free
text and goes into details["notes"] (both keys of libs.common.privacy.PII_KEYS, masked for VIEWERs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from libs.common.db import Database, unit_of_work
from services.media.models import Record, order_photos

SOURCE = "photo"
PHOTO_CAP = 100


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    summary: str
    actor: str
    id: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    entries: list[Entry]
    truncated: bool


async def for_booking(db: Database, org_id: uuid.UUID, booking_id: uuid.UUID) -> Timeline:
    async with unit_of_work(db, org_id) as uow:
        rows = (
            await uow.session.execute(
                select(order_photos)
                .where(order_photos.c.org_id == org_id, order_photos.c.booking_id == booking_id)
                .order_by(order_photos.c.created_at.desc(), order_photos.c.id.desc())
                .limit(PHOTO_CAP + 1)
            )
        ).all()
    entries = [entry for row in rows[:PHOTO_CAP] for entry in _entries(row)]
    entries.sort(key=lambda e: (e.at, e.kind), reverse=True)
    return Timeline(entries=entries, truncated=len(rows) > PHOTO_CAP)


def _entries(row: Record) -> list[Entry]:
    photo = {"photo_id": str(row.id), "booking_id": str(row.booking_id)}
    actor, who = _actor(row.uploaded_by)
    found = [
        Entry(
            row.created_at,
            "photo.uploaded",
            f"Photo uploaded ({row.mime}, {row.width}x{row.height})",
            actor,
            str(row.id),
            {**photo, "uploader_role": row.uploader_role, **who},
        )
    ]
    if row.reviewed_at is not None and row.status in ("approved", "needs_retake"):
        actor, who = _actor(row.reviewed_by or "")
        details: dict[str, Any] = {**photo, **who}
        if row.review_note:
            details["notes"] = row.review_note
        summary = "Photo approved" if row.status == "approved" else "Photo needs a retake"
        found.append(Entry(row.reviewed_at, f"photo.{row.status}", summary, actor, str(row.id), details))
    if row.deleted_at is not None:
        found.append(Entry(row.deleted_at, "photo.deleted", "Photo deleted", "", str(row.id), photo))
    return found


def _actor(principal: str) -> tuple[str, dict[str, str]]:
    """(the entry's actor, details to add): an email is personal data, so it is no actor."""
    if "@" in principal:
        return "", {"email": principal}
    return principal, {}
