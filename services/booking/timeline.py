"""Booking's share of a booking's timeline (issue 13): when it was made, where it stands now, and the
client's NPS answer. The gateway merges it with what the other services recorded.

No summary, kind or actor holds personal data: the client's name and the NPS comment go into
`details` under keys of libs/common/privacy.PII_KEYS, which the gateway masks for the VIEWER role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from libs.common.db import UnitOfWork
from libs.common.errors import NotFound
from services.booking.models import bookings, nps_responses

_SUMMARIES = {
    "confirmed": "Booking confirmed",
    "in_progress": "Job started",
    "completed": "Job completed",
    "cancelled": "Booking cancelled",
}


@dataclass(frozen=True)
class Entry:
    at: datetime
    source: str
    kind: str
    summary: str
    id: str
    details: dict[str, Any] = field(default_factory=dict)


async def booking_timeline(uow: UnitOfWork, booking_id: uuid.UUID) -> list[Entry]:
    """Newest first. NOT_FOUND unless the booking is the org's."""
    row = (
        await uow.session.execute(
            select(bookings).where(bookings.c.org_id == uow.org_id, bookings.c.id == booking_id)
        )
    ).first()
    if row is None:
        raise NotFound("booking not found")
    entries = [
        Entry(
            at=row.created_at,
            source="booking",
            kind="booking.created",
            summary="Booking created",
            id=str(row.id),
            details={
                "starts_at": row.starts_at.astimezone(UTC).isoformat(),
                "ends_at": row.ends_at.astimezone(UTC).isoformat(),
                "cleaning_type": row.cleaning_type,
                "total_before_tax_cents": row.total_before_tax_cents,
                "currency": row.currency,
                "client_name": row.client_name,
                "client_email": row.client_email,
                "client_phone": row.client_phone,
                "address": row.address,
            },
        )
    ]
    # Only the current status is stored (the outbox rows and audit entries hold each transition).
    if row.status != "pending":
        details: dict[str, Any] = {"status": row.status}
        if row.status == "cancelled" and row.cancel_reason:
            details["reason"] = row.cancel_reason
        entries.append(
            Entry(
                at=row.updated_at,
                source="booking",
                kind=f"booking.{row.status}",
                summary=_SUMMARIES.get(row.status, f"Booking {row.status}"),
                id=str(row.id),
                details=details,
            )
        )
    answer = (
        await uow.session.execute(
            select(nps_responses).where(
                nps_responses.c.org_id == uow.org_id, nps_responses.c.booking_id == booking_id
            )
        )
    ).first()
    if answer is not None:
        entries.append(
            Entry(
                at=answer.created_at,
                source="nps",
                kind="nps.answered",
                summary=f"NPS answered: {answer.score}",
                id=str(answer.id),
                details={"score": answer.score, "comment": answer.comment},
            )
        )
    return sorted(entries, key=lambda e: (e.at, e.kind), reverse=True)
