"""NPS: a completed booking yields a one-use survey token; a score 0-10 with a comment is stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from cws.booking.v1 import events_pb2
from sqlalchemy import func, insert, select, update

from libs.common.db import UnitOfWork
from libs.common.errors import Conflict, NotFound, invalid
from services.booking.events import BOOKING_NPS_SUBMITTED
from services.booking.models import nps_responses, nps_surveys

MAX_COMMENT = 2000


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def org_of_token(token: str) -> uuid.UUID:
    """The org travels in the token so the public submit can run inside that org under RLS."""
    parts = token.split(".")
    try:
        if len(parts) != 3 or parts[0] != "nps":
            raise ValueError
        return uuid.UUID(parts[1])
    except ValueError:
        raise NotFound("survey not found", code="survey_not_found") from None


async def create_survey(uow: UnitOfWork, booking_id: uuid.UUID) -> str:
    token = f"nps.{uow.org_id}.{secrets.token_urlsafe(24)}"
    await uow.session.execute(
        insert(nps_surveys).values(
            id=uuid.uuid4(), org_id=uow.org_id, booking_id=booking_id, token_hash=_hash(token)
        )
    )
    return token


async def submit(uow: UnitOfWork, token: str, score: int, comment: str) -> None:
    if not 0 <= score <= 10:
        raise invalid("score", "must be between 0 and 10")
    if len(comment) > MAX_COMMENT:
        raise invalid("comment", f"must be at most {MAX_COMMENT} characters")
    survey = (
        await uow.session.execute(
            select(nps_surveys).where(nps_surveys.c.token_hash == _hash(token)).with_for_update()
        )
    ).first()
    if survey is None:
        raise NotFound("survey not found", code="survey_not_found")
    if survey.used_at is not None:
        raise Conflict("this survey was already answered", code="survey_used")
    await uow.session.execute(
        update(nps_surveys).where(nps_surveys.c.id == survey.id).values(used_at=func.now())
    )
    await uow.session.execute(
        insert(nps_responses).values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            booking_id=survey.booking_id,
            score=score,
            comment=comment.strip(),
        )
    )
    uow.add_event(
        BOOKING_NPS_SUBMITTED,
        events_pb2.NpsSubmitted(org_id=str(uow.org_id), booking_id=str(survey.booking_id), score=score),
    )
