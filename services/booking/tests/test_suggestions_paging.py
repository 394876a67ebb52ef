"""Suggestions come a bounded page at a time (issue 15): `limit` (1 to 200, default 50) teams and
workers together in the usual order (teams, then workers, each by name), `offset`, the `total` over
every page and `next_offset` (null on the last page). Bounds are 422 Problem+JSON at the gateway and
INVALID_ARGUMENT at the service; another org's booking is refused as before."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc

from libs.common.convert import to_ts
from services.booking.tests.helpers import create_booking, slot
from services.booking.tests.test_scheduling import assign, make_team, make_worker, post
from services.booking.tests.test_scheduling_v2 import get, names
from tools import testkit
from tools.testkit import as_role, assert_problem, rpc_error, signing_channel


async def test_suggestions_page_through_in_order(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    busy = await make_team(http, url, owner, "Busy")
    for name in ("Charlie", "Alpha", "bravo"):
        await make_team(http, url, owner, name)
    for name in ("Gus", "eve", "Dan", "Fay", "Hal", "Ivy", "Jo"):
        await make_worker(http, url, owner, name, role="deep clean")
    blocked = await make_worker(http, url, owner, "Kim (blackout)")
    job = await create_booking(http, url, owner, starts_at=slot(48), duration_minutes=120)
    assert (await assign(http, url, owner, job["id"], team_id=busy["id"])).status_code == 200
    await post(
        http,
        f"{url}/v1/admin/blackouts",
        owner,
        {"worker_id": blocked["id"], "starts_at": slot(47), "ends_at": slot(51)},
    )
    suggestions = f"{url}/v1/admin/schedule/suggestions"
    window = {"starts_at": slot(48), "ends_at": slot(49)}

    everything = await get(http, suggestions, owner, **window)  # the default page holds them all
    assert names(everything["teams"]) == ["Alpha", "bravo", "Charlie"]
    assert names(everything["workers"]) == ["Dan", "eve", "Fay", "Gus", "Hal", "Ivy", "Jo"]
    assert everything["total"] == 10 and everything["next_offset"] is None

    pages, offset = [], 0
    while offset is not None:
        page = await get(http, suggestions, owner, **window, limit=4, offset=offset)
        assert page["total"] == 10 and len(page["teams"]) + len(page["workers"]) <= 4
        pages.append(page)
        offset = page["next_offset"]
    assert [p["next_offset"] for p in pages] == [4, 8, None]
    assert [names(p["teams"]) for p in pages] == [["Alpha", "bravo", "Charlie"], [], []]
    assert [names(p["workers"]) for p in pages] == [["Dan"], ["eve", "Fay", "Gus", "Hal"], ["Ivy", "Jo"]]

    # Exactly a page: no next one. Past the end: an empty page that still counts them all.
    exact = await get(http, suggestions, owner, **window, limit=10)
    assert exact["next_offset"] is None and len(exact["workers"]) == 7
    past = await get(http, suggestions, owner, **window, limit=5, offset=50)
    assert past["teams"] == [] and past["workers"] == [] and past["total"] == 10
    assert past["next_offset"] is None
    # Filters apply before paging: the total is of what matches.
    tagged = await get(http, suggestions, owner, **window, skill_tags=["deep"], limit=2, offset=3)
    assert tagged["total"] == 10 and names(tagged["workers"]) == ["Dan", "eve"]
    assert tagged["next_offset"] == 5
    # Planning the busy team's booking frees its team: it joins the pages in its place.
    planning = await get(http, suggestions, owner, **window, booking_id=job["id"], limit=2)
    assert names(planning["teams"]) == ["Alpha", "bravo"] and planning["total"] == 11

    for bad in (
        {"limit": 0},
        {"limit": 201},
        {"limit": -1},
        {"limit": "ten"},
        {"offset": -1},
        {"offset": 1_000_001},
        {"offset": "x"},
    ):
        body = assert_problem(await http.get(suggestions, headers=owner, params={**window, **bad}), 422)
        assert any(field in e["field"] for e in body.get("errors", []) for field in bad), (bad, body)
    assert (await http.get(suggestions, headers=owner, params={**window, "limit": 200})).status_code == 200

    # Another org's booking is refused as before, paged or not.
    other = await testkit.owner(http, url, await make_org())
    for params in ({}, {"limit": 1, "offset": 1}):
        assert_problem(
            await http.get(suggestions, headers=other, params={**window, "booking_id": job["id"], **params}),
            403,
            "cross_org_or_unknown",
        )
    # ... and its own window shows none of this org's teams or workers.
    theirs = await get(http, suggestions, other, **window)
    assert theirs == {**theirs, "teams": [], "workers": [], "total": 0, "next_offset": None}


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[booking_pb2_grpc.BookingServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


async def test_the_service_bounds_the_page_itself(stub, make_org):
    org_id = (await make_org()).org_id
    dispatcher = as_role(org_id, "DISPATCHER")
    for position in range(3):
        await stub.CreateWorker(booking_pb2.CreateWorkerRequest(name=f"W{position}"), metadata=dispatcher)
    start = datetime.fromisoformat(slot(30))
    window = {"starts_at": to_ts(start), "ends_at": to_ts(start + timedelta(hours=1))}
    for bad in ({"limit": 201}, {"limit": -1}, {"offset": -1}):
        error = await rpc_error(
            stub.ScheduleSuggestions(
                booking_pb2.ScheduleSuggestionsRequest(**window, **bad), metadata=dispatcher
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [v.field for v in error.violations] == list(bad)
    # 0 (not given) is the default page, 50.
    found = await stub.ScheduleSuggestions(
        booking_pb2.ScheduleSuggestionsRequest(**window), metadata=dispatcher
    )
    assert (
        [w.name for w in found.workers] == ["W0", "W1", "W2"] and found.total == 3 and found.next_offset == 0
    )
    first = await stub.ScheduleSuggestions(
        booking_pb2.ScheduleSuggestionsRequest(**window, limit=2), metadata=dispatcher
    )
    assert [w.name for w in first.workers] == ["W0", "W1"] and first.next_offset == 2
    rest = await stub.ScheduleSuggestions(
        booking_pb2.ScheduleSuggestionsRequest(**window, limit=2, offset=first.next_offset),
        metadata=dispatcher,
    )
    assert [w.name for w in rest.workers] == ["W2"] and rest.next_offset == 0 and rest.total == 3
    unknown = await rpc_error(
        stub.ScheduleSuggestions(
            booking_pb2.ScheduleSuggestionsRequest(**window, booking_id=str(uuid.uuid4()), limit=1),
            metadata=dispatcher,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert unknown.reason == "cross_org_or_unknown"
