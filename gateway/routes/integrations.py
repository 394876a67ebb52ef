"""/v1/admin/integrations: the org's Google Calendar and QuickBooks Online connections (issue 17).

Any staff role may list them (configured here or not, connected or not, the chosen account, the last
sync: cursor, counts, error); an OWNER or ADMIN connects (the OAuth 2.0 authorization-code flow with
PKCE: `connect` answers the provider's authorization URL, the console's /admin/settings/integrations
page receives the redirect back and posts its `code` and `state` to `callback`), lists the Google
calendars and chooses one, syncs now and disconnects. The integrations service checks every role
again, binds the state to the user and org that asked for it, and keeps the tokens; this file only
turns REST into its calls.

The provider is part of the path and only `google_calendar` and `quickbooks` exist: each route is
registered once per provider, so any other name is the router's 404 (Problem+JSON), never a call.
Writes are refused in ADMIN_READ_ONLY like every other admin write (gateway/access.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from cws.integrations.v1 import integrations_pb2
from fastapi import APIRouter, Depends
from pydantic import Field

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.problems import uuid_param
from gateway.routes.convert import optional_time
from gateway.schemas import Strict
from gateway.stubs import Integrations
from libs.common.roles import MANAGERS, STAFF

GOOGLE_CALENDAR = "google_calendar"
QUICKBOOKS = "quickbooks"
PROVIDERS = (GOOGLE_CALENDAR, QUICKBOOKS)
PREFIX = "/v1/admin/integrations"

router = APIRouter(prefix=PREFIX, tags=["integrations"], dependencies=[ADMIN])
ANY_STAFF = Depends(require_roles(*STAFF))
MANAGER = Depends(require_roles(*MANAGERS))


class CallbackIn(Strict):
    """What the provider sent the person back with (the console's page passes it on as is)."""

    state: Annotated[
        str, Field(min_length=1, max_length=512, description="the `state` query parameter, as received")
    ]
    code: Annotated[
        str,
        Field(
            max_length=4096, description="the `code` query parameter; empty when the provider sent `error`"
        ),
    ] = ""
    realm_id: Annotated[
        str, Field(max_length=64, description="QuickBooks' `realmId` query parameter (the company)")
    ] = ""
    error: Annotated[
        str,
        Field(max_length=256, description="the provider's `error` query parameter (access_denied, ...)"),
    ] = ""


class CalendarIn(Strict):
    calendar_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1024,
            description="a calendar id from GET /v1/admin/integrations/google_calendar/calendars",
        ),
    ]
    busy_team_id: str | None = Field(
        default=None,
        max_length=64,
        description="the team whose scheduling the calendar's busy time blocks; null: every team",
    )


def sync_view(state: integrations_pb2.SyncState) -> dict[str, Any]:
    return {
        "last_sync_at": optional_time(state, "last_sync_at"),
        "last_success_at": optional_time(state, "last_success_at"),
        "cursor": state.cursor or None,
        "counts": {name: int(value) for name, value in sorted(state.counts.items())},
        "last_error": state.last_error or None,
        "last_error_at": optional_time(state, "last_error_at"),
    }


def integration_view(integration: integrations_pb2.Integration) -> dict[str, Any]:
    return {
        "provider": integration.provider,
        "configured": integration.configured,
        "status": integration.status or "disconnected",
        "account_id": integration.account_id or None,
        "account_name": integration.account_name or None,
        "busy_team_id": integration.busy_team_id or None,
        "connected_by": integration.connected_by or None,
        "connected_at": optional_time(integration, "connected_at"),
        "status_reason": integration.status_reason or None,
        "sync": sync_view(integration.sync) if integration.HasField("sync") else None,
    }


@router.get(
    "",
    summary="The org's integrations (Google Calendar, QuickBooks Online): status, account, last sync",
    dependencies=[ANY_STAFF],
)
async def list_integrations(integrations: Integrations) -> dict[str, Any]:
    response = await integrations.ListIntegrations(integrations_pb2.ListIntegrationsRequest())
    return {"integrations": [integration_view(found) for found in response.integrations]}


@router.post(
    "/callback",
    summary="Complete a connection with the code and state the provider sent back (OWNER, ADMIN)",
    dependencies=[MANAGER],
)
async def complete_connect(body: CallbackIn, integrations: Integrations) -> dict[str, Any]:
    response = await integrations.CompleteConnect(
        integrations_pb2.CompleteConnectRequest(
            state=body.state, code=body.code, realm_id=body.realm_id, error=body.error
        )
    )
    return {"integration": integration_view(response.integration)}


@router.get(
    f"/{GOOGLE_CALENDAR}/calendars",
    summary="The Google calendars the connection can see, to choose one (OWNER, ADMIN)",
    dependencies=[MANAGER],
)
async def list_calendars(integrations: Integrations) -> dict[str, Any]:
    response = await integrations.ListCalendars(integrations_pb2.ListCalendarsRequest())
    return {
        "calendars": [
            {
                "id": calendar.id,
                "summary": calendar.summary,
                "primary": calendar.primary,
                "access_role": calendar.access_role,
            }
            for calendar in response.calendars
        ]
    }


@router.put(
    f"/{GOOGLE_CALENDAR}/calendar",
    summary="Choose the calendar bookings sync with, and the team its busy time blocks (OWNER, ADMIN)",
    dependencies=[MANAGER],
)
async def choose_calendar(body: CalendarIn, integrations: Integrations) -> dict[str, Any]:
    team = uuid_param(body.busy_team_id, "busy_team_id") if body.busy_team_id else ""
    response = await integrations.ChooseCalendar(
        integrations_pb2.ChooseCalendarRequest(calendar_id=body.calendar_id, busy_team_id=team)
    )
    return {"integration": integration_view(response.integration)}


Route = Callable[..., Awaitable[dict[str, Any]]]


def _connect(provider: str) -> Route:
    async def connect(integrations: Integrations) -> dict[str, Any]:
        response = await integrations.StartConnect(integrations_pb2.StartConnectRequest(provider=provider))
        return {
            "authorization_url": response.authorization_url,
            "state_expires_at": optional_time(response, "state_expires_at"),
        }

    return connect


def _disconnect(provider: str) -> Route:
    async def disconnect(integrations: Integrations) -> dict[str, Any]:
        response = await integrations.Disconnect(integrations_pb2.DisconnectRequest(provider=provider))
        return {
            "integration": integration_view(response.integration),
            "revoked_at_provider": response.revoked_at_provider,
        }

    return disconnect


def _sync(provider: str) -> Route:
    async def sync(integrations: Integrations) -> dict[str, Any]:
        # "Sync now": one pass whatever the interval; skipped (with its reason) when the provider is
        # not configured or connected, no calendar is chosen, or its breaker is open.
        response: integrations_pb2.SyncGoogleCalendarResponse | integrations_pb2.SyncQuickBooksResponse
        if provider == GOOGLE_CALENDAR:
            response = await integrations.SyncGoogleCalendar(
                integrations_pb2.SyncGoogleCalendarRequest(force=True)
            )
        else:
            response = await integrations.SyncQuickBooks(integrations_pb2.SyncQuickBooksRequest(force=True))
        return {
            "skipped": response.skipped,
            "skip_reason": response.skip_reason or None,
            "counts": {name: int(value) for name, value in sorted(response.counts.items())},
        }

    return sync


NAMES = {GOOGLE_CALENDAR: "Google Calendar", QUICKBOOKS: "QuickBooks Online"}

for _provider in PROVIDERS:
    _name = NAMES[_provider]
    router.add_api_route(
        f"/{_provider}/connect",
        _connect(_provider),
        methods=["POST"],
        summary=f"Start connecting {_name}: the provider's authorization URL (OWNER, ADMIN)",
        dependencies=[MANAGER],
        operation_id=f"connect_{_provider}",
    )
    router.add_api_route(
        f"/{_provider}/disconnect",
        _disconnect(_provider),
        methods=["POST"],
        summary=f"Disconnect {_name}: the grant revoked at the provider, the tokens forgotten (OWNER, ADMIN)",
        dependencies=[MANAGER],
        operation_id=f"disconnect_{_provider}",
    )
    router.add_api_route(
        f"/{_provider}/sync",
        _sync(_provider),
        methods=["POST"],
        summary=f"Sync {_name} now, whatever the interval (OWNER, ADMIN)",
        dependencies=[MANAGER],
        operation_id=f"sync_{_provider}",
    )
