"""gcal-sync end to end: the real integrations and booking services, google-api-python-client against
tools/fake_google.py (Calendar v3 + OAuth). Each test connects its own org to its own Google user
(one OAuth grant = one fake account with its own calendars), chooses the "Cleaning jobs" calendar and
runs passes through SyncGoogleCalendar(force) as an owner's "sync now" does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.integrations.v1 import integrations_pb2 as pb

from libs.common.convert import from_ts, to_ts
from services.integrations.tests.helpers import User, connect, owner_of, stub
from tools.testkit import as_role, rpc_error, signing_channel, sql

Code = grpc.StatusCode


def at(hours: float) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Org:
    """One org connected to its own Google user, with its calendar chosen."""

    user: User
    calendar_id: str
    integrations: Any
    booking: booking_pb2_grpc.BookingServiceStub
    google: Any

    @property
    def org_id(self) -> str:
        return self.user.org_id

    async def sync(self) -> dict[str, int]:
        done = await self.integrations.SyncGoogleCalendar(
            pb.SyncGoogleCalendarRequest(force=True), metadata=self.user.md()
        )
        assert not done.skipped, done.skip_reason
        return dict(done.counts)

    async def events(self) -> dict[str, dict[str, Any]]:
        """Every event of the calendar (deleted ones too), by id."""
        listed = await self.google.acontrol(f"events?calendar_id={quote(self.calendar_id)}", method="GET")
        return {e["id"]: e for e in listed["items"]}

    async def add_event(self, start: datetime, end: datetime, **fields: Any) -> dict[str, Any]:
        body = {"calendar_id": self.calendar_id, "start": stamp(start), "end": stamp(end), **fields}
        return await self.google.acontrol("events", body)  # type: ignore[no-any-return]

    async def edit_event(self, event_id: str, **fields: Any) -> dict[str, Any]:
        path = f"events/{quote(self.calendar_id)}/{event_id}"
        return await self.google.acontrol(path, fields, method="PATCH")  # type: ignore[no-any-return]

    async def delete_event(self, event_id: str) -> None:
        await self.google.acontrol(f"events/{quote(self.calendar_id)}/{event_id}", method="DELETE")

    async def team(self, name: str) -> booking_pb2.Team:
        made = await self.booking.CreateTeam(booking_pb2.CreateTeamRequest(name=name), metadata=self.owner)
        return made.team

    async def make_booking(
        self, start: datetime, name: str = "Casey Client", **fields: Any
    ) -> booking_pb2.Booking:
        made = await self.booking.CreateBooking(
            booking_pb2.CreateBookingRequest(
                starts_at=to_ts(start),
                duration_minutes=120,
                client_name=name,
                client_email="casey@example.com",
                client_phone="780-555-0101",
                address="10 Main St, Edmonton",
                cleaning_type="standard",
                beds=2,
                baths=1,
                **fields,
            ),
            metadata=self.owner,
        )
        return made.booking

    async def blackouts(self) -> list[booking_pb2.Blackout]:
        listed = await self.booking.ListBlackouts(booking_pb2.ListBlackoutsRequest(), metadata=self.owner)
        return list(listed.blackouts)

    @property
    def owner(self) -> Any:
        return as_role(self.org_id, "OWNER")


@pytest.fixture
async def channels(integrations: Any, booking: Any) -> AsyncIterator[tuple[Any, Any]]:
    async with signing_channel(integrations.target) as ichannel, signing_channel(booking.target) as bchannel:
        yield stub(ichannel), booking_pb2_grpc.BookingServiceStub(bchannel)


@pytest.fixture
async def connected(channels: tuple[Any, Any], make_org: Any, fake_google: Any) -> AsyncIterator[Any]:
    """make(busy_team_id="") → an Org connected to a fresh Google user, its "Cleaning jobs" calendar
    chosen. Faults a test left at the fake are cleared after it."""
    integrations, booking = channels

    async def make(busy_team_id: str = "") -> Org:
        user = owner_of(await make_org())
        await connect(integrations, user)
        calendars = await integrations.ListCalendars(pb.ListCalendarsRequest(), metadata=user.md())
        jobs = next(c for c in calendars.calendars if c.summary == "Cleaning jobs")
        assert any(c.primary for c in calendars.calendars)
        await integrations.ChooseCalendar(
            pb.ChooseCalendarRequest(calendar_id=jobs.id, busy_team_id=busy_team_id), metadata=user.md()
        )
        return Org(user, jobs.id, integrations, booking, fake_google)

    yield make
    await fake_google.acontrol("clear-faults")


async def calls_since(google: Any, start: float) -> list[dict[str, Any]]:
    return [c for c in (await google.acontrol("calls", method="GET"))["calls"] if c["at"] >= start]


async def test_bookings_become_events_and_follow_every_change(connected):
    org = await connected()
    alpha = await org.team("Alpha Crew")
    assigned = await org.make_booking(at(48), "Ada Assigned")
    await org.booking.AssignBooking(
        booking_pb2.AssignBookingRequest(booking_id=assigned.id, team_id=alpha.id), metadata=org.owner
    )
    cancelled = await org.make_booking(at(52), "Cam Cancelled")
    moved = await org.make_booking(at(56), "Mo Moved")
    far = await org.make_booking(at(24 * 200), "Fay Faraway")  # beyond GCAL_SYNC_FUTURE_DAYS

    counts = await org.sync()
    assert counts["events_created"] == 3
    events = await org.events()
    ids = {uuid.UUID(b.id).hex: b for b in (assigned, cancelled, moved)}
    assert set(events) == set(ids)
    first = events[uuid.UUID(assigned.id).hex]
    assert first["summary"] == "Cleaning: Ada Assigned (pending)"
    assert "Team: Alpha Crew" in first["description"] and first["location"] == "10 Main St, Edmonton"
    assert first["start"]["dateTime"] == stamp(at(48)) and first["end"]["dateTime"] == stamp(at(50))
    assert first["extendedProperties"]["private"]["cws_booking_id"] == assigned.id
    for event in events.values():  # no contact details beyond the name and address
        assert "casey@example.com" not in str(event) and "780-555-0101" not in str(event)
    assert uuid.UUID(far.id).hex not in events

    # Reschedule, cancel, assign, confirm: each shows in Google on the next pass.
    await org.booking.RescheduleBooking(
        booking_pb2.RescheduleBookingRequest(
            booking_id=moved.id, starts_at=to_ts(at(60)), duration_minutes=90
        ),
        metadata=org.owner,
    )
    await org.booking.TransitionBooking(
        booking_pb2.TransitionBookingRequest(booking_id=cancelled.id, action="cancel"), metadata=org.owner
    )
    await org.booking.AssignBooking(
        booking_pb2.AssignBookingRequest(booking_id=moved.id, team_id=alpha.id), metadata=org.owner
    )
    await org.booking.TransitionBooking(
        booking_pb2.TransitionBookingRequest(booking_id=assigned.id, action="confirm"), metadata=org.owner
    )
    counts = await org.sync()
    assert counts.get("events_created", 0) == 0
    assert counts["events_updated"] == 2 and counts["events_deleted"] == 1
    events = await org.events()
    assert len(events) == 3
    moved_event = events[uuid.UUID(moved.id).hex]
    assert moved_event["start"]["dateTime"] == stamp(at(60)) and moved_event["end"]["dateTime"] == stamp(
        at(61.5)
    )
    assert "Team: Alpha Crew" in moved_event["description"]
    assert events[uuid.UUID(cancelled.id).hex]["status"] == "cancelled"
    assert events[uuid.UUID(assigned.id).hex]["summary"] == "Cleaning: Ada Assigned"

    # Nothing changed: no writes to Google at all.
    start = time.time()
    counts = await org.sync()
    writes = [c for c in await calls_since(org.google, start) if c["operation"] != "events.list"]
    assert writes == [] and counts.get("events_updated", 0) == 0


async def test_busy_time_becomes_blackouts_of_every_team_then_only_the_busy_team(connected, stack):
    org = await connected()
    alpha, beta = await org.team("Alpha"), await org.team("Beta")
    busy = await org.add_event(at(30), at(32), summary="Dentist")
    await org.add_event(at(30), at(31), summary="Reminder", transparency="transparent")
    await org.add_event(at(33), at(34), summary="Called off", status="cancelled")
    await org.add_event(at(24 * 200), at(24 * 200 + 1), summary="Far away")

    counts = await org.sync()
    assert counts["busy_created"] == 2  # one event, two teams
    blackouts = await org.blackouts()
    assert sorted(b.team_id for b in blackouts) == sorted([alpha.id, beta.id])
    assert all(from_ts(b.starts_at, "s") == at(30) and from_ts(b.ends_at, "e") == at(32) for b in blackouts)
    assert {b.reason for b in blackouts} == {"Busy (Google Calendar)"}  # not the event's title
    suggested = await org.booking.ScheduleSuggestions(
        booking_pb2.ScheduleSuggestionsRequest(starts_at=to_ts(at(31)), ends_at=to_ts(at(33))),
        metadata=org.owner,
    )
    assert list(suggested.teams) == []
    conflicts = await org.booking.ScheduleConflicts(
        booking_pb2.ScheduleConflictsRequest(
            starts_at=to_ts(at(31)), ends_at=to_ts(at(33)), team_id=alpha.id
        ),
        metadata=org.owner,
    )
    assert conflicts.has_conflict

    # Moved in Google: the next pass reads only the change (the sync token) and moves the blackouts.
    await org.edit_event(busy["id"], start={"dateTime": stamp(at(40))}, end={"dateTime": stamp(at(41))})
    start = time.time()
    counts = await org.sync()
    lists = [c for c in await calls_since(org.google, start) if c["operation"] == "events.list"]
    assert lists and all("syncToken" in c["query"] and "timeMin" not in c["query"] for c in lists)
    assert counts["busy_updated"] == 2 and counts.get("busy_created", 0) == 0
    blackouts = await org.blackouts()
    assert len(blackouts) == 2 and all(from_ts(b.starts_at, "s") == at(40) for b in blackouts)

    # The busy team chosen: the other team's blackout goes.
    await org.integrations.ChooseCalendar(
        pb.ChooseCalendarRequest(calendar_id=org.calendar_id, busy_team_id=alpha.id), metadata=org.user.md()
    )
    await org.sync()
    assert [b.team_id for b in await org.blackouts()] == [alpha.id]

    # Deleted in Google: the blackout goes; a rerun changes nothing.
    await org.delete_event(busy["id"])
    counts = await org.sync()
    assert counts["busy_deleted"] == 1
    assert await org.blackouts() == []
    rows = await sql(
        stack.admin_url, "SELECT count(*) FROM integrations.gcal_busy WHERE org_id = %s", (org.org_id,)
    )
    assert rows[0][0] == 0


async def test_listings_page_and_a_stale_sync_token_means_a_full_resync(connected):
    org = await connected()
    team = await org.team("Alpha")
    for i in range(9):
        await org.add_event(at(30 + 2 * i), at(31 + 2 * i), summary=f"Meeting {i}")
    start = time.time()
    counts = await org.sync()
    lists = [c for c in await calls_since(org.google, start) if c["operation"] == "events.list"]
    assert len(lists) >= 3 and counts["pages"] == len(lists)  # the fake answers 4 events a page
    assert sum("pageToken" in c["query"] for c in lists) == len(lists) - 1
    assert len(await org.blackouts()) == 9

    await org.google.acontrol("invalidate-sync-tokens", {"calendar_id": org.calendar_id})
    await org.add_event(at(80), at(81), summary="Late addition")
    counts = await org.sync()
    assert counts["full_resyncs"] == 1
    blackouts = await org.blackouts()
    assert len(blackouts) == 10 and {b.team_id for b in blackouts} == {team.id}


async def test_rate_limits_are_waited_out_as_google_asks(connected):
    org = await connected()
    await org.make_booking(at(48))
    await org.google.acontrol("rate-limit", {"count": 1, "retry_after": 2})
    await org.google.acontrol("rate-limit", {"count": 1, "retry_after": 1, "status": 403})
    start = time.time()
    counts = await org.sync()
    assert counts["rate_limit_waits"] == 2 and counts["events_created"] == 1
    calls = await calls_since(org.google, start)
    assert [c["status"] for c in calls[:3]] == [429, 403, 200]
    assert calls[1]["at"] - calls[0]["at"] >= 2 and calls[2]["at"] - calls[1]["at"] >= 1

    # Longer than INTEGRATIONS_MAX_RETRY_AFTER_SECONDS (5 s here): the pass ends, the cursor kept.
    before = await org.integrations.ListIntegrations(pb.ListIntegrationsRequest(), metadata=org.user.md())
    cursor = next(i for i in before.integrations if i.provider == "google_calendar").sync.cursor
    await org.make_booking(at(50))
    await org.google.acontrol("rate-limit", {"count": 1, "retry_after": 60})
    error = await rpc_error(
        org.integrations.SyncGoogleCalendar(pb.SyncGoogleCalendarRequest(force=True), metadata=org.user.md()),
        Code.UNAVAILABLE,
    )
    assert error.reason == "provider_rate_limited"
    after = await org.integrations.ListIntegrations(pb.ListIntegrationsRequest(), metadata=org.user.md())
    state = next(i for i in after.integrations if i.provider == "google_calendar").sync
    assert state.cursor == cursor and "rate limited" in state.last_error
    await asyncio.sleep(1.1)  # the breaker (2 failures, 1 s) is closed anyway after one failure
    counts = await org.sync()
    assert counts["events_created"] == 1 and len(await org.events()) == 2


async def test_an_expired_access_token_is_refreshed_once_and_the_pass_goes_on(connected):
    org = await connected()
    await org.make_booking(at(48))
    await org.google.acontrol("expire-tokens")
    start = time.time()
    counts = await org.sync()
    assert counts["events_created"] == 1
    statuses = [c["status"] for c in await calls_since(org.google, start)]
    assert statuses[0] == 401 and statuses.count(401) == 1 and statuses[1:] and set(statuses[1:]) == {200}


async def test_a_pass_that_dies_after_an_insert_makes_no_second_event_when_rerun(connected):
    org = await connected()
    made = [await org.make_booking(at(48 + 4 * i), f"Client {i}") for i in range(3)]
    # The first insert is done at Google but its answer never arrives; the client library's retry
    # of it then meets Google down: the pass fails before recording the event.
    await org.google.acontrol("drop", {"method": "insert", "count": 1})
    await org.google.acontrol("fail", {"method": "insert", "after": 1, "count": 1, "status": 503})
    error = await rpc_error(
        org.integrations.SyncGoogleCalendar(pb.SyncGoogleCalendarRequest(force=True), metadata=org.user.md()),
        Code.UNAVAILABLE,
    )
    assert error.reason == "provider_unavailable"
    assert len(await org.events()) == 1

    counts = await org.sync()
    assert counts["events_recovered"] == 1 and counts["events_created"] == 2
    events = await org.events()
    assert set(events) == {uuid.UUID(b.id).hex for b in made}
    assert all(e["status"] != "cancelled" for e in events.values())
    # And again: nothing to do.
    counts = await org.sync()
    assert counts.get("events_created", 0) == 0 and len(await org.events()) == 3


async def test_an_event_edited_on_both_sides_ends_as_the_suite_has_it(connected):
    org = await connected()
    both = await org.make_booking(at(48), "Bo Both")
    google_only = await org.make_booking(at(52), "Gus Google")
    deleted = await org.make_booking(at(56), "Del Deleted")
    await org.sync()
    both_id, google_id, deleted_id = (uuid.UUID(b.id).hex for b in (both, google_only, deleted))

    await org.edit_event(
        both_id,
        summary="Moved by the owner in Google",
        start={"dateTime": stamp(at(70))},
        end={"dateTime": stamp(at(71))},
    )
    await org.booking.RescheduleBooking(
        booking_pb2.RescheduleBookingRequest(
            booking_id=both.id, starts_at=to_ts(at(49)), duration_minutes=120
        ),
        metadata=org.owner,
    )
    await org.edit_event(google_id, summary="Renamed in Google", location="Elsewhere")
    await org.delete_event(deleted_id)

    counts = await org.sync()
    assert counts["own_edited_in_google"] == 3
    events = await org.events()
    assert events[both_id]["summary"] == "Cleaning: Bo Both (pending)"
    assert events[both_id]["start"]["dateTime"] == stamp(at(49))
    assert events[google_id]["summary"] == "Cleaning: Gus Google (pending)"
    assert events[google_id]["location"] == "10 Main St, Edmonton"
    assert events[deleted_id]["status"] == "tentative"
    # Our own events are never busy time.
    assert await org.blackouts() == []
    counts = await org.sync()
    assert counts.get("own_edited_in_google", 0) == 0 and counts.get("events_updated", 0) == 0


async def test_a_booking_deleted_outright_loses_its_event_on_the_next_full_pass(connected, stack):
    org = await connected()
    kept, abandoned = (
        await org.make_booking(at(48), "Kim Kept"),
        await org.make_booking(at(52), "Abe Abandoned"),
    )
    await org.sync()
    # What booking's cleanup of abandoned pending bookings does: the row is gone, no cancellation.
    await sql(stack.admin_url, "DELETE FROM booking.bookings WHERE id = %s", (abandoned.id,))
    counts = await org.sync()  # incremental: nothing tells it
    assert counts.get("events_deleted", 0) == 0
    await org.google.acontrol("invalidate-sync-tokens", {"calendar_id": org.calendar_id})
    counts = await org.sync()  # a full pass (as once a day) finds it
    assert counts["full_resyncs"] == 1 and counts["events_deleted"] == 1
    events = await org.events()
    assert events[uuid.UUID(abandoned.id).hex]["status"] == "cancelled"
    assert events[uuid.UUID(kept.id).hex]["status"] == "tentative"


async def test_another_calendar_chosen_takes_the_old_calendars_busy_time_away(connected):
    org = await connected()
    await org.team("Alpha")
    await org.add_event(at(30), at(31), summary="Busy on the jobs calendar")
    await org.sync()
    assert len(await org.blackouts()) == 1
    calendars = await org.integrations.ListCalendars(pb.ListCalendarsRequest(), metadata=org.user.md())
    primary = next(c for c in calendars.calendars if c.primary)
    await org.integrations.ChooseCalendar(
        pb.ChooseCalendarRequest(calendar_id=primary.id), metadata=org.user.md()
    )
    await org.sync()
    assert await org.blackouts() == []


async def test_a_disconnect_takes_the_calendars_busy_time_away(connected):
    # Nothing keeps it current once disconnected: left behind, it would block the teams for ever.
    org = await connected()
    await org.team("Alpha")
    await org.add_event(at(30), at(31), summary="Busy on the jobs calendar")
    await org.sync()
    assert len(await org.blackouts()) == 1
    await org.integrations.Disconnect(
        pb.DisconnectRequest(provider="google_calendar"), metadata=org.user.md()
    )
    assert await org.blackouts() == []


async def test_an_event_google_refuses_is_reported_and_the_others_go_on(connected):
    org = await connected()
    made = [await org.make_booking(at(48 + 4 * i), f"Client {i}") for i in range(3)]
    await org.google.acontrol("fail", {"method": "insert", "count": 1, "status": 400})
    counts = await org.sync()
    assert counts["events_failed"] == 1 and counts["events_created"] == 2
    listed = await org.integrations.ListIntegrations(pb.ListIntegrationsRequest(), metadata=org.user.md())
    state = next(i for i in listed.integrations if i.provider == "google_calendar").sync
    assert "Google Calendar answered 400" in state.last_error
    counts = await org.sync()  # the refused one again, now accepted
    assert counts["events_created"] == 1 and counts.get("events_failed", 0) == 0
    assert set(await org.events()) == {uuid.UUID(b.id).hex for b in made}
