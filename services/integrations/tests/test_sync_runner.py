"""The sync runner's decisions (sync_runner.py), through SyncGoogleCalendar / SyncQuickBooks as the
jobs runner calls them (a service context per org): each skip reason, the interval, the breaker, and
the recorded state operators read through ListSyncStates."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import httpx
from cws.integrations.v1 import integrations_pb2 as pb

from libs.common.db import Database
from services.integrations.grants import GrantStore
from services.integrations.models import SCHEMA, event_tables
from services.integrations.peers import open_peers
from services.integrations.settings import IntegrationsSettings
from services.integrations.sync_runner import NOT_CONFIGURED, SyncRunner
from services.integrations.tests.helpers import connect, integration, owner_of, stub
from tools import testkit


async def sync(api, org_id: str, provider: str = "google_calendar", force: bool = False) -> Any:
    metadata = testkit.as_service(org_id)
    if provider == "google_calendar":
        return await api.SyncGoogleCalendar(pb.SyncGoogleCalendarRequest(force=force), metadata=metadata)
    return await api.SyncQuickBooks(pb.SyncQuickBooksRequest(force=force), metadata=metadata)


async def choose_first_calendar(api, user) -> str:
    calendars = await api.ListCalendars(pb.ListCalendarsRequest(), metadata=user.md())
    chosen = calendars.calendars[0].id
    await api.ChooseCalendar(pb.ChooseCalendarRequest(calendar_id=chosen), metadata=user.md())
    return chosen


async def test_an_org_that_is_not_connected_is_skipped_and_says_so(integrations, make_org):
    org = await make_org()
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        for provider in ("google_calendar", "quickbooks"):
            answer = await sync(api, org.org_id, provider)
            assert answer.skipped and answer.skip_reason == "not_connected"
        assert not (await integration(api, owner_of(org), "google_calendar")).sync.last_sync_at.seconds


async def test_google_without_a_chosen_calendar_is_skipped(integrations, make_org):
    org = await make_org()
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, owner_of(org))
        answer = await sync(api, org.org_id, force=True)
        assert answer.skipped and answer.skip_reason == "no_calendar"


async def test_a_pass_runs_once_per_interval_unless_forced_and_is_recorded(integrations, make_org):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, user)
        await choose_first_calendar(api, user)
        first = await sync(api, org.org_id)  # never synced: due
        assert not first.skipped, first
        second = await sync(api, org.org_id)
        assert second.skipped and second.skip_reason == "not_due"
        forced = await sync(api, org.org_id, force=True)
        assert not forced.skipped

        state = (await integration(api, user, "google_calendar")).sync
        assert state.last_success_at.seconds and state.last_sync_at.seconds and state.last_error == ""
        assert state.cursor  # the pass's cursor, kept for the next

        # Operators read every org's state (service callers only).
        await testkit.rpc_error(
            api.ListSyncStates(pb.ListSyncStatesRequest(), metadata=user.md()),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        listed = await api.ListSyncStates(
            pb.ListSyncStatesRequest(provider="google_calendar"), metadata=testkit.as_service("")
        )
        mine = [s for s in listed.states if s.org_id == org.org_id]
        assert [s.provider for s in mine] == ["google_calendar"]
        assert mine[0].last_success_at == state.last_success_at
        assert all(s.provider == "google_calendar" for s in listed.states)


async def test_the_breaker_opens_after_failures_and_lets_a_trial_through_after_its_reset(
    integrations, fake_google, make_org
):
    """The session runs integrations with INTEGRATIONS_BREAKER_FAILURES=2 and a 1 s reset."""
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, user)
        await choose_first_calendar(api, user)
        fake_google.control("fail", {"count": 2, "status": 503})
        for _ in range(2):
            error = await testkit.rpc_error(sync(api, org.org_id, force=True), grpc.StatusCode.UNAVAILABLE)
            assert error.reason == "provider_unavailable"
        state = (await integration(api, user, "google_calendar")).sync
        assert "unavailable" in state.last_error and state.last_error_at.seconds
        assert not state.last_success_at.seconds

        answer = await sync(api, org.org_id, force=True)
        assert answer.skipped and answer.skip_reason == "breaker_open"

        await asyncio.sleep(1.2)  # the reset: one trial pass goes, succeeds, and closes the breaker
        trial = await sync(api, org.org_id, force=True)
        assert not trial.skipped
        state = (await integration(api, user, "google_calendar")).sync
        assert state.last_error == "" and state.last_success_at.seconds
        assert not (await sync(api, org.org_id, force=True)).skipped


async def test_a_provider_not_configured_here_is_skipped(stack, make_org):
    """Google's OAuth client not set on this installation (the session's process has both): the
    runner alone, on the session's database."""
    org = await make_org()
    settings = IntegrationsSettings(app_env="test", database_url=stack.app_url)
    assert not settings.configured("google_calendar") and not settings.configured("quickbooks")
    db = Database(settings.database_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    peers = open_peers(settings)
    try:
        async with httpx.AsyncClient() as http:
            runner = SyncRunner(GrantStore(db, settings, http, peers, None))
            for provider in ("google_calendar", "quickbooks"):
                outcome = await runner.sync(uuid.UUID(org.org_id), provider, force=True)
                assert outcome.skipped and outcome.skip_reason == NOT_CONFIGURED
    finally:
        await peers.close()
        await db.dispose()
