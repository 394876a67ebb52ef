"""Teams, workers, blackouts and assignment at the gateway, in front of the real booking process:
CRUD, overlap refused by the database (also under concurrency), roles, and other orgs' ids."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg

from services.booking.tests.helpers import create_booking, slot
from tools import testkit
from tools.testkit import assert_clean, assert_problem


async def post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
    response = await http.post(url, headers=headers, json=body)
    assert_clean(response)
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


async def make_team(http: httpx.AsyncClient, url: str, headers: dict[str, str], name: str) -> dict[str, Any]:
    return await post(http, f"{url}/v1/admin/teams", headers, {"name": name})


async def make_worker(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], name: str, **fields: Any
) -> dict[str, Any]:
    return await post(http, f"{url}/v1/admin/workers", headers, {"name": name, **fields})


async def assign(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str, **body: Any
) -> httpx.Response:
    response = await http.post(f"{url}/v1/admin/bookings/{booking_id}/assign", headers=headers, json=body)
    assert_clean(response)
    return response


async def test_teams_workers_and_blackouts_crud(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner, "Alpha Crew")
    assert team["name"] == "Alpha Crew" and team["active"] is True and uuid.UUID(team["id"])
    assert_problem(await http.post(f"{url}/v1/admin/teams", headers=owner, json={"name": "alpha crew"}), 409)
    assert_problem(await http.post(f"{url}/v1/admin/teams", headers=owner, json={"name": "   "}), 422)
    assert_problem(await http.post(f"{url}/v1/admin/teams", headers=owner, json={"name": "x" * 201}), 422)
    beta = await make_team(http, url, owner, "Beta Crew")
    teams = (await http.get(f"{url}/v1/admin/teams", headers=owner)).json()["teams"]
    assert [t["name"] for t in teams] == ["Alpha Crew", "Beta Crew"]

    worker = await make_worker(
        http,
        url,
        owner,
        "Wren Worker",
        email="Wren@Example.com",
        phone="780-555-0199",
        role="Deep clean, windows",
        team_id=team["id"],
    )
    assert worker["email"] == "wren@example.com" and worker["phone"] == "+17805550199"
    assert worker["team_id"] == team["id"] and worker["role"] == "Deep clean, windows"
    solo = await make_worker(http, url, owner, "Solo Sam")
    assert solo["team_id"] is None and solo["email"] == ""
    for bad, field in (
        ({"name": "A", "email": "nope"}, "email"),
        ({"name": "A", "phone": "12"}, "phone"),
        ({"name": "A", "team_id": "not-a-uuid"}, "team_id"),
        ({"name": ""}, "name"),
        ({"name": "A", "colour": "blue"}, "colour"),
    ):
        body = assert_problem(await http.post(f"{url}/v1/admin/workers", headers=owner, json=bad), 422)
        assert any(field in e["field"] for e in body["errors"]), body
    assert_problem(
        await http.post(
            f"{url}/v1/admin/workers", headers=owner, json={"name": "A", "team_id": str(uuid.uuid4())}
        ),
        404,
        "team_not_found",
    )
    listed = (await http.get(f"{url}/v1/admin/workers", headers=owner)).json()["workers"]
    assert [w["name"] for w in listed] == ["Solo Sam", "Wren Worker"]
    of_team = (await http.get(f"{url}/v1/admin/workers?team_id={team['id']}", headers=owner)).json()
    assert [w["id"] for w in of_team["workers"]] == [worker["id"]]

    blackout = await post(
        http,
        f"{url}/v1/admin/blackouts",
        owner,
        {"team_id": beta["id"], "starts_at": slot(24), "ends_at": slot(30), "reason": "training day"},
    )
    assert blackout["team_id"] == beta["id"] and blackout["worker_id"] is None
    assert blackout["reason"] == "training day"
    worker_off = await post(
        http,
        f"{url}/v1/admin/blackouts",
        owner,
        {"worker_id": solo["id"], "starts_at": slot(24), "ends_at": slot(30)},
    )
    for bad in (
        {"team_id": beta["id"], "worker_id": solo["id"], "starts_at": slot(40), "ends_at": slot(41)},
        {"starts_at": slot(40), "ends_at": slot(41)},
        {"team_id": beta["id"], "starts_at": slot(41), "ends_at": slot(40)},
        {"team_id": beta["id"], "starts_at": "2030-01-01T10:00:00", "ends_at": "2030-01-01T12:00:00"},
    ):
        assert_problem(await http.post(f"{url}/v1/admin/blackouts", headers=owner, json=bad), 422)
    # Two blackouts of one team may not overlap either: the exclusion constraint refuses it.
    assert_problem(
        await http.post(
            f"{url}/v1/admin/blackouts",
            headers=owner,
            json={"team_id": beta["id"], "starts_at": slot(29), "ends_at": slot(31)},
        ),
        409,
        "schedule_conflict",
    )
    listed = (await http.get(f"{url}/v1/admin/blackouts", headers=owner)).json()["blackouts"]
    assert {b["id"] for b in listed} == {blackout["id"], worker_off["id"]}
    later = await http.get(f"{url}/v1/admin/blackouts", headers=owner, params={"from": slot(31)})
    assert later.json()["blackouts"] == []

    for path in (f"blackouts/{blackout['id']}", f"workers/{worker['id']}", f"teams/{team['id']}"):
        deleted = await http.delete(f"{url}/v1/admin/{path}", headers=owner)
        assert deleted.status_code == 204, deleted.text
        assert_problem(await http.delete(f"{url}/v1/admin/{path}", headers=owner), 404)
    assert_problem(await http.delete(f"{url}/v1/admin/teams/not-a-uuid", headers=owner), 422)
    assert [t["id"] for t in (await http.get(f"{url}/v1/admin/teams", headers=owner)).json()["teams"]] == [
        beta["id"]
    ]


async def test_roles_viewers_read_dispatchers_write(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    viewer = await testkit.staff(http, url, owner, "VIEWER")
    finance = await testkit.staff(http, url, owner, "FINANCE")
    dispatcher = await testkit.staff(http, url, owner, "DISPATCHER")
    team = await make_team(http, url, dispatcher, "Dispatch Made")
    booking = await create_booking(http, url, dispatcher)
    assert (await assign(http, url, dispatcher, booking["id"], team_id=team["id"])).status_code == 200
    for role in (viewer, finance):
        for path in ("teams", "workers", "blackouts"):
            response = await http.get(f"{url}/v1/admin/{path}", headers=role)
            assert_clean(response)
            assert response.status_code == 200, response.text
        window = {"starts_at": slot(24), "ends_at": slot(26)}
        for method, path, kwargs in (
            ("POST", "teams", {"json": {"name": "Nope"}}),
            ("POST", "workers", {"json": {"name": "Nope"}}),
            ("POST", "blackouts", {"json": {"team_id": team["id"], **window}}),
            ("DELETE", f"teams/{team['id']}", {}),
            ("POST", f"bookings/{booking['id']}/assign", {"json": {"team_id": team["id"]}}),
            ("GET", "schedule/suggestions", {"params": window}),
            ("GET", "schedule/conflicts", {"params": window}),
            ("GET", "queue/assignments", {}),
        ):
            response = await http.request(method, f"{url}/v1/admin/{path}", headers=role, **kwargs)
            assert_problem(response, 403, "forbidden_role")
    assert_problem(await http.get(f"{url}/v1/admin/teams"), 401)


async def test_assignment_writes_blocks_and_overlaps_are_refused(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    owner = await testkit.owner(http, url, org)
    alpha, beta, gamma = [await make_team(http, url, owner, n) for n in ("Alpha", "Beta", "Gamma")]
    wren = await make_worker(http, url, owner, "Wren", team_id=alpha["id"])
    first = await create_booking(http, url, owner, starts_at=slot(48), duration_minutes=120)
    overlapping = await create_booking(http, url, owner, starts_at=slot(49), duration_minutes=120)
    adjacent = await create_booking(http, url, owner, starts_at=slot(50), duration_minutes=60)

    assigned = await assign(http, url, owner, first["id"], team_id=alpha["id"], worker_ids=[wren["id"]])
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["team_id"] == alpha["id"] and assigned.json()["worker_ids"] == [wren["id"]]
    got = (await http.get(f"{url}/v1/admin/bookings/{first['id']}", headers=owner)).json()
    assert got["team_id"] == alpha["id"] and got["worker_ids"] == [wren["id"]]

    # The same team, or the same worker, overlapping: refused by the database, answered 409.
    body = assert_problem(await assign(http, url, owner, overlapping["id"], team_id=alpha["id"]), 409)
    assert body["type"].endswith("schedule_conflict") and "team" in body["detail"]
    body = assert_problem(
        await assign(http, url, owner, overlapping["id"], team_id=beta["id"], worker_ids=[wren["id"]]), 409
    )
    assert body["type"].endswith("schedule_conflict") and "worker" in body["detail"]
    # A refused assignment leaves nothing behind; another team is fine; periods are half-open.
    ok = await assign(http, url, owner, overlapping["id"], team_id=beta["id"])
    assert ok.status_code == 200 and ok.json()["team_id"] == beta["id"] and ok.json()["worker_ids"] == []
    next_one = await assign(http, url, owner, adjacent["id"], team_id=alpha["id"], worker_ids=[wren["id"]])
    assert next_one.status_code == 200, next_one.text

    # Re-assigning replaces the previous blocks: Alpha is then free at the first booking's time.
    moved = await assign(http, url, owner, first["id"], team_id=gamma["id"])
    assert moved.status_code == 200 and moved.json()["worker_ids"] == []
    body = assert_problem(
        await http.post(
            f"{url}/v1/admin/blackouts",
            headers=owner,
            json={"team_id": gamma["id"], "starts_at": slot(47), "ends_at": slot(49)},
        ),
        409,
        "schedule_conflict",
    )
    free = await http.post(
        f"{url}/v1/admin/blackouts",
        headers=owner,
        json={"team_id": alpha["id"], "starts_at": slot(47), "ends_at": slot(49)},
    )
    assert free.status_code == 201, free.text
    # ...and a blackout blocks assignments in turn.
    assert_problem(await assign(http, url, owner, first["id"], team_id=alpha["id"]), 409, "schedule_conflict")

    cancelled = await create_booking(http, url, owner, starts_at=slot(100))
    await http.post(f"{url}/v1/admin/bookings/{cancelled['id']}/cancel", headers=owner, json={"reason": "x"})
    assert_problem(
        await assign(http, url, owner, cancelled["id"], team_id=alpha["id"]), 409, "invalid_transition"
    )
    done = await create_booking(http, url, owner, starts_at=slot(110))
    for action in ("confirm", "start", "complete"):
        await http.post(f"{url}/v1/admin/bookings/{done['id']}/{action}", headers=owner)
    assert_problem(await assign(http, url, owner, done["id"], team_id=alpha["id"]), 409, "invalid_transition")

    for body in ({}, {"worker_ids": ["nope"]}, {"worker_ids": [str(uuid.uuid4())] * 21}, {"team_id": "x"}):
        assert_problem(await assign(http, url, owner, adjacent["id"], **body), 422)
    assert_problem(await assign(http, url, owner, "not-a-uuid", team_id=alpha["id"]), 422)

    # Deleting a team or worker with upcoming jobs is refused rather than silently unassigning them.
    assert_problem(await http.delete(f"{url}/v1/admin/teams/{beta['id']}", headers=owner), 409)
    assert_problem(await http.delete(f"{url}/v1/admin/workers/{wren['id']}", headers=owner), 409)

    with psycopg.connect(stack.admin_url) as conn:
        subjects = conn.execute(
            "SELECT subject FROM booking.event_outbox WHERE org_id = %s AND subject LIKE %s",
            (org.org_id, "%assigned"),
        ).fetchall()
    assert len(subjects) == 4 and {s for (s,) in subjects} == {"cws.booking.booking.assigned"}


async def test_another_orgs_ids_are_not_found_for_assign_and_delete(gateway, http, make_org):
    url = gateway.url
    owner_a = await testkit.owner(http, url, await make_org())
    owner_b = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner_a, "Theirs")
    worker = await make_worker(http, url, owner_a, "Their Worker")
    blackout = await post(
        http,
        f"{url}/v1/admin/blackouts",
        owner_a,
        {"team_id": team["id"], "starts_at": slot(5), "ends_at": slot(6)},
    )
    booking_a = await create_booking(http, url, owner_a)
    booking_b = await create_booking(http, url, owner_b)
    mine = await make_team(http, url, owner_b, "Mine")

    assert_problem(await assign(http, url, owner_b, booking_a["id"], team_id=mine["id"]), 404)
    assert_problem(
        await assign(http, url, owner_b, booking_b["id"], team_id=team["id"]), 404, "team_not_found"
    )
    assert_problem(
        await assign(http, url, owner_b, booking_b["id"], worker_ids=[worker["id"]]), 404, "worker_not_found"
    )
    for path in (f"teams/{team['id']}", f"workers/{worker['id']}", f"blackouts/{blackout['id']}"):
        assert_problem(await http.delete(f"{url}/v1/admin/{path}", headers=owner_b), 404)
    assert_problem(await http.get(f"{url}/v1/admin/workers?team_id={team['id']}", headers=owner_b), 404)
    assert (await http.get(f"{url}/v1/admin/teams", headers=owner_b)).json()["teams"] == [mine]
    assert (await http.get(f"{url}/v1/admin/workers", headers=owner_b)).json()["workers"] == []
    assert (await http.get(f"{url}/v1/admin/blackouts", headers=owner_b)).json()["blackouts"] == []
    # Nothing of org A changed.
    assert len((await http.get(f"{url}/v1/admin/teams", headers=owner_a)).json()["teams"]) == 1


# The race is about who wins, not how fast: a gateway with a longer gRPC deadline keeps a loaded
# machine from turning a slow loser into a 503.
PATIENT = {"GRPC_DEADLINE_SECONDS": "20"}


async def _race(http: httpx.AsyncClient, url: str, owner: dict[str, str], body: dict[str, Any]) -> None:
    start = slot(72)
    made = await asyncio.gather(
        *(create_booking(http, url, owner, starts_at=start, duration_minutes=90) for _ in range(12))
    )
    responses = await asyncio.gather(*(assign(http, url, owner, b["id"], **body) for b in made))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 11, [(r.status_code, r.text[:200]) for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "schedule_conflict")
    winner = next(r.json() for r in responses if r.status_code == 200)
    listed = (await http.get(f"{url}/v1/admin/bookings", headers=owner, params={"limit": 50})).json()
    holders = [b["id"] for b in listed["bookings"] if b["team_id"] or b["worker_ids"]]
    assert holders == [winner["id"]]


async def test_concurrent_assignments_of_one_team_to_one_slot_exactly_one_wins(gateways, http, make_org):
    gateway = gateways.get(**PATIENT)
    owner = await testkit.owner(http, gateway.url, await make_org())
    team = await make_team(http, gateway.url, owner, "Racers")
    await _race(http, gateway.url, owner, {"team_id": team["id"]})


async def test_concurrent_assignments_of_one_worker_to_one_slot_exactly_one_wins(gateways, http, make_org):
    gateway = gateways.get(**PATIENT)
    owner = await testkit.owner(http, gateway.url, await make_org())
    worker = await make_worker(http, gateway.url, owner, "Racer")
    await _race(http, gateway.url, owner, {"worker_ids": [worker["id"]]})


async def test_a_transition_answers_the_booking_with_its_workers(gateway, http, make_org):
    """A transition returns the booking from its UPDATE, workers included (bookings._update_returning):
    a confirmed job keeps its workers, a cancelled one has freed them in the same transaction."""
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner, "Confirmers")
    ada, bo = [await make_worker(http, url, owner, name, team_id=team["id"]) for name in ("Ada", "Bo")]
    job = await create_booking(http, url, owner, starts_at=slot(30), duration_minutes=90)
    await assign(http, url, owner, job["id"], team_id=team["id"], worker_ids=[ada["id"], bo["id"]])

    confirmed = await http.post(f"{url}/v1/admin/bookings/{job['id']}/confirm", headers=owner)
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["status"] == "confirmed" and sorted(body["worker_ids"]) == sorted([ada["id"], bo["id"]])
    assert body["team_id"] == team["id"]
    got = (await http.get(f"{url}/v1/admin/bookings/{job['id']}", headers=owner)).json()
    body.pop("nps_token", None)  # a transition's answer only (set when it completes the job)
    assert {**got, "worker_ids": sorted(got["worker_ids"])} == {
        **body,
        "worker_ids": sorted(body["worker_ids"]),
    }

    cancelled = await http.post(
        f"{url}/v1/admin/bookings/{job['id']}/cancel", headers=owner, json={"reason": "x"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["worker_ids"] == []
