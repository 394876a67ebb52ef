"""PATCH of teams and workers at the gateway, in front of the real booking process: partial
updates, validation like create, duplicate names, detaching from a team, roles, other orgs' ids."""

from __future__ import annotations

import uuid

from services.booking.tests.test_scheduling import make_team, make_worker
from tools import testkit
from tools.testkit import assert_clean, assert_problem


async def test_patch_team_changes_only_what_is_sent(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    alpha = await make_team(http, url, owner, "Alpha Crew")
    await make_team(http, url, owner, "Beta Crew")

    renamed = await http.patch(f"{url}/v1/admin/teams/{alpha['id']}", headers=owner, json={"name": " Gamma "})
    assert_clean(renamed)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {"id": alpha["id"], "name": "Gamma", "active": True}
    off = await http.patch(f"{url}/v1/admin/teams/{alpha['id']}", headers=owner, json={"active": False})
    assert off.status_code == 200 and off.json() == {"id": alpha["id"], "name": "Gamma", "active": False}
    # Its own name in another case is no clash; another team's name (any case) is.
    same = await http.patch(f"{url}/v1/admin/teams/{alpha['id']}", headers=owner, json={"name": "GAMMA"})
    assert same.status_code == 200 and same.json()["name"] == "GAMMA"
    assert_problem(
        await http.patch(f"{url}/v1/admin/teams/{alpha['id']}", headers=owner, json={"name": "beta crew"}),
        409,
        "team_exists",
    )
    unchanged = await http.patch(f"{url}/v1/admin/teams/{alpha['id']}", headers=owner, json={})
    assert unchanged.json() == {"id": alpha["id"], "name": "GAMMA", "active": False}

    for bad in ({"name": "   "}, {"name": "x" * 201}, {"name": None}, {"active": None}, {"colour": "blue"}):
        body = assert_problem(
            await http.patch(f"{url}/v1/admin/teams/{alpha['id']}", headers=owner, json=bad), 422
        )
        assert body["errors"], body
    assert_problem(
        await http.patch(f"{url}/v1/admin/teams/{uuid.uuid4()}", headers=owner, json={"name": "X"}), 404
    )
    teams = (await http.get(f"{url}/v1/admin/teams", headers=owner)).json()["teams"]
    assert sorted(t["name"] for t in teams) == ["Beta Crew", "GAMMA"]


async def test_patch_worker_validates_like_create_and_detaches_with_null(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner, "Alpha Crew")
    other_team = await make_team(http, url, owner, "Beta Crew")
    worker = await make_worker(http, url, owner, "Wren Worker", role="windows", team_id=team["id"])
    path = f"{url}/v1/admin/workers/{worker['id']}"

    changed = await http.patch(
        path,
        headers=owner,
        json={"email": "Wren@Example.com", "phone": "780-555-0199", "team_id": other_team["id"]},
    )
    assert_clean(changed)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["email"] == "wren@example.com" and body["phone"] == "+17805550199"
    assert body["team_id"] == other_team["id"]
    assert body["name"] == "Wren Worker" and body["role"] == "windows" and body["active"] is True

    detached = (await http.patch(path, headers=owner, json={"team_id": None, "active": False})).json()
    assert detached["team_id"] is None and detached["active"] is False and detached["email"] == body["email"]
    renamed = (await http.patch(path, headers=owner, json={"name": "Wren W.", "role": None})).json()
    assert renamed["name"] == "Wren W." and renamed["role"] == "" and renamed["team_id"] is None

    for bad, field in (
        ({"email": "nope"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"team_id": "not-a-uuid"}, "team_id"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"colour": "blue"}, "colour"),
    ):
        problem = assert_problem(await http.patch(path, headers=owner, json=bad), 422)
        assert any(field in e["field"] for e in problem["errors"]), problem
    assert_problem(
        await http.patch(path, headers=owner, json={"team_id": str(uuid.uuid4())}), 404, "team_not_found"
    )
    listed = (await http.get(f"{url}/v1/admin/workers", headers=owner)).json()["workers"]
    assert listed == [renamed]


async def test_patch_roles_and_other_orgs_ids(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    team = await make_team(http, url, owner, "Alpha Crew")
    worker = await make_worker(http, url, owner, "Wren Worker")
    dispatcher = await testkit.staff(http, url, owner, "DISPATCHER")
    ok = await http.patch(f"{url}/v1/admin/teams/{team['id']}", headers=dispatcher, json={"name": "Beta"})
    assert ok.status_code == 200, ok.text
    for role in ("VIEWER", "FINANCE"):
        headers = await testkit.staff(http, url, owner, role)
        for path in (f"teams/{team['id']}", f"workers/{worker['id']}"):
            response = await http.patch(f"{url}/v1/admin/{path}", headers=headers, json={"name": "Nope"})
            assert_problem(response, 403)

    intruder = await testkit.owner(http, url, await make_org())
    their_team = await make_team(http, url, intruder, "Theirs")
    for path in (f"teams/{team['id']}", f"workers/{worker['id']}"):
        response = await http.patch(f"{url}/v1/admin/{path}", headers=intruder, json={"name": "Stolen"})
        assert_problem(response, 404)
    # Nor can a worker join another org's team.
    assert_problem(
        await http.patch(
            f"{url}/v1/admin/workers/{worker['id']}", headers=owner, json={"team_id": their_team["id"]}
        ),
        404,
        "team_not_found",
    )
    teams = (await http.get(f"{url}/v1/admin/teams", headers=owner)).json()["teams"]
    assert [t["name"] for t in teams] == ["Beta"]
    assert (await http.get(f"{url}/v1/admin/workers", headers=owner)).json()["workers"][0]["name"] == (
        "Wren Worker"
    )
