"""Connecting an org to a provider and back: the consent round trip (state bound to the user who
started it, PKCE verifier kept sealed here), the account choice (Google: which calendar, which team its
busy time blocks; QuickBooks: the company consented to), disconnecting, and the listing.

The state the browser carries is 32 random bytes; only its SHA-256 is stored, with the user id, the org
(RLS: another org's unit of work does not see it) and an expiry. It completes once."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cws.booking.v1 import booking_pb2
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert

from libs.common.db import UnitOfWork, unit_of_work
from libs.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    invalid,
)
from libs.common.grpc_client import peer_answers
from libs.common.logs import get_logger
from services.integrations import crypto, oauth, sync_state
from services.integrations.grants import PROVIDER_LABELS, GrantStore, NotConnected, not_audited
from services.integrations.models import connections, oauth_states
from services.integrations.sync_types import GOOGLE_CALENDAR, PROVIDERS, QUICKBOOKS, Grant, SyncStateRow

log = get_logger(__name__)

# Used and expired states are kept a day (what a support question may ask about), then deleted.
STATE_KEEP = timedelta(days=1)
MAX_CALENDAR_ID = 1024


@dataclass(frozen=True)
class IntegrationView:
    """One provider for one org, as the page shows it."""

    provider: str
    configured: bool
    status: str = "disconnected"
    account_id: str = ""
    account_name: str = ""
    busy_team_id: uuid.UUID | None = None
    connected_by: uuid.UUID | None = None
    connected_at: datetime | None = None
    status_reason: str = ""
    sync: SyncStateRow | None = None


def check_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise InvalidArgument.of(
            [
                FieldViolation(
                    "provider", f"unknown provider {provider[:40]!r}: google_calendar or quickbooks"
                )
            ],
            code="unknown_provider",
        )
    return provider


def principal_user_id(principal_id: str) -> uuid.UUID:
    """The user a state is bound to: the signed-in user's id; another principal (an operator's Basic
    Auth pair) by a stable id derived from its name, so the binding still holds."""
    try:
        return uuid.UUID(principal_id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"cws-principal:{principal_id}")


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def _label(provider: str) -> str:
    return PROVIDER_LABELS.get(provider, provider)


def _view(settings_configured: bool, provider: str, row: Any, state: SyncStateRow | None) -> IntegrationView:
    if row is None:
        return IntegrationView(provider=provider, configured=settings_configured, sync=state)
    return IntegrationView(
        provider=provider,
        configured=settings_configured,
        status=row.status,
        account_id=row.account_id,
        account_name=row.account_name,
        busy_team_id=row.busy_team_id,
        connected_by=row.connected_by,
        connected_at=row.connected_at,
        status_reason=row.status_reason,
        sync=state,
    )


async def _connection(uow: UnitOfWork, org_id: uuid.UUID, provider: str) -> Any:
    return (
        await uow.session.execute(
            select(connections).where(connections.c.org_id == org_id, connections.c.provider == provider)
        )
    ).first()


async def view(store: GrantStore, org_id: uuid.UUID, provider: str) -> IntegrationView:
    async with unit_of_work(store.db, org_id) as uow:
        row = await _connection(uow, org_id, provider)
        state = await sync_state.load_in(uow, org_id, provider)
    return _view(store.settings.configured(provider), provider, row, state)


async def list_integrations(store: GrantStore, org_id: uuid.UUID) -> list[IntegrationView]:
    return [await view(store, org_id, provider) for provider in PROVIDERS]


# --- the consent round trip --------------------------------------------------------------------


async def start_connect(
    store: GrantStore, org_id: uuid.UUID, principal_id: str, provider: str
) -> tuple[str, datetime]:
    """A new authorization URL for the caller, and when its state expires."""
    check_provider(provider)
    if not store.settings.configured(provider):
        raise FailedPrecondition(
            f"{_label(provider)} is not configured on this installation (its OAuth client id, secret and "
            "redirect URI are not all set)",
            code="not_configured",
        )
    box = store.require_box()
    state = secrets.token_urlsafe(32)
    verifier = oauth.new_code_verifier()
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=store.settings.integrations_state_ttl_seconds)
    async with unit_of_work(store.db, org_id) as uow:
        await uow.session.execute(delete(oauth_states).where(oauth_states.c.expires_at < now - STATE_KEEP))
        await uow.session.execute(
            insert(oauth_states).values(
                id=uuid.uuid4(),
                org_id=org_id,
                provider=provider,
                state_hash=state_hash(state),
                user_id=principal_user_id(principal_id),
                code_verifier_sealed=box.seal(verifier, org_id, provider, crypto.VERIFIER),
                expires_at=expires_at,
            )
        )
    url = oauth.authorization_url(store.settings, provider, state, oauth.code_challenge(verifier))
    return url, expires_at


async def _claim_state(
    store: GrantStore, org_id: uuid.UUID, principal_id: str, state: str
) -> tuple[str, str]:
    """The state's provider and PKCE verifier; the state is used from here on, whatever follows."""
    if not state:
        raise invalid("state", "state is required (the one the provider sent back)")
    with not_audited():  # the connection's own unit of work is the audited one
        return await _claim(store, org_id, principal_id, state)


async def _claim(store: GrantStore, org_id: uuid.UUID, principal_id: str, state: str) -> tuple[str, str]:
    async with unit_of_work(store.db, org_id) as uow:
        row = (
            await uow.session.execute(
                select(oauth_states).where(oauth_states.c.state_hash == state_hash(state)).with_for_update()
            )
        ).first()
        if row is None:
            raise InvalidArgument.of(
                [
                    FieldViolation(
                        "state",
                        "is unknown: this sign-in was not started from this organisation; start connecting again",
                    )
                ],
                code="oauth_state_unknown",
            )
        if row.user_id != principal_user_id(principal_id):
            raise PermissionDenied(
                "this sign-in was started by another user: the user who clicked Connect must finish it",
                code="oauth_state_other_user",
            )
        if row.used_at is not None:
            raise FailedPrecondition(
                "this sign-in was already completed (a state is used once): start connecting again",
                code="oauth_state_used",
            )
        if row.expires_at <= datetime.now(UTC):
            raise FailedPrecondition(
                "this sign-in took too long and expired: start connecting again", code="oauth_state_expired"
            )
        await uow.session.execute(
            update(oauth_states).where(oauth_states.c.id == row.id).values(used_at=datetime.now(UTC))
        )
        provider = row.provider
        verifier = store.require_box().open(row.code_verifier_sealed, org_id, provider, crypto.VERIFIER)
    return provider, verifier


async def complete_connect(
    store: GrantStore,
    org_id: uuid.UUID,
    principal_id: str,
    *,
    state: str,
    code: str,
    realm_id: str = "",
    error: str = "",
) -> IntegrationView:
    provider, verifier = await _claim_state(store, org_id, principal_id, state)
    label = _label(provider)
    if error:
        if error == "access_denied":
            raise FailedPrecondition(
                f"access was denied at {label}: the integration was not connected", code="oauth_access_denied"
            )
        raise FailedPrecondition(
            f"{label} refused the connection ({error[:100]}): the integration was not connected",
            code="oauth_provider_error",
        )
    if not code:
        raise invalid("code", "code is required (the one the provider sent back)")
    if provider == QUICKBOOKS and not realm_id.strip():
        raise invalid("realm_id", "QuickBooks sends realmId with the code: it is required")
    try:
        tokens = await oauth.exchange_code(store.http, store.settings, provider, code, verifier)
    except oauth.OAuthRefused as refused:
        raise FailedPrecondition(
            f"{label} refused the authorization code ({refused.error}): start connecting again",
            code="oauth_code_refused",
        ) from None
    except (oauth.ProviderUnavailable, oauth.RateLimited):
        raise Unavailable(
            f"{label} could not be reached: try connecting again shortly", code="provider_unavailable"
        ) from None

    account_id, account_name = "", ""
    if provider == QUICKBOOKS:
        account_id = realm_id.strip()
        account_name = await _company_name(store, org_id, tokens.access_token, account_id)

    now = datetime.now(UTC)
    values = {
        **store.sealed_tokens(org_id, provider, tokens),
        "status": "connected",
        "account_id": account_id,
        "account_name": account_name,
        "busy_team_id": None,
        "connected_by": principal_user_id(principal_id),
        "connected_at": now,
        "status_reason": "",
        "updated_at": now,
    }
    async with unit_of_work(store.db, org_id) as uow:
        before = await _connection(uow, org_id, provider)
        statement = insert(connections).values(id=uuid.uuid4(), org_id=org_id, provider=provider, **values)
        await uow.session.execute(
            statement.on_conflict_do_update(index_elements=["org_id", "provider"], set_=values)
        )
        uow.audit_change(
            {
                "status": before.status if before else "disconnected",
                "account_id": before.account_id if before else "",
            },
            {"status": "connected", "account_id": account_id},
        )
    log.info("integration_connected", org_id=str(org_id), provider=provider)
    return await view(store, org_id, provider)


async def _company_name(store: GrantStore, org_id: uuid.UUID, access_token: str, realm_id: str) -> str:
    """QuickBooks' CompanyInfo name (qbo.company_name); the realm id when it cannot be read now (the
    connection stands either way)."""
    from services.integrations import qbo

    grant = Grant(
        org_id=org_id, provider=QUICKBOOKS, access_token=access_token, account_id=realm_id, account_name=""
    )
    try:
        name = await qbo.company_name(grant, store.settings)
        return str(name) or realm_id
    except (oauth.OAuthError, ServiceError) as error:
        log.warning("qbo_company_name_unavailable", org_id=str(org_id), error=str(error)[:200])
        return realm_id


# --- the account choice (Google Calendar) ------------------------------------------------------


async def list_calendars(store: GrantStore, org_id: uuid.UUID) -> list[Any]:
    """The calendars the grant can see (gcal.list_calendars: objects with id, summary, primary,
    access_role)."""
    from services.integrations import gcal

    grant = await _grant_for_call(store, org_id, GOOGLE_CALENDAR)
    try:
        found = await gcal.list_calendars(
            grant, store.settings, refresh=lambda: store.refreshed_grant(org_id, GOOGLE_CALENDAR)
        )
    except oauth.GrantRevoked:
        await store.mark_revoked(org_id, GOOGLE_CALENDAR)
        raise FailedPrecondition(
            "the Google grant was revoked: connect again", code="grant_revoked"
        ) from None
    except oauth.RateLimited as limited:
        raise ResourceExhausted(
            "Google is rate limiting: try again shortly",
            code="provider_rate_limited",
            retry_after_seconds=max(1, int(limited.retry_after)),
        ) from None
    except oauth.ProviderUnavailable:
        raise Unavailable(
            "Google Calendar could not be reached: try again shortly", code="provider_unavailable"
        ) from None
    return list(found)


async def _grant_for_call(store: GrantStore, org_id: uuid.UUID, provider: str) -> Grant:
    try:
        return await store.current_grant(org_id, provider)
    except oauth.GrantRevoked:
        raise FailedPrecondition(
            f"the {_label(provider)} grant was revoked: connect again", code="grant_revoked"
        ) from None
    except (oauth.ProviderUnavailable, oauth.RateLimited):
        raise Unavailable(
            f"{_label(provider)} could not be reached: try again shortly", code="provider_unavailable"
        ) from None
    except oauth.OAuthRefused as refused:
        raise FailedPrecondition(
            f"{_label(provider)} refused the token refresh ({refused.error})", code="oauth_refresh_refused"
        ) from None


async def choose_calendar(
    store: GrantStore, org_id: uuid.UUID, calendar_id: str, busy_team_id: str
) -> IntegrationView:
    """Which calendar the org syncs (one the grant can see) and which team its busy time blocks
    ("" = every team). Another calendar than before starts the sync from no cursor."""
    calendar_id = calendar_id.strip()
    if not calendar_id or len(calendar_id) > MAX_CALENDAR_ID:
        raise invalid("calendar_id", "calendar_id is required (one of ListCalendars' ids)")
    team: uuid.UUID | None = None
    if busy_team_id.strip():
        try:
            team = uuid.UUID(busy_team_id.strip())
        except ValueError:
            raise invalid("busy_team_id", "busy_team_id must be a team id or empty") from None
    calendars = await list_calendars(store, org_id)
    chosen = next((c for c in calendars if getattr(c, "id", None) == calendar_id), None)
    if chosen is None:
        raise invalid("calendar_id", "this calendar is not one the connected Google account can see")
    if team is not None:
        with store.peers.acting(org_id), peer_answers("booking"):
            teams = await store.peers.booking.stub.ListTeams(booking_pb2.ListTeamsRequest())
        if str(team) not in {t.id for t in teams.teams}:
            raise NotFound("no such team in this organisation", code="team_not_found")
    async with unit_of_work(store.db, org_id) as uow:
        row = await _connection(uow, org_id, GOOGLE_CALENDAR)
        if row is None or row.status != "connected":
            raise NotConnected("Google Calendar is not connected for this organisation")
        await uow.session.execute(
            update(connections)
            .where(connections.c.id == row.id)
            .values(
                account_id=calendar_id,
                account_name=str(getattr(chosen, "summary", "") or calendar_id),
                busy_team_id=team,
                updated_at=datetime.now(UTC),
            )
        )
        if row.account_id != calendar_id:
            await sync_state.reset_cursor(uow, org_id, GOOGLE_CALENDAR, calendar_id)
        uow.audit_change(
            {"calendar_id": row.account_id, "busy_team_id": str(row.busy_team_id or "")},
            {"calendar_id": calendar_id, "busy_team_id": str(team or "")},
        )
    return await view(store, org_id, GOOGLE_CALENDAR)


# --- disconnecting -------------------------------------------------------------------------------


async def disconnect(store: GrantStore, org_id: uuid.UUID, provider: str) -> tuple[IntegrationView, bool]:
    """Revoke at the provider (best effort), forget the tokens, status disconnected; the id mappings
    stay. Returns the view and whether the provider confirmed the revocation."""
    check_provider(provider)
    async with unit_of_work(store.db, org_id) as uow:
        row = await _connection(uow, org_id, provider)
    if row is None or row.status == "disconnected":
        return await view(store, org_id, provider), False
    revoked = False
    token = _token_to_revoke(store, org_id, row)
    if token:
        try:
            revoked = await oauth.revoke(store.http, store.settings, provider, token)
        except oauth.OAuthError as error:
            log.warning(
                "integration_revoke_failed", org_id=str(org_id), provider=provider, error=str(error)[:200]
            )
    async with unit_of_work(store.db, org_id) as uow:
        await uow.session.execute(
            update(connections)
            .where(connections.c.id == row.id)
            .values(
                status="disconnected",
                status_reason=""
                if revoked or row.status == "revoked"
                else "the provider could not be told; "
                "revoke the app's access in the provider's account settings",
                access_token_sealed=None,
                refresh_token_sealed=None,
                token_expires_at=None,
                updated_at=datetime.now(UTC),
            )
        )
        uow.audit_change({"status": row.status}, {"status": "disconnected", "revoked_at_provider": revoked})
    if provider == GOOGLE_CALENDAR:
        await _remove_busy_time(store, org_id)
    log.info("integration_disconnected", org_id=str(org_id), provider=provider, revoked=revoked)
    return await view(store, org_id, provider), revoked


async def _remove_busy_time(store: GrantStore, org_id: uuid.UUID) -> None:
    """Nothing keeps the calendar's busy time current once disconnected, so its blackouts go too.
    Best effort: the grant is already forgotten; with booking away the blackouts stay (logged) and
    go when the org connects a calendar again (a pass removes every other calendar's busy time)."""
    from services.integrations.gcal import remove_busy_time  # the provider module imports the core

    try:
        with not_audited():
            removed = await remove_busy_time(store.db, store.peers, org_id)
    except ServiceError as error:
        log.warning("integration_busy_time_kept", org_id=str(org_id), error=str(error)[:200])
        return
    log.info("integration_busy_time_removed", org_id=str(org_id), blackouts=removed)


def _token_to_revoke(store: GrantStore, org_id: uuid.UUID, row: Any) -> str:
    """The refresh token (revokes the whole grant at both providers), else the access token."""
    if store.box is None:
        return ""
    for sealed, kind in (
        (row.refresh_token_sealed, crypto.REFRESH),
        (row.access_token_sealed, crypto.ACCESS),
    ):
        if sealed is not None:
            try:
                return store.box.open(sealed, org_id, row.provider, kind)
            except crypto.TokenUnreadable:
                continue
    return ""
