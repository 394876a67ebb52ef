"""A connection's tokens as a usable Grant: opened from their sealed form, refreshed before they
expire (the new tokens stored at once), and, when the provider refuses the refresh token, the
connection marked revoked and the org's owners told by email.

A refresh holds the connection's row lock (SELECT ... FOR UPDATE) across the token request, so two
passes never refresh at once: Intuit rotates refresh tokens, and the loser would hold a dead one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cws.common.v1.context_pb2 import RequestContext
from sqlalchemy import select, update

from libs.common import context as request_context
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import FailedPrecondition, ServiceError
from libs.common.logs import get_logger
from services.integrations import crypto, oauth
from services.integrations.models import connections
from services.integrations.peers import Peers
from services.integrations.settings import IntegrationsSettings
from services.integrations.sync_types import GOOGLE_CALENDAR, Grant

__all__ = ["PROVIDER_LABELS", "REFRESH_MARGIN", "Grant", "GrantStore", "NotConnected"]

log = get_logger(__name__)

# Refreshed when it expires within this: a pass that starts with a token has it for its length.
REFRESH_MARGIN = timedelta(minutes=5)
PROVIDER_LABELS = {GOOGLE_CALENDAR: "Google Calendar", "quickbooks": "QuickBooks Online"}
REVOKED_AT = {
    GOOGLE_CALENDAR: "the grant was revoked at Google",
    "quickbooks": "the grant was revoked at Intuit",
}


class NotConnected(FailedPrecondition):
    default_code = "not_connected"


@contextlib.contextmanager
def not_audited() -> Iterator[None]:
    """Units of work inside write no admin audit record: the service's own bookkeeping (a token
    refreshed, a consent state used up, a sync pass's mappings and state) is no admin's action, and
    a sync every few minutes per org would bury the audit log. The admin actions themselves (connect,
    choose a calendar, disconnect) are audited; a revocation shows on the connection and its state.
    The unit of work audits by the current context's role (libs/common/db.py): a copy without one."""
    try:
        ctx = request_context.current()
    except ServiceError:
        yield
        return
    quiet = RequestContext()
    quiet.CopyFrom(ctx)
    quiet.role = ""
    token = request_context.set_current(quiet)
    try:
        yield
    finally:
        request_context.reset_current(token)


@dataclass
class GrantStore:
    """What the connection and sync modules share: the database, settings, the HTTP client for the
    providers' OAuth endpoints, the peers (notify for the owners' email) and the token box."""

    db: Database
    settings: IntegrationsSettings
    http: httpx.AsyncClient
    peers: Peers
    box: crypto.TokenBox | None

    def require_box(self) -> crypto.TokenBox:
        if self.box is None:
            raise FailedPrecondition(
                "INTEGRATIONS_TOKEN_KEY is not set: tokens cannot be stored", code="not_configured"
            )
        return self.box

    # --- tokens ---------------------------------------------------------------------------------

    def sealed_tokens(self, org_id: uuid.UUID, provider: str, tokens: oauth.TokenSet) -> dict[str, Any]:
        """The connection's token columns for `tokens` (the refresh token only when one was given)."""
        box = self.require_box()
        values: dict[str, Any] = {
            "access_token_sealed": box.seal(tokens.access_token, org_id, provider, crypto.ACCESS),
            "token_expires_at": tokens.expires_at,
        }
        if tokens.refresh_token:
            values["refresh_token_sealed"] = box.seal(tokens.refresh_token, org_id, provider, crypto.REFRESH)
        if tokens.scope:
            values["scopes"] = tokens.scope
        return values

    def _grant(self, row: Any) -> Grant:
        box = self.require_box()
        return Grant(
            org_id=row.org_id,
            provider=row.provider,
            access_token=box.open(row.access_token_sealed, row.org_id, row.provider, crypto.ACCESS),
            account_id=row.account_id,
            account_name=row.account_name,
            busy_team_id=row.busy_team_id,
        )

    async def _locked_row(self, uow: UnitOfWork, org_id: uuid.UUID, provider: str) -> Any:
        row = (
            await uow.session.execute(
                select(connections)
                .where(connections.c.org_id == org_id, connections.c.provider == provider)
                .with_for_update()
            )
        ).first()
        if row is None or row.status != "connected" or row.access_token_sealed is None:
            raise NotConnected(
                f"{PROVIDER_LABELS.get(provider, provider)} is not connected for this organisation"
            )
        return row

    async def current_grant(self, org_id: uuid.UUID, provider: str, *, force_refresh: bool = False) -> Grant:
        with not_audited():
            return await self._current_grant(org_id, provider, force_refresh)

    async def _current_grant(self, org_id: uuid.UUID, provider: str, force_refresh: bool) -> Grant:
        """The connection's grant, refreshed first when its access token expires within REFRESH_MARGIN
        (or always, with force_refresh). NotConnected when there is none; oauth.GrantRevoked (after
        marking the connection revoked and telling the owners) when the provider refused the refresh
        token; oauth.ProviderUnavailable / RateLimited / OAuthRefused as the refresh met them."""
        try:
            async with unit_of_work(self.db, org_id) as uow:
                row = await self._locked_row(uow, org_id, provider)
                now = datetime.now(UTC)
                expiring = row.token_expires_at is None or row.token_expires_at - now < REFRESH_MARGIN
                if not (force_refresh or expiring):
                    return self._grant(row)
                if row.refresh_token_sealed is None:
                    raise oauth.GrantRevoked("no refresh token is stored")
                try:
                    refresh_token = self.require_box().open(
                        row.refresh_token_sealed, org_id, provider, crypto.REFRESH
                    )
                except crypto.TokenUnreadable:
                    raise FailedPrecondition(
                        "the stored tokens cannot be opened (token key changed?): reconnect the integration",
                        code="tokens_unreadable",
                    ) from None
                tokens = await oauth.refresh(self.http, self.settings, provider, refresh_token)
                values = self.sealed_tokens(org_id, provider, tokens)
                await uow.session.execute(
                    update(connections)
                    .where(connections.c.id == row.id)
                    .values(**values, updated_at=datetime.now(UTC))
                )
                log.info("integration_token_refreshed", org_id=str(org_id), provider=provider)
                return Grant(
                    org_id=org_id,
                    provider=provider,
                    access_token=tokens.access_token,
                    account_id=row.account_id,
                    account_name=row.account_name,
                    busy_team_id=row.busy_team_id,
                )
        except oauth.GrantRevoked as revoked:
            await self.mark_revoked(org_id, provider, str(revoked))
            raise
        except crypto.TokenUnreadable:
            raise FailedPrecondition(
                "the stored tokens cannot be opened (token key changed?): reconnect the integration",
                code="tokens_unreadable",
            ) from None

    async def refreshed_grant(self, org_id: uuid.UUID, provider: str) -> Grant:
        """One forced refresh (an API answered 401 mid-pass)."""
        return await self.current_grant(org_id, provider, force_refresh=True)

    # --- revocation -----------------------------------------------------------------------------

    async def mark_revoked(self, org_id: uuid.UUID, provider: str, detail: str = "") -> bool:
        """The provider refused the grant: connection revoked, tokens forgotten, owners told (once per
        connection: the email's dedupe key is the connection's connect time). True if it was connected."""
        reason = REVOKED_AT.get(provider, "the grant was revoked")
        async with unit_of_work(self.db, org_id) as uow:
            row = (
                await uow.session.execute(
                    update(connections)
                    .where(
                        connections.c.org_id == org_id,
                        connections.c.provider == provider,
                        connections.c.status == "connected",
                    )
                    .values(
                        status="revoked",
                        status_reason=reason,
                        access_token_sealed=None,
                        refresh_token_sealed=None,
                        token_expires_at=None,
                        updated_at=datetime.now(UTC),
                    )
                    .returning(connections.c.id, connections.c.connected_at)
                )
            ).first()
        if row is None:
            return False
        log.warning("integration_grant_revoked", org_id=str(org_id), provider=provider, detail=detail[:200])
        await self._tell_owners(org_id, provider, row.id, row.connected_at)
        return True

    async def _tell_owners(
        self, org_id: uuid.UUID, provider: str, connection_id: uuid.UUID, connected_at: datetime | None
    ) -> None:
        label = PROVIDER_LABELS.get(provider, provider)
        stamp = connected_at.isoformat() if connected_at else "never"
        subject = f"{label} was disconnected: reconnect it to keep syncing"
        text = (
            f"The {label} integration of your organisation stopped working: {REVOKED_AT.get(provider, '')}"
            f" (the access was withdrawn, or the provider ended it).\n\n"
            f"Nothing syncs until an owner or admin connects it again under Settings > Integrations "
            f"(/admin/settings/integrations). What was synced before is kept."
        )
        try:
            for email in await self.peers.owner_emails(org_id):
                await self.peers.send_email(
                    org_id,
                    to=email,
                    subject=subject,
                    text=text,
                    email_type="integration_revoked",
                    dedupe_key=f"email:integration_revoked:{provider}:connection:{connection_id}:{stamp}:{email}",
                )
        except ServiceError as error:
            # The revocation stands and shows on the page; the email is best effort.
            log.warning(
                "integration_revoked_email_failed", org_id=str(org_id), provider=provider, error=str(error)
            )
