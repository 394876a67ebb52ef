"""Portal tokens minted by staff: a client's magic-link token (a dispatcher sending a link by hand,
notify's client-login consumer) and a worker's portal token. Signing and checking them is
portal_tokens.py; this module decides what is asked for, and audits what must be."""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import invalid
from services.iam import accounts, audit, portal_tokens
from services.iam.settings import IamSettings


@dataclass(frozen=True)
class PortalToken:
    token: str
    expires_at: int  # epoch seconds, as the token's `exp` claim


def issue_client_token(
    settings: IamSettings, *, org_id: str, email: str, client_id: str, ttl_minutes: int
) -> PortalToken:
    """For a client known by id or by email (then the email is the subject)."""
    email = accounts.normalise_email(email) if email else ""
    if not (email or client_id):
        raise invalid("email", "email or client_id is required")
    token, expires_at = portal_tokens.issue(
        portal_tokens.CLIENT,
        settings.client_portal_secret,
        org_id=org_id,
        subject=client_id or email,
        email=email,
        ttl_minutes=ttl_minutes or settings.client_portal_token_ttl_minutes,
    )
    return PortalToken(token, expires_at)


async def issue_worker_token(
    uow: UnitOfWork, settings: IamSettings, *, worker_id: str, ttl_minutes: int
) -> PortalToken:
    worker = str(parse_id(worker_id, "worker_id"))
    token, expires_at = portal_tokens.issue(
        portal_tokens.WORKER,
        settings.worker_portal_secret,
        org_id=str(uow.org_id),
        subject=worker,
        email="",
        ttl_minutes=ttl_minutes or settings.worker_portal_token_ttl_minutes,
    )
    # A credential minted by an admin for someone else is an admin write: audit it.
    await audit.record(
        uow,
        "iam.worker_portal_link.issue",
        resource_type="worker",
        resource_id=worker,
        after={"expires_at": expires_at},
    )
    return PortalToken(token, expires_at)
