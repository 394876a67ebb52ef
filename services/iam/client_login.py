"""Client portal sign-in requests: a client asks for a magic link for one org.

The request is recorded as an event (`cws.iam.client_login.requested`) for the notify service, which
mints the link and emails it; the answer never says whether the email belongs to a known client.
Only with CLIENT_MAGIC_LINK_IN_RESPONSE (dev/test) is a token minted here and handed back."""

from __future__ import annotations

from dataclasses import dataclass

from cws.iam.v1 import events_pb2
from sqlalchemy import select

from libs.common.db import UnitOfWork
from services.iam import accounts, portal_links
from services.iam.events import IAM_CLIENT_LOGIN_REQUESTED
from services.iam.models import orgs
from services.iam.settings import IamSettings


@dataclass(frozen=True)
class LoginRequested:
    token: str = ""
    expires_at: int = 0


async def request_login(uow: UnitOfWork, settings: IamSettings, raw_email: str) -> LoginRequested:
    """`uow` is bound to the org the caller named; an org that does not exist records nothing."""
    email = accounts.normalise_email(raw_email)
    if await uow.session.scalar(select(orgs.c.id).where(orgs.c.id == uow.org_id)) is None:
        return LoginRequested()
    uow.add_event(
        IAM_CLIENT_LOGIN_REQUESTED,
        events_pb2.ClientLoginRequested(org_id=str(uow.org_id), email=email),
    )
    if not settings.client_magic_link_in_response:
        return LoginRequested()
    issued = await portal_links.issue_client_token(uow, settings, email=email, client_id="", ttl_minutes=0)
    return LoginRequested(issued.token, issued.expires_at)
