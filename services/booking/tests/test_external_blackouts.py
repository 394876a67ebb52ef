"""Busy time of an outside calendar (PutExternalBlackout, DeleteExternalBlackouts) and bookings changed
since a time (ListBookings.updated_since, Booking.updated_at), at booking's gRPC API: the real process,
called as integrations' gcal-sync calls it (a service context signed with its own key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc

from libs.common.convert import from_ts, to_ts
from tools.testkit import as_role, as_service, rpc_error, signing_channel, sql

Code = grpc.StatusCode
Stub = booking_pb2_grpc.BookingServiceStub


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[Stub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


def at(hours: float) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)


async def make_team(stub: Stub, org_id: str, name: str) -> booking_pb2.Team:
    made = await stub.CreateTeam(booking_pb2.CreateTeamRequest(name=name), metadata=as_role(org_id, "OWNER"))
    return made.team


async def make_booking(stub: Stub, org_id: str, start: datetime, minutes: int = 120) -> booking_pb2.Booking:
    made = await stub.CreateBooking(
        booking_pb2.CreateBookingRequest(
            starts_at=to_ts(start),
            duration_minutes=minutes,
            client_name="Casey Client",
            cleaning_type="standard",
            beds=2,
            baths=1,
        ),
        metadata=as_role(org_id, "DISPATCHER"),
    )
    return made.booking


async def put(
    stub: Stub, org_id: str, key: str, team_id: str, start: datetime, end: datetime, reason: str = "Busy"
) -> booking_pb2.PutExternalBlackoutResponse:
    return await stub.PutExternalBlackout(  # type: ignore[no-any-return]
        booking_pb2.PutExternalBlackoutRequest(
            external_key=key, team_id=team_id, starts_at=to_ts(start), ends_at=to_ts(end), reason=reason
        ),
        metadata=as_service(org_id, "integrations"),
    )


async def blackouts(stub: Stub, org_id: str) -> list[booking_pb2.Blackout]:
    listed = await stub.ListBlackouts(booking_pb2.ListBlackoutsRequest(), metadata=as_role(org_id, "VIEWER"))
    return list(listed.blackouts)


async def test_a_key_makes_one_blackout_per_team_moved_in_place_and_deleted_in_its_org_only(stub, make_org):
    a, b = (await make_org()).org_id, (await make_org()).org_id
    alpha, beta = await make_team(stub, a, "Alpha"), await make_team(stub, a, "Beta")
    theirs = await make_team(stub, b, "Alpha")
    key = "gcal:cal@example.com:ev1"

    first = await put(stub, a, key, alpha.id, at(24), at(26), "Busy (Google Calendar)")
    assert first.created and first.changed
    assert first.blackout.team_id == alpha.id and first.blackout.reason == "Busy (Google Calendar)"
    # A rerun (the sync crashed before recording it) changes nothing and makes no second blackout.
    again = await put(stub, a, key, alpha.id, at(24), at(26), "Busy (Google Calendar)")
    assert not again.created and not again.changed and again.blackout.id == first.blackout.id
    assert [x.id for x in await blackouts(stub, a)] == [first.blackout.id]

    # Moved in Google: the same blackout, at the new time.
    moved = await put(stub, a, key, alpha.id, at(30), at(31), "Busy (Google Calendar)")
    assert not moved.created and moved.changed and moved.blackout.id == first.blackout.id
    assert from_ts(moved.blackout.starts_at, "s") == at(30) and from_ts(moved.blackout.ends_at, "e") == at(31)
    (listed,) = await blackouts(stub, a)
    assert from_ts(listed.starts_at, "s") == at(30)

    # Outside calendars overlap themselves: a second event at the same time is a second blackout, and
    # the same key for another team is that team's own.
    other = await put(stub, a, "gcal:cal@example.com:ev2", alpha.id, at(30), at(32))
    beta_one = await put(stub, a, key, beta.id, at(30), at(31))
    assert other.created and beta_one.created
    # Another org's same key is theirs: untouched by our delete.
    their_one = await put(stub, b, key, theirs.id, at(30), at(31))
    assert their_one.created

    deleted = await stub.DeleteExternalBlackouts(
        booking_pb2.DeleteExternalBlackoutsRequest(external_keys=[key, "gcal:cal@example.com:unknown"]),
        metadata=as_service(a, "integrations"),
    )
    assert deleted.deleted == 2
    assert [x.id for x in await blackouts(stub, a)] == [other.blackout.id]
    assert [x.id for x in await blackouts(stub, b)] == [their_one.blackout.id]
    # Deleting again deletes nothing and is no error.
    again_deleted = await stub.DeleteExternalBlackouts(
        booking_pb2.DeleteExternalBlackoutsRequest(external_keys=[key]),
        metadata=as_service(a, "integrations"),
    )
    assert again_deleted.deleted == 0


async def test_only_suite_services_put_external_blackouts_and_only_for_their_orgs_teams(stub, make_org):
    a, b = (await make_org()).org_id, (await make_org()).org_id
    theirs = await make_team(stub, b, "Theirs")
    request = booking_pb2.PutExternalBlackoutRequest(
        external_key="gcal:x:y", team_id=theirs.id, starts_at=to_ts(at(24)), ends_at=to_ts(at(25))
    )
    error = await rpc_error(
        stub.PutExternalBlackout(request, metadata=as_role(b, "OWNER")), Code.PERMISSION_DENIED
    )
    assert error.reason == "service_only"
    delete = booking_pb2.DeleteExternalBlackoutsRequest(external_keys=["gcal:x:y"])
    await rpc_error(
        stub.DeleteExternalBlackouts(delete, metadata=as_role(b, "OWNER")), Code.PERMISSION_DENIED
    )
    # Another org's team is not found (row-level security), and nothing is written.
    await rpc_error(stub.PutExternalBlackout(request, metadata=as_service(a, "integrations")), Code.NOT_FOUND)
    assert await blackouts(stub, b) == []
    # Bad input is named.
    bad = booking_pb2.PutExternalBlackoutRequest(
        external_key="", team_id=theirs.id, starts_at=to_ts(at(25)), ends_at=to_ts(at(24))
    )
    error = await rpc_error(
        stub.PutExternalBlackout(bad, metadata=as_service(b, "integrations")), Code.INVALID_ARGUMENT
    )
    assert "external_key" in [v.field for v in error.violations]


async def test_external_busy_time_blocks_suggestions_conflicts_assignment_and_rescheduling(stub, make_org):
    org_id = (await make_org()).org_id
    owner = as_role(org_id, "OWNER")
    alpha, beta = await make_team(stub, org_id, "Alpha"), await make_team(stub, org_id, "Beta")
    job = await make_booking(stub, org_id, at(48))
    assigned_first = await make_booking(stub, org_id, at(72))
    await stub.AssignBooking(
        booking_pb2.AssignBookingRequest(booking_id=assigned_first.id, team_id=alpha.id), metadata=owner
    )
    # An event added in Google over a job already assigned is still recorded (a fact, not a double
    # booking), and so is an overlapping second event.
    over_job = await put(stub, org_id, "gcal:c:over-job", alpha.id, at(72), at(73))
    assert over_job.created
    busy = await put(stub, org_id, "gcal:c:busy", alpha.id, at(47), at(49), "Busy (Google Calendar)")
    await put(stub, org_id, "gcal:c:busy-too", alpha.id, at(48), at(50))

    window = booking_pb2.ScheduleSuggestionsRequest(starts_at=to_ts(at(48)), ends_at=to_ts(at(50)))
    suggested = await stub.ScheduleSuggestions(window, metadata=owner)
    assert [t.id for t in suggested.teams] == [beta.id]
    found = await stub.ScheduleConflicts(
        booking_pb2.ScheduleConflictsRequest(
            starts_at=to_ts(at(48)), ends_at=to_ts(at(50)), team_id=alpha.id
        ),
        metadata=owner,
    )
    assert found.has_conflict
    assert busy.blackout.id in [c.reference_id for c in found.conflicts]
    assert {c.kind for c in found.conflicts} == {"blackout"}

    error = await rpc_error(
        stub.AssignBooking(
            booking_pb2.AssignBookingRequest(booking_id=job.id, team_id=alpha.id), metadata=owner
        ),
        Code.ALREADY_EXISTS,
    )
    assert error.reason == "schedule_conflict"
    ok = await stub.AssignBooking(
        booking_pb2.AssignBookingRequest(booking_id=job.id, team_id=beta.id), metadata=owner
    )
    assert ok.booking.team_id == beta.id
    # Rescheduling Alpha's job into Alpha's busy time is refused too; elsewhere it moves.
    error = await rpc_error(
        stub.RescheduleBooking(
            booking_pb2.RescheduleBookingRequest(
                booking_id=assigned_first.id, starts_at=to_ts(at(47)), duration_minutes=60
            ),
            metadata=owner,
        ),
        Code.ALREADY_EXISTS,
    )
    assert error.reason == "schedule_conflict"
    # Gone from Google: the team is free again.
    await stub.DeleteExternalBlackouts(
        booking_pb2.DeleteExternalBlackoutsRequest(external_keys=["gcal:c:busy", "gcal:c:busy-too"]),
        metadata=as_service(org_id, "integrations"),
    )
    suggested = await stub.ScheduleSuggestions(window, metadata=owner)
    assert [t.id for t in suggested.teams] == [alpha.id]


async def test_updated_since_lists_every_kind_of_change_oldest_first(stub, make_org, stack):
    org_id = (await make_org()).org_id
    owner = as_role(org_id, "OWNER")
    team = await make_team(stub, org_id, "Alpha")
    moved, cancelled, assigned, paid, untouched = [
        await make_booking(stub, org_id, at(48 + 4 * i)) for i in range(5)
    ]
    since = max(from_ts(b.updated_at, "u") for b in (moved, cancelled, assigned, paid, untouched))
    since += timedelta(microseconds=1)

    async def changed() -> list[booking_pb2.Booking]:
        listed = await stub.ListBookings(
            booking_pb2.ListBookingsRequest(updated_since=to_ts(since), limit=100), metadata=owner
        )
        assert listed.total == len(listed.bookings)
        return list(listed.bookings)

    assert await changed() == []
    await stub.RescheduleBooking(
        booking_pb2.RescheduleBookingRequest(
            booking_id=moved.id, starts_at=to_ts(at(100)), duration_minutes=90
        ),
        metadata=owner,
    )
    await stub.TransitionBooking(
        booking_pb2.TransitionBookingRequest(
            booking_id=cancelled.id, action="cancel", reason="changed plans"
        ),
        metadata=owner,
    )
    await stub.AssignBooking(
        booking_pb2.AssignBookingRequest(booking_id=assigned.id, team_id=team.id), metadata=owner
    )
    await stub.TransitionBooking(
        booking_pb2.TransitionBookingRequest(booking_id=paid.id, action="deposit_paid"), metadata=owner
    )
    listed = await changed()
    assert [b.id for b in listed] == [moved.id, cancelled.id, assigned.id, paid.id]
    stamps = [from_ts(b.updated_at, "u") for b in listed]
    assert stamps == sorted(stamps) and stamps[0] >= since
    assert listed[1].status == "cancelled" and listed[2].team_id == team.id

    # Any change of the row moves updated_at, whoever makes it (the trigger): here an UPDATE that
    # does not name the column, as the erasure of a person's data does.
    with psycopg.connect(stack.admin_url) as conn:
        conn.execute("UPDATE booking.bookings SET notes = 'gate code 1234' WHERE id = %s", (untouched.id,))
    listed = await changed()
    assert listed[-1].id == untouched.id
    # With from/to as well: only those changed and in the window.
    windowed = await stub.ListBookings(
        booking_pb2.ListBookingsRequest(
            updated_since=to_ts(since), from_time=to_ts(at(99)), to_time=to_ts(at(101)), limit=100
        ),
        metadata=owner,
    )
    assert [b.id for b in windowed.bookings] == [moved.id]


async def test_changed_since_is_an_index_range(stub, make_org, stack):
    """The runtime role (row-level security on) reads "changed since" through (org_id, updated_at)."""
    org_id = (await make_org()).org_id
    with psycopg.connect(stack.app_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
        conn.execute("SET LOCAL enable_seqscan = off")
        # On a near-empty table any org index costs the same; with sorting priced out, the plan must
        # be the one that reads the org's changes in order (what a big org's table gets anyway).
        conn.execute("SET LOCAL enable_sort = off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT * FROM booking.bookings WHERE org_id = %s AND updated_at >= now() "
                "ORDER BY updated_at, id LIMIT 50",
                (org_id,),
            )
        )
    assert "ix_bookings_org_updated" in plan, plan
    rows = await sql(
        stack.admin_url,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'booking' AND indexname = 'uq_schedule_blocks_external'",
    )
    assert rows and "UNIQUE" in rows[0][0] and "external_key IS NOT NULL" in rows[0][0]
