"""Scheduling v2 at the gateway (seed 002): suggestions, conflict checks and the assignments queue,
with their 422 windows and 403 for ids that are not the caller's org's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.booking.tests.helpers import create_booking, slot
from services.booking.tests.test_scheduling import assign, make_team, make_worker, post
from tools import testkit
from tools.testkit import assert_clean, assert_problem


async def get(http: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await http.get(url, headers=headers, params=params)
    assert_clean(response)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


async def test_suggestions_leave_out_busy_and_blacked_out_teams_and_workers(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    busy, off, free = [await make_team(http, url, owner, n) for n in ("Busy", "Off", "Free")]
    await make_worker(http, url, owner, "Ann (busy team)", team_id=busy["id"], role="deep clean")
    await make_worker(http, url, owner, "Bob (team off)", team_id=off["id"], role="deep clean")
    await make_worker(http, url, owner, "Cat", team_id=free["id"], role="Standard, Windows")
    await make_worker(http, url, owner, "Dee", role="Deep Clean; windows; 100%_sure")
    eve = await make_worker(http, url, owner, "Eve (blackout)", role="deep clean")
    fay = await make_worker(http, url, owner, "Fay (booked)", role="deep clean")

    job = await create_booking(http, url, owner, starts_at=slot(48), duration_minutes=180)
    assert (await assign(http, url, owner, job["id"], team_id=busy["id"])).status_code == 200
    other = await create_booking(http, url, owner, starts_at=slot(49), duration_minutes=60)
    assert (await assign(http, url, owner, other["id"], worker_ids=[fay["id"]])).status_code == 200
    for subject in ({"team_id": off["id"]}, {"worker_id": eve["id"]}):
        await post(
            http, f"{url}/v1/admin/blackouts", owner, {**subject, "starts_at": slot(47), "ends_at": slot(52)}
        )

    suggestions = f"{url}/v1/admin/schedule/suggestions"
    window = {"starts_at": slot(49), "ends_at": slot(50)}
    found = await get(http, suggestions, owner, **window)
    assert names(found["teams"]) == ["Free"]
    assert names(found["workers"]) == ["Cat", "Dee"]
    assert found["workers"][0]["team_id"] == free["id"]

    # Every tag must appear in the role text, case-insensitively; LIKE wildcards are literal.
    tagged = await get(http, suggestions, owner, **window, skill_tags=["DEEP", "windows"])
    assert names(tagged["workers"]) == ["Dee"]
    assert names((await get(http, suggestions, owner, **window, skill_tags=["windows"]))["workers"]) == [
        "Cat",
        "Dee",
    ]
    assert names((await get(http, suggestions, owner, **window, skill_tags=["0%_s"]))["workers"]) == ["Dee"]
    assert (await get(http, suggestions, owner, **window, skill_tags=["d%n"]))["workers"] == []
    assert (await get(http, suggestions, owner, **window, skill_tags=["deep", "oven"]))["workers"] == []

    # Planning the busy team's own booking: its blocks do not count against it.
    planning = await get(http, suggestions, owner, **window, booking_id=job["id"])
    assert names(planning["teams"]) == ["Busy", "Free"]
    assert names(planning["workers"]) == ["Ann (busy team)", "Cat", "Dee"]

    # Periods are half-open: a window ending when the job starts is free.
    before = await get(http, suggestions, owner, starts_at=slot(46), ends_at=job["starts_at"])
    assert names(before["teams"]) == ["Busy", "Free"]  # "Off" is blacked out from an hour before
    assert len(before["workers"]) == 4


async def test_conflicts_list_bookings_blackouts_and_worker_conflicts(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner, "Crew")
    worker = await make_worker(http, url, owner, "Wes")
    job = await create_booking(http, url, owner, starts_at=slot(48), duration_minutes=120)
    assert (
        await assign(http, url, owner, job["id"], team_id=team["id"], worker_ids=[worker["id"]])
    ).status_code == 200
    team_off = await post(
        http,
        f"{url}/v1/admin/blackouts",
        owner,
        {"team_id": team["id"], "starts_at": slot(51), "ends_at": slot(53), "reason": "van service"},
    )
    worker_off = await post(
        http,
        f"{url}/v1/admin/blackouts",
        owner,
        {"worker_id": worker["id"], "starts_at": slot(52), "ends_at": slot(54)},
    )
    conflicts = f"{url}/v1/admin/schedule/conflicts"
    window = {"starts_at": slot(47), "ends_at": slot(55)}

    found = await get(http, conflicts, owner, **window, team_id=team["id"])
    assert found["has_conflict"] is True
    assert [(c["kind"], c["reference_id"]) for c in found["conflicts"]] == [
        ("booking", job["id"]),
        ("blackout", team_off["id"]),
    ]
    first = found["conflicts"][0]
    assert first["team_id"] == team["id"] and first["worker_id"] is None
    assert datetime.fromisoformat(first["starts_at"]) == datetime.fromisoformat(job["starts_at"])
    assert datetime.fromisoformat(first["ends_at"]) == datetime.fromisoformat(job["ends_at"])
    assert found["conflicts"][1]["note"] == "van service"

    found = await get(http, conflicts, owner, **window, worker_id=worker["id"])
    assert [(c["kind"], c["reference_id"]) for c in found["conflicts"]] == [
        ("worker_booking", job["id"]),
        ("worker_blackout", worker_off["id"]),
    ]
    assert found["conflicts"][0]["worker_id"] == worker["id"]

    both = await get(http, conflicts, owner, **window, team_id=team["id"], worker_id=worker["id"])
    assert [c["kind"] for c in both["conflicts"]] == [
        "booking",
        "worker_booking",
        "blackout",
        "worker_blackout",
    ]

    # Ignoring the booking being planned leaves only the blackouts.
    ignoring = await get(http, conflicts, owner, **window, team_id=team["id"], booking_id=job["id"])
    assert [c["kind"] for c in ignoring["conflicts"]] == ["blackout"]
    # booking_id alone: would this booking's own team and worker fit in the window?
    moved = await get(http, conflicts, owner, starts_at=slot(52), ends_at=slot(53), booking_id=job["id"])
    assert sorted(c["kind"] for c in moved["conflicts"]) == ["blackout", "worker_blackout"]
    assert (await get(http, conflicts, owner, starts_at=slot(48), ends_at=slot(50), booking_id=job["id"]))[
        "conflicts"
    ] == []

    free = await get(http, conflicts, owner, starts_at=slot(60), ends_at=slot(61), team_id=team["id"])
    assert free == {"has_conflict": False, "conflicts": []}
    # Half-open: ending exactly when the job starts is no conflict.
    assert not (
        await get(http, conflicts, owner, starts_at=slot(46), ends_at=job["starts_at"], team_id=team["id"])
    )["has_conflict"]
    # No subject at all: what blocks anyone in the window.
    everyone = await get(http, conflicts, owner, **window)
    assert len(everyone["conflicts"]) == 4


async def test_invalid_windows_are_422(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    now = datetime.now(UTC).replace(microsecond=0)
    for path in ("suggestions", "conflicts"):
        endpoint = f"{url}/v1/admin/schedule/{path}"
        for params, field in (
            ({"starts_at": slot(5), "ends_at": slot(4)}, "ends_at"),
            ({"starts_at": slot(5), "ends_at": slot(5)}, "ends_at"),
            ({"starts_at": slot(5), "ends_at": slot(5 + 32 * 24)}, "ends_at"),
            ({"starts_at": "2030-01-01T10:00:00", "ends_at": "2030-01-01T12:00:00"}, "starts_at"),
            ({"starts_at": slot(5), "ends_at": "2030-01-01T12:00:00"}, "ends_at"),
            ({"starts_at": "yesterday", "ends_at": slot(5)}, "starts_at"),
            ({"ends_at": slot(5)}, "starts_at"),
            ({"starts_at": "0001-01-01T00:00:00+05:00", "ends_at": slot(5)}, "starts_at"),
        ):
            body = assert_problem(await http.get(endpoint, headers=owner, params=params), 422)
            assert any(field in e["field"] for e in body.get("errors", [])), (params, body)
        # Exactly the longest window is fine.
        full = {"starts_at": now.isoformat(), "ends_at": (now + timedelta(days=31)).isoformat()}
        assert (await http.get(endpoint, headers=owner, params=full)).status_code == 200
    too_many = {"starts_at": slot(5), "ends_at": slot(6), "skill_tags": [f"t{i}" for i in range(11)]}
    assert_problem(
        await http.get(f"{url}/v1/admin/schedule/suggestions", headers=owner, params=too_many), 422
    )
    too_long = {"starts_at": slot(5), "ends_at": slot(6), "skill_tags": ["x" * 51]}
    assert_problem(
        await http.get(f"{url}/v1/admin/schedule/suggestions", headers=owner, params=too_long), 422
    )


async def test_other_orgs_ids_are_403_on_suggestions_and_conflicts(gateway, http, make_org):
    url = gateway.url
    owner_a = await testkit.owner(http, url, await make_org())
    owner_b = await testkit.owner(http, url, await make_org())
    theirs = {
        "team_id": (await make_team(http, url, owner_a, "Theirs"))["id"],
        "worker_id": (await make_worker(http, url, owner_a, "Their Worker"))["id"],
        "booking_id": (await create_booking(http, url, owner_a))["id"],
    }
    window = {"starts_at": slot(5), "ends_at": slot(6)}
    for field, value in theirs.items():
        for path in ("suggestions", "conflicts"):
            if path == "suggestions" and field != "booking_id":
                continue
            endpoint = f"{url}/v1/admin/schedule/{path}"
            assert_problem(
                await http.get(endpoint, headers=owner_b, params={**window, field: value}),
                403,
                "cross_org_or_unknown",
            )
            assert_problem(
                await http.get(endpoint, headers=owner_b, params={**window, field: str(uuid.uuid4())}),
                403,
                "cross_org_or_unknown",
            )
            assert_problem(await http.get(endpoint, headers=owner_b, params={**window, field: "nope"}), 422)
            # The owner of the ids gets answers.
            assert (
                await http.get(endpoint, headers=owner_a, params={**window, field: value})
            ).status_code == 200


async def test_assignments_queue(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    dispatcher = await testkit.staff(http, url, owner, "DISPATCHER")
    team = await make_team(http, url, owner, "Queue Crew")
    soon = await create_booking(http, url, owner, starts_at=slot(2))
    later = await create_booking(http, url, owner, starts_at=slot(3 * 24))
    far = await create_booking(http, url, owner, starts_at=slot(20 * 24))
    beyond = await create_booking(http, url, owner, starts_at=slot(40 * 24))
    assigned = await create_booking(http, url, owner, starts_at=slot(24))
    assert (await assign(http, url, owner, assigned["id"], team_id=team["id"])).status_code == 200
    cancelled = await create_booking(http, url, owner, starts_at=slot(30))
    await http.post(f"{url}/v1/admin/bookings/{cancelled['id']}/cancel", headers=owner, json={"reason": "x"})
    confirmed = await create_booking(http, url, owner, starts_at=slot(25))
    await http.post(f"{url}/v1/admin/bookings/{confirmed['id']}/confirm", headers=owner)
    # A job that started an hour ago and still has no team stays on the list, urgent; one that is
    # over does not.
    started = await create_booking(http, url, owner, starts_at=slot(-1), duration_minutes=180)
    await create_booking(http, url, owner, starts_at=slot(-20), duration_minutes=60)

    queue = f"{url}/v1/admin/queue/assignments"
    default = await get(http, queue, dispatcher)
    assert default["days"] == 7 and default["total"] == 4
    assert [(i["id"], i["urgent"]) for i in default["items"]] == [
        (started["id"], True),
        (soon["id"], True),
        (confirmed["id"], False),
        (later["id"], False),
    ]
    assert default["items"][2]["status"] == "confirmed" and default["items"][0]["team_id"] is None
    month = await get(http, queue, owner, days=30)
    assert [i["id"] for i in month["items"]][-1] == far["id"] and month["total"] == 5
    assert beyond["id"] not in {i["id"] for i in month["items"]}
    paged = await get(http, queue, owner, days=30, limit=2, offset=2)
    assert [i["id"] for i in paged["items"]] == [confirmed["id"], later["id"]] and paged["total"] == 5
    for days in (0, 31, -1, "x"):
        assert_problem(await http.get(queue, headers=owner, params={"days": days}), 422)
    assert_problem(await http.get(queue, headers=owner, params={"limit": 201}), 422)
