"""Portal links minted for someone: a client's magic link (a dispatcher sending one by hand, notify's
client-login consumer, the dev-only link in the login answer) and a worker's portal link. Signing
them is portal_tokens.py; each is also recorded (as a hash) so it can be used once and revoked
(portal_sessions.py). This module decides what is asked for, and audits what must be; it also ends
one worker's portal access at an admin's request."""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import invalid
from services.iam import accounts, audit, portal_sessions, portal_tokens
from services.iam.settings import IamSettings


@dataclass(frozen=True)
class PortalToken:
    token: str
    expires_at: int  # epoch seconds, as the token's `exp` claim


async def issue_client_token(
    uow: UnitOfWork, settings: IamSettings, *, email: str, client_id: str, ttl_minutes: int
) -> PortalToken:
    """For a client known by id or by email (then the email is the subject), in the uow's org. Only a
    link that names an email opens a session: the portal scopes a client by email."""
    email = accounts.normalise_email(email) if email else ""
    if not (email or client_id):
        raise invalid("email", "email or client_id is required")
    kind = portal_sessions.KINDS[portal_sessions.CLIENT]
    token, expires_at = portal_tokens.issue(
        kind.token_type,
        kind.secret(settings),
        org_id=str(uow.org_id),
        subject=client_id or email,
        email=email,
        ttl_minutes=ttl_minutes or settings.client_portal_token_ttl_minutes,
    )
    await portal_sessions.record_link(uow, kind, subject=email, token=token, expires_at=expires_at)
    return PortalToken(token, expires_at)


async def issue_worker_token(
    uow: UnitOfWork, settings: IamSettings, *, worker_id: str, ttl_minutes: int
) -> PortalToken:
    """A new link leaves the worker's other links and sessions as they are (another device)."""
    worker = str(parse_id(worker_id, "worker_id"))
    kind = portal_sessions.KINDS[portal_sessions.WORKER]
    token, expires_at = portal_tokens.issue(
        kind.token_type,
        kind.secret(settings),
        org_id=str(uow.org_id),
        subject=worker,
        email="",
        ttl_minutes=ttl_minutes or settings.worker_portal_token_ttl_minutes,
    )
    await portal_sessions.record_link(uow, kind, subject=worker, token=token, expires_at=expires_at)
    # A credential minted by an admin for someone else is an admin write: audit it.
    await audit.record(
        uow,
        "iam.worker_portal_link.issue",
        resource_type="worker",
        resource_id=worker,
        after={"expires_at": expires_at},
    )
    return PortalToken(token, expires_at)


@dataclass(frozen=True)
class RevokedAccess:
    sessions: int
    links: int


async def revoke_worker_access(uow: UnitOfWork, *, worker_id: str) -> RevokedAccess:
    """An admin ends one worker's portal access without deactivating them (a lost phone, a shared
    device): what booking's deactivation does (events.on_worker_deactivated), in the uow's org, and
    audited, as an admin write on someone else's credentials. Asking again ends nothing more."""
    worker = str(parse_id(worker_id, "worker_id"))
    links, sessions = await portal_sessions.end_access(
        uow, portal_sessions.KINDS[portal_sessions.WORKER], worker, reason="admin_revoked"
    )
    await audit.record(
        uow,
        "iam.worker_portal_access.revoke",
        resource_type="worker",
        resource_id=worker,
        after={"revoked_sessions": sessions, "revoked_links": links},
    )
    return RevokedAccess(sessions=sessions, links=links)
