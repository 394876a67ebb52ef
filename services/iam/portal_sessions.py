"""Portal links used once, and the portal sessions they open (issue 9, hole 8).

A portal link (a client's magic link, a worker's link) is an HMAC-signed token (portal_tokens.py)
and a row of iam.portal_links. Following it redeems the row, once: the same UPDATE that marks it used
checks that it is unused, unrevoked and unexpired, so of two concurrent redemptions exactly one wins.
The redemption opens a portal session, whose opaque random token is the portal's credential from
then on (the gateway's cookie or bearer). Links and sessions are stored as SHA-256 hashes only:
a database dump opens nothing.

Sessions end on logout, when they expire, and when the worker they belong to is deactivated or
deleted (booking's cws.booking.worker.deactivated, services/iam/events.py), which also revokes the
worker's unused links, and when an admin ends that worker's access alone (end_access again, from
portal_links.revoke_worker_access). Issuing a new link ends nothing: a worker may hold a session on
two devices.

The tokens carry their org (the link in its signed claims, the session as `ps.<org>.<random>`), so
each lookup runs inside that org under row-level security, with no cross-org query anywhere."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from libs.common.db import UnitOfWork
from libs.common.errors import Unauthenticated
from services.iam import portal_tokens
from services.iam.models import portal_links, portal_sessions
from services.iam.settings import IamSettings

CLIENT = "client"
WORKER = "worker"
SESSION_PREFIX = "ps"
# Opaque session tokens are about 80 characters; anything much longer is not one of ours.
MAX_SESSION_TOKEN = 200


@dataclass(frozen=True)
class Kind:
    """A portal: which signed token type its links are, with which secret, for how long."""

    name: str
    token_type: str

    def secret(self, settings: IamSettings) -> str:
        return settings.client_portal_secret if self.name == CLIENT else settings.worker_portal_secret

    def session_ttl(self, settings: IamSettings) -> timedelta:
        minutes = (
            settings.client_portal_session_ttl_minutes
            if self.name == CLIENT
            else settings.worker_portal_session_ttl_minutes
        )
        return timedelta(minutes=minutes)


KINDS = {CLIENT: Kind(CLIENT, portal_tokens.CLIENT), WORKER: Kind(WORKER, portal_tokens.WORKER)}


@dataclass(frozen=True)
class PortalSession:
    id: uuid.UUID
    org_id: uuid.UUID
    kind: str
    subject: str  # the client's email, or the worker's id
    expires_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _refused(detail: str, code: str = "invalid_portal_token") -> Unauthenticated:
    return Unauthenticated(detail, code=code)


# --- links -------------------------------------------------------------------------------------


async def record_link(uow: UnitOfWork, kind: Kind, *, subject: str, token: str, expires_at: int) -> None:
    """Called by whoever issues a link (portal_links.py), in the unit of work of the link's org."""
    await uow.session.execute(
        insert(portal_links).values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            kind=kind.name,
            subject=subject,
            token_hash=hash_token(token),
            expires_at=datetime.fromtimestamp(expires_at, UTC),
        )
    )


async def _verified_claims(
    uow: UnitOfWork, settings: IamSettings, kind: Kind, token: str
) -> portal_tokens.PortalClaims:
    """The link's signed claims, the unit of work moved into the org they name."""
    claims = portal_tokens.verify(kind.token_type, kind.secret(settings), token)
    await uow.set_org(uuid.UUID(claims.org_id))
    return claims


def _why_unusable(row: Any, now: datetime) -> Unauthenticated:
    if row is None or row.expires_at <= now:
        return _refused("portal token is invalid or expired")
    if row.revoked_at is not None:
        return _refused("this portal link has been revoked; ask for a new one", "portal_link_revoked")
    return _refused("this portal link was already used; ask for a new one", "portal_link_used")


async def check_link(
    uow: UnitOfWork, settings: IamSettings, kind: Kind, token: str
) -> portal_tokens.PortalClaims:
    """A link that would open a session now, looked at without using it (the callback page)."""
    claims = await _verified_claims(uow, settings, kind, token)
    row = (
        await uow.session.execute(
            select(portal_links).where(
                portal_links.c.token_hash == hash_token(token), portal_links.c.kind == kind.name
            )
        )
    ).first()
    now = datetime.now(UTC)
    if row is None or row.used_at is not None or row.revoked_at is not None or row.expires_at <= now:
        raise _why_unusable(row, now)
    return claims


async def open_session(
    uow: UnitOfWork, settings: IamSettings, kind: Kind, link_token: str
) -> tuple[PortalSession, str]:
    """Redeems the link (once) and opens a session; returns it with its token, shown only here."""
    claims = await _verified_claims(uow, settings, kind, link_token)
    subject = claims.email if kind.name == CLIENT else claims.subject
    if not subject:
        # Booking scopes a client by email: a link for a bare client id would scope to nothing,
        # which reads as "everything".
        raise _refused("this portal link does not name a client email")
    now = datetime.now(UTC)
    link_hash = hash_token(link_token)
    # One statement decides: of two concurrent redemptions, the second finds used_at set.
    link_id = await uow.session.scalar(
        update(portal_links)
        .where(
            portal_links.c.token_hash == link_hash,
            portal_links.c.kind == kind.name,
            portal_links.c.used_at.is_(None),
            portal_links.c.revoked_at.is_(None),
            portal_links.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(portal_links.c.id)
    )
    if link_id is None:
        row = (
            await uow.session.execute(select(portal_links).where(portal_links.c.token_hash == link_hash))
        ).first()
        raise _why_unusable(row, now)
    token = f"{SESSION_PREFIX}.{uow.org_id}.{secrets.token_urlsafe(32)}"
    session = PortalSession(
        uuid.uuid4(), uuid.UUID(claims.org_id), kind.name, subject, now + kind.session_ttl(settings)
    )
    await uow.session.execute(
        insert(portal_sessions).values(
            id=session.id,
            org_id=session.org_id,
            kind=kind.name,
            subject=subject,
            link_id=link_id,
            token_hash=hash_token(token),
            expires_at=session.expires_at,
        )
    )
    return session, token


# --- sessions ----------------------------------------------------------------------------------


def _org_of_session_token(token: str) -> uuid.UUID:
    parts = token.split(".")
    if len(token) > MAX_SESSION_TOKEN or len(parts) != 3 or parts[0] != SESSION_PREFIX:
        raise _refused("the portal session is invalid or expired", "invalid_portal_session")
    try:
        return uuid.UUID(parts[1])
    except ValueError:
        raise _refused("the portal session is invalid or expired", "invalid_portal_session") from None


async def check_session(uow: UnitOfWork, kind: Kind, token: str) -> PortalSession:
    """The open session this token is, of this portal; asked on every portal request."""
    await uow.set_org(_org_of_session_token(token))
    row = (
        await uow.session.execute(
            select(portal_sessions).where(
                portal_sessions.c.token_hash == hash_token(token), portal_sessions.c.kind == kind.name
            )
        )
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
        raise _refused("the portal session is invalid, expired or signed out", "invalid_portal_session")
    return PortalSession(row.id, row.org_id, row.kind, row.subject, row.expires_at)


async def end_session(uow: UnitOfWork, token: str) -> bool:
    """Logout: False when the token names no session that was still open."""
    await uow.set_org(_org_of_session_token(token))
    ended = await uow.session.scalar(
        update(portal_sessions)
        .where(portal_sessions.c.token_hash == hash_token(token), portal_sessions.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_reason="logout")
        .returning(portal_sessions.c.id)
    )
    return ended is not None


async def end_access(uow: UnitOfWork, kind: Kind, subject: str, *, reason: str) -> tuple[int, int]:
    """Revokes the subject's unused links, then its open sessions, in the unit of work's org; returns
    (links, sessions). Links first: a redemption racing this waits on the link's row lock, and the
    session it then opens is already visible to the second statement, which ends it."""
    now = datetime.now(UTC)
    links = await uow.session.execute(
        update(portal_links)
        .where(
            portal_links.c.kind == kind.name,
            portal_links.c.subject == subject,
            portal_links.c.used_at.is_(None),
            portal_links.c.revoked_at.is_(None),
        )
        .values(revoked_at=now, revoked_reason=reason)
    )
    sessions = await uow.session.execute(
        update(portal_sessions)
        .where(
            portal_sessions.c.kind == kind.name,
            portal_sessions.c.subject == subject,
            portal_sessions.c.revoked_at.is_(None),
        )
        .values(revoked_at=now, revoked_reason=reason)
    )
    return links.rowcount, sessions.rowcount  # type: ignore[attr-defined]
