"""Break-glass: an OWNER/ADMIN mints a short-lived, org-scoped token that lets admin writes through
while ADMIN_READ_ONLY is on. Only its hash is stored; the token is shown once."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cws.iam.v1 import events_pb2
from sqlalchemy import insert, select

from libs.common import context as request_context
from libs.common.convert import to_ts
from libs.common.db import UnitOfWork
from libs.common.errors import PermissionDenied, invalid
from libs.common.roles import MANAGERS
from services.iam import audit
from services.iam.events import IAM_BREAK_GLASS_STARTED
from services.iam.models import break_glass_sessions
from services.iam.settings import IamSettings

MAX_REASON = 500


@dataclass(frozen=True)
class BreakGlass:
    session_id: uuid.UUID
    token: str
    reason: str
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(uow: UnitOfWork, settings: IamSettings, *, reason: str, ttl_minutes: int) -> BreakGlass:
    ctx = request_context.require_role(*MANAGERS)
    reason = reason.strip()
    if not reason:
        raise invalid("reason", "is required")
    if len(reason) > MAX_REASON:
        raise invalid("reason", f"must be at most {MAX_REASON} characters")
    if not 1 <= ttl_minutes <= settings.break_glass_max_ttl_minutes:
        raise invalid("ttl_minutes", f"must be between 1 and {settings.break_glass_max_ttl_minutes}")
    token = "bg_" + secrets.token_urlsafe(32)
    session_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + timedelta(minutes=ttl_minutes)
    await uow.session.execute(
        insert(break_glass_sessions).values(
            id=session_id,
            org_id=uow.org_id,
            actor=request_context.actor_label(ctx),
            role=ctx.role,
            reason=reason,
            token_hash=_hash(token),
            expires_at=expires_at,
        )
    )
    await audit.record(
        uow,
        "admin.break_glass.start",
        resource_type="break_glass",
        resource_id=str(session_id),
        after={"ttl_minutes": ttl_minutes, "expires_at": expires_at.isoformat()},
        break_glass_reason=reason,
        break_glass_session_id=str(session_id),
    )
    uow.add_event(
        IAM_BREAK_GLASS_STARTED,
        events_pb2.BreakGlassStarted(
            org_id=str(uow.org_id),
            session_id=str(session_id),
            actor=request_context.actor_label(ctx),
            reason=reason,
            expires_at=to_ts(expires_at),
        ),
    )
    return BreakGlass(session_id, token, reason, expires_at)


async def verify(uow: UnitOfWork, token: str) -> BreakGlass:
    """Valid only in the caller's org (RLS scopes the lookup) and before expiry."""
    row = (
        await uow.session.execute(
            select(break_glass_sessions).where(break_glass_sessions.c.token_hash == _hash(token.strip()))
        )
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
        raise PermissionDenied(
            "break-glass token is invalid, expired or of another organisation", code="break_glass_invalid"
        )
    return BreakGlass(row.id, "", row.reason, row.expires_at)
