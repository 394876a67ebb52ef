"""Integrations' gRPC servicer: roles, ids and messages at the edge; the work is in connections.py
and sync_runner.py.

OWNER/ADMIN for every write, ListCalendars and "sync now"; any staff role may list. The sync calls
are the jobs runner's (a service context, which acts as ADMIN) or an admin's; ListSyncStates is for
suite services only (the jobs status page of operators), across orgs."""

from __future__ import annotations

from typing import TypeVar

import grpc
from cws.integrations.v1 import integrations_pb2 as pb
from cws.integrations.v1 import integrations_pb2_grpc

from libs.common import context as request_context
from libs.common.convert import to_ts_or_none
from libs.common.roles import MANAGERS, STAFF
from services.integrations import connections, sync_state
from services.integrations.connections import IntegrationView
from services.integrations.grants import GrantStore
from services.integrations.sync_runner import SyncOutcome, SyncRunner
from services.integrations.sync_types import GOOGLE_CALENDAR, QUICKBOOKS, SyncStateRow

Context = grpc.aio.ServicerContext


def sync_state_pb(row: SyncStateRow) -> pb.SyncState:
    return pb.SyncState(
        org_id=str(row.org_id),
        provider=row.provider,
        last_sync_at=to_ts_or_none(row.last_sync_at),
        last_success_at=to_ts_or_none(row.last_success_at),
        cursor=row.cursor,
        counts=row.counts,
        last_error=row.last_error,
        last_error_at=to_ts_or_none(row.last_error_at),
    )


def integration_pb(item: IntegrationView) -> pb.Integration:
    return pb.Integration(
        provider=item.provider,
        configured=item.configured,
        status=item.status,
        account_id=item.account_id,
        account_name=item.account_name,
        busy_team_id=str(item.busy_team_id or ""),
        connected_by=str(item.connected_by or ""),
        connected_at=to_ts_or_none(item.connected_at),
        status_reason=item.status_reason,
        sync=sync_state_pb(item.sync) if item.sync is not None else None,
    )


Answer = TypeVar("Answer", pb.SyncGoogleCalendarResponse, pb.SyncQuickBooksResponse)


def sync_response(outcome: SyncOutcome, answer: type[Answer]) -> Answer:
    return answer(skipped=outcome.skipped, skip_reason=outcome.skip_reason, counts=outcome.counts)


class IntegrationsServicer(integrations_pb2_grpc.IntegrationsServiceServicer):
    def __init__(self, store: GrantStore, runner: SyncRunner) -> None:
        self.store = store
        self.runner = runner

    async def ListIntegrations(
        self, request: pb.ListIntegrationsRequest, context: Context
    ) -> pb.ListIntegrationsResponse:
        request_context.require_role(*STAFF)
        items = await connections.list_integrations(self.store, request_context.current_org_id())
        return pb.ListIntegrationsResponse(integrations=[integration_pb(item) for item in items])

    async def StartConnect(
        self, request: pb.StartConnectRequest, context: Context
    ) -> pb.StartConnectResponse:
        ctx = request_context.require_role(*MANAGERS)
        url, expires_at = await connections.start_connect(
            self.store, request_context.current_org_id(), ctx.principal_id, request.provider
        )
        return pb.StartConnectResponse(authorization_url=url, state_expires_at=to_ts_or_none(expires_at))

    async def CompleteConnect(
        self, request: pb.CompleteConnectRequest, context: Context
    ) -> pb.CompleteConnectResponse:
        ctx = request_context.require_role(*MANAGERS)
        item = await connections.complete_connect(
            self.store,
            request_context.current_org_id(),
            ctx.principal_id,
            state=request.state,
            code=request.code,
            realm_id=request.realm_id,
            error=request.error,
        )
        return pb.CompleteConnectResponse(integration=integration_pb(item))

    async def ListCalendars(
        self, request: pb.ListCalendarsRequest, context: Context
    ) -> pb.ListCalendarsResponse:
        request_context.require_role(*MANAGERS)
        found = await connections.list_calendars(self.store, request_context.current_org_id())
        return pb.ListCalendarsResponse(
            calendars=[
                pb.Calendar(
                    id=str(getattr(c, "id", "")),
                    summary=str(getattr(c, "summary", "")),
                    primary=bool(getattr(c, "primary", False)),
                    access_role=str(getattr(c, "access_role", "")),
                )
                for c in found
            ]
        )

    async def ChooseCalendar(
        self, request: pb.ChooseCalendarRequest, context: Context
    ) -> pb.ChooseCalendarResponse:
        request_context.require_role(*MANAGERS)
        item = await connections.choose_calendar(
            self.store, request_context.current_org_id(), request.calendar_id, request.busy_team_id
        )
        return pb.ChooseCalendarResponse(integration=integration_pb(item))

    async def Disconnect(self, request: pb.DisconnectRequest, context: Context) -> pb.DisconnectResponse:
        request_context.require_role(*MANAGERS)
        item, revoked = await connections.disconnect(
            self.store, request_context.current_org_id(), request.provider
        )
        return pb.DisconnectResponse(integration=integration_pb(item), revoked_at_provider=revoked)

    async def SyncGoogleCalendar(
        self, request: pb.SyncGoogleCalendarRequest, context: Context
    ) -> pb.SyncGoogleCalendarResponse:
        request_context.require_role(*MANAGERS)
        outcome = await self.runner.sync(
            request_context.current_org_id(), GOOGLE_CALENDAR, force=request.force
        )
        return sync_response(outcome, pb.SyncGoogleCalendarResponse)

    async def SyncQuickBooks(
        self, request: pb.SyncQuickBooksRequest, context: Context
    ) -> pb.SyncQuickBooksResponse:
        request_context.require_role(*MANAGERS)
        outcome = await self.runner.sync(request_context.current_org_id(), QUICKBOOKS, force=request.force)
        return sync_response(outcome, pb.SyncQuickBooksResponse)

    async def ListSyncStates(
        self, request: pb.ListSyncStatesRequest, context: Context
    ) -> pb.ListSyncStatesResponse:
        request_context.require_service()
        if request.provider:
            connections.check_provider(request.provider)
        rows = await sync_state.all_states(self.store.db, request.provider)
        return pb.ListSyncStatesResponse(states=[sync_state_pb(row) for row in rows])
