"""Photo consent per booking (seed 002 "Client portal v1 usage": admin links "require active photo
consent before signing"). No gRPC here.

One row per booking in `media.photo_consents`, holding the latest decision: `granted` and who recorded
it (`granted_by`, a principal id: the client's email from the portal, a staff user's id) and from where
(`source`: `client_portal` | `staff`). Granting sets `granted_at` and clears `withdrawn_at`;
withdrawing keeps `granted_at` (when it had been given) and sets `withdrawn_at`. Consent is active
while granted and not withdrawn. Withdrawing deletes nothing: staff links stop being signed, and links
already minted stop opening (the public route checks consent again).

Staff writes are audited by the unit of work (cws.media.audit.recorded, before/after attached)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition
from services.media.models import photo_consents

CLIENT_PORTAL = "client_portal"
STAFF = "staff"
REQUIRED = "photo_consent_required"


@dataclass(frozen=True)
class Consent:
    booking_id: uuid.UUID
    recorded: bool  # a decision was ever recorded for the booking
    granted: bool
    granted_by: str
    granted_at: datetime | None
    withdrawn_at: datetime | None
    source: str

    @property
    def active(self) -> bool:
        return self.granted and self.withdrawn_at is None

    def audit_view(self) -> dict[str, Any]:
        return {
            "granted": self.active,
            "granted_by": self.granted_by,
            "source": self.source,
            "withdrawn_at": self.withdrawn_at.isoformat() if self.withdrawn_at else None,
        }


def _of(booking_id: uuid.UUID, row: Any) -> Consent:
    if row is None:
        return Consent(booking_id, False, False, "", None, None, "")
    return Consent(
        booking_id=booking_id,
        recorded=True,
        granted=row.granted,
        granted_by=row.granted_by,
        granted_at=row.granted_at,
        withdrawn_at=row.withdrawn_at,
        source=row.source,
    )


async def get(uow: UnitOfWork, booking_id: uuid.UUID, *, for_share: bool = False) -> Consent:
    query = select(photo_consents).where(photo_consents.c.booking_id == booking_id)
    if for_share:
        query = query.with_for_update(read=True)
    row = (await uow.session.execute(query)).one_or_none()
    return _of(booking_id, row)


async def record(uow: UnitOfWork, booking_id: uuid.UUID, *, granted: bool, by: str, source: str) -> Consent:
    """Grant or withdraw the booking's consent; the caller has checked who may. Withdrawing a consent
    never given records a refusal (granted false, withdrawn now): the state says someone decided."""
    if source not in (CLIENT_PORTAL, STAFF):
        raise ValueError(f"unknown consent source {source!r}")
    org_id = uow.org_id
    before = await get(uow, booking_id, for_share=True)
    now = datetime.now(UTC)
    if granted:
        values: dict[str, Any] = {"granted": True, "granted_at": now, "withdrawn_at": None}
    elif before.recorded and before.withdrawn_at is not None:
        values = {"granted": False}  # already withdrawn: keep when it was
    else:
        values = {"granted": False, "withdrawn_at": now}
    values |= {"granted_by": by[:100], "source": source}
    statement = insert(photo_consents).values(
        org_id=org_id,
        booking_id=booking_id,
        granted_at=now,
        **{k: v for k, v in values.items() if k != "granted_at"},
    )
    row = (
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[photo_consents.c.org_id, photo_consents.c.booking_id], set_=values
            ).returning(*photo_consents.c)
        )
    ).one()
    after = _of(booking_id, row)
    uow.audit_change(before.audit_view(), after.audit_view())
    return after


def require_active(consent: Consent) -> None:
    """FailedPrecondition (409) photo_consent_required, saying why, unless consent is active."""
    if consent.active:
        return
    if consent.recorded and consent.withdrawn_at is not None:
        why = "photo consent for this booking was withdrawn"
    else:
        why = "the client has not given photo consent for this booking"
    raise FailedPrecondition(
        f"{why}; no photo link can be signed until the client (client portal) or staff "
        "(PUT /v1/admin/bookings/{booking_id}/photo-consent) records consent",
        code=REQUIRED,
    )
