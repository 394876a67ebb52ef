"""Scheduling through the booking service's gRPC API (the real process, contexts signed as the
gateway signs them): role checks in the service itself, and suggestions over a few thousand
blocks compared with the same rule computed in Python."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc

from libs.common import context as request_context
from libs.common.convert import to_ts
from tools.testkit import as_role, rpc_error, signed, signing_channel

Code = grpc.StatusCode


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[booking_pb2_grpc.BookingServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


async def test_the_service_checks_roles_itself(stub, make_org):
    org_id = (await make_org()).org_id
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    window = {"starts_at": to_ts(start), "ends_at": to_ts(start + timedelta(hours=2))}
    dispatcher, viewer, finance = (as_role(org_id, r) for r in ("DISPATCHER", "VIEWER", "FINANCE"))

    team = (await stub.CreateTeam(booking_pb2.CreateTeamRequest(name="Grpc Crew"), metadata=dispatcher)).team
    listed = await stub.ListTeams(booking_pb2.ListTeamsRequest(), metadata=viewer)
    assert [t.id for t in listed.teams] == [team.id]
    assert (await stub.ListWorkers(booking_pb2.ListWorkersRequest(), metadata=finance)).workers == []

    for metadata in (viewer, finance):
        for call in (
            stub.CreateTeam(booking_pb2.CreateTeamRequest(name="Nope"), metadata=metadata),
            stub.DeleteTeam(booking_pb2.DeleteTeamRequest(team_id=team.id), metadata=metadata),
            stub.CreateWorker(booking_pb2.CreateWorkerRequest(name="Nope"), metadata=metadata),
            stub.CreateBlackout(
                booking_pb2.CreateBlackoutRequest(team_id=team.id, **window), metadata=metadata
            ),
            stub.AssignBooking(
                booking_pb2.AssignBookingRequest(booking_id=str(uuid.uuid4()), team_id=team.id),
                metadata=metadata,
            ),
            stub.ScheduleSuggestions(booking_pb2.ScheduleSuggestionsRequest(**window), metadata=metadata),
            stub.ScheduleConflicts(booking_pb2.ScheduleConflictsRequest(**window), metadata=metadata),
            stub.AssignmentQueue(booking_pb2.AssignmentQueueRequest(), metadata=metadata),
        ):
            assert (await rpc_error(call, Code.PERMISSION_DENIED)).reason == "forbidden_role"
    # A portal or anonymous caller has no staff role at all.
    anonymous = signed(request_context.RequestContext(org_id=org_id, request_id="anon"))
    await rpc_error(stub.ListTeams(booking_pb2.ListTeamsRequest(), metadata=anonymous), Code.UNAUTHENTICATED)

    # Missing window parts are named.
    error = await rpc_error(
        stub.ScheduleSuggestions(
            booking_pb2.ScheduleSuggestionsRequest(starts_at=to_ts(start)), metadata=dispatcher
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["ends_at"]
    error = await rpc_error(
        stub.AssignmentQueue(booking_pb2.AssignmentQueueRequest(days=31), metadata=dispatcher),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["days"]
    default = await stub.AssignmentQueue(booking_pb2.AssignmentQueueRequest(days=0), metadata=dispatcher)
    assert default.total == 0


TAGS = ("deep", "windows", "oven", "move-out", "supervisor")


async def test_suggestions_over_thousands_of_blocks_match_the_rule(stub, make_org, stack):
    """40 teams, 400 workers, ~3,000 blocks on an hourly grid; one window; the service's answer
    equals the rule applied in Python to the same rows."""
    rng = random.Random(20261122)
    org_id = (await make_org()).org_id
    base = datetime(2031, 3, 3, 0, 0, tzinfo=UTC)
    team_ids = [uuid.uuid4() for _ in range(40)]
    workers = [
        (
            uuid.uuid4(),
            rng.choice([*team_ids, None, None]),
            ", ".join(rng.sample(TAGS, rng.randint(0, 3))).title(),
            rng.random() > 0.05,
        )
        for _ in range(400)
    ]
    busy_hours: dict[uuid.UUID, set[int]] = {}
    rows: list[tuple[Any, ...]] = []
    for subject, is_team in [(t, True) for t in team_ids] + [(w[0], False) for w in workers]:
        hours = set(rng.sample(range(48), rng.randint(0, 10)))
        busy_hours[subject] = hours
        for hour in hours:
            start = base + timedelta(hours=hour)
            rows.append(
                (
                    uuid.uuid4(),
                    org_id,
                    subject if is_team else None,
                    None if is_team else subject,
                    f"[{start.isoformat()},{(start + timedelta(hours=1)).isoformat()})",
                )
            )
    with psycopg.connect(stack.admin_url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO booking.teams (id, org_id, name, active) VALUES (%s, %s, %s, %s)",
            [(t, org_id, f"Team {i:02d}", i % 10 != 0) for i, t in enumerate(team_ids)],
        )
        cursor.executemany(
            "INSERT INTO booking.workers (id, org_id, team_id, name, role, active) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (w, org_id, t, f"Worker {i:03d}", role, active)
                for i, (w, t, role, active) in enumerate(workers)
            ],
        )
        with cursor.copy(
            "COPY booking.schedule_blocks (id, org_id, team_id, worker_id, period, kind) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row((*row, "blackout"))
    assert len(rows) > 2000

    window_hours = {20, 21, 22}
    metadata = as_role(org_id, "DISPATCHER")
    request = booking_pb2.ScheduleSuggestionsRequest(
        starts_at=to_ts(base + timedelta(hours=20)),
        ends_at=to_ts(base + timedelta(hours=23)),
        skill_tags=["DEEP"],
    )
    found = booking_pb2.ScheduleSuggestionsResponse()
    pages = 0
    while True:  # every page, 50 at a time (the default)
        page = await stub.ScheduleSuggestions(request, metadata=metadata)
        found.teams.extend(page.teams)
        found.workers.extend(page.workers)
        pages += 1
        if not page.next_offset:
            break
        request.offset = page.next_offset
    assert page.total == len(found.teams) + len(found.workers) and pages > 1

    def free(subject: uuid.UUID | None) -> bool:
        return subject is None or not busy_hours[subject] & window_hours

    expected_teams = {str(t) for i, t in enumerate(team_ids) if i % 10 != 0 and free(t)}
    expected_workers = {
        str(w) for w, t, role, active in workers if active and free(w) and free(t) and "deep" in role.lower()
    }
    assert {t.id for t in found.teams} == expected_teams
    assert {w.id for w in found.workers} == expected_workers
    assert 0 < len(expected_workers) < 400 and 0 < len(expected_teams) < 36
    names = [w.name for w in found.workers]
    assert names == sorted(names)
