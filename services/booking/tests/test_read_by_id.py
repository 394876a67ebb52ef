"""A booking read by id is one statement (the booking and its assigned workers together, issue 15):
the workers come with it, a booking without workers reads an empty list, and another org's booking
stays not found, by id or through its workers' subquery (both under row-level security)."""

from __future__ import annotations

from typing import Any

import httpx

from services.booking.tests.helpers import create_booking, slot
from services.booking.tests.test_scheduling import assign, make_team, make_worker
from tools import testkit
from tools.testkit import assert_problem


async def test_a_read_by_id_brings_the_assigned_workers_and_nothing_of_another_org(
    gateway: Any, http: httpx.AsyncClient, make_org: Any
) -> None:
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    stranger = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner, "Read")
    wren = await make_worker(http, url, owner, "Wren", team_id=team["id"])
    ash = await make_worker(http, url, owner, "Ash", team_id=team["id"])
    booking = await create_booking(http, url, owner, starts_at=slot(30), duration_minutes=60)
    assert booking["worker_ids"] == []
    unassigned = (await http.get(f"{url}/v1/admin/bookings/{booking['id']}", headers=owner)).json()
    assert unassigned["worker_ids"] == [] and unassigned["team_id"] is None

    done = await assign(
        http, url, owner, booking["id"], team_id=team["id"], worker_ids=[wren["id"], ash["id"]]
    )
    assert done.status_code == 200, done.text
    got = await http.get(f"{url}/v1/admin/bookings/{booking['id']}", headers=owner)
    assert got.status_code == 200, got.text
    assert sorted(got.json()["worker_ids"]) == sorted([wren["id"], ash["id"]])
    assert got.json()["team_id"] == team["id"]

    # Another org: the same id is simply not there.
    assert_problem(await http.get(f"{url}/v1/admin/bookings/{booking['id']}", headers=stranger), 404)
    # Its own booking at the same time reads no worker of the first org.
    own = await create_booking(http, url, stranger, starts_at=slot(30), duration_minutes=60)
    theirs = (await http.get(f"{url}/v1/admin/bookings/{own['id']}", headers=stranger)).json()
    assert theirs["worker_ids"] == []
