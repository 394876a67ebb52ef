"""Teams, workers, blackouts and users in a real browser against the real suite: each form once, a
refused field shown beside itself, the one-time secrets (portal link, temporary password), and another
org's ids refused (BOLA) with the web's 404 page."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.async_api import BrowserContext, Page, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner
from web.tests.conftest import screenshot, sign_in_page

ZONE = "America/Edmonton"


async def _post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    response = await http.post(url, headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def _csrf(page: Page) -> str:
    return await page.locator("input[name=csrf]").first.input_value()


async def _other_org(http: httpx.AsyncClient, gateway: GatewayProc, make_org) -> dict[str, str]:
    """Another org's team, worker, blackout and user: ids the first org's owner must not reach."""
    org = await make_org("Rival Cleaners")
    headers = await owner(http, gateway.url, org)
    url = gateway.url
    team = await _post(http, f"{url}/v1/admin/teams", headers, {"name": "Rival Team"})
    worker = await _post(http, f"{url}/v1/admin/workers", headers, {"name": "Rival Worker"})
    blackout = await _post(
        http,
        f"{url}/v1/admin/blackouts",
        headers,
        {"team_id": team["id"], "starts_at": "2030-01-01T08:00:00Z", "ends_at": "2030-01-01T17:00:00Z"},
    )
    user = await _post(
        http,
        f"{url}/v1/iam/users",
        headers,
        {"email": f"rival-{uuid.uuid4().hex[:8]}@example.com", "role": "VIEWER"},
    )
    return {
        "team": team["id"],
        "worker": worker["id"],
        "blackout": blackout["id"],
        "user": user["user"]["id"],
        "headers": headers["Authorization"],
    }


async def test_teams_workers_and_blackouts(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    org = await make_org("Sparkle Teams", time_zone=ZONE)
    headers = await owner(http, gateway.url, org)
    alpha = await _post(http, f"{gateway.url}/v1/admin/teams", headers, {"name": "Team Alpha"})
    await _post(
        http, f"{gateway.url}/v1/admin/workers", headers, {"name": "Wren Worker", "team_id": alpha["id"]}
    )
    rival = await _other_org(http, gateway, make_org)

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Teams").click()
    await expect(page.get_by_role("heading", name="Teams and workers")).to_be_visible()

    # A refused field is shown beside itself, then fixed.
    await page.get_by_role("button", name="Create team").click()
    await expect(page.locator("#e-team_name")).to_be_visible()
    await expect(page.get_by_label("Team name")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("Team name").fill("Team Beta")
    await page.get_by_role("button", name="Create team").click()
    await expect(page.get_by_role("status")).to_contain_text("Team Team Beta created.")

    await page.get_by_label("New name for Team Beta").fill("Team Gamma")
    await page.get_by_role("row", name="Team Beta").get_by_role("button", name="Rename").click()
    await expect(page.get_by_role("status")).to_contain_text("Team renamed to Team Gamma.")
    await page.get_by_role("button", name="Deactivate Team Gamma").click()
    await expect(page.get_by_role("button", name="Activate Team Gamma")).to_be_visible()
    await page.get_by_role("button", name="Activate Team Gamma").click()
    await expect(page.get_by_role("button", name="Deactivate Team Gamma")).to_be_visible()

    await page.get_by_label("Worker name").fill("Nia Newcomer")
    await page.get_by_label("Worker email").fill("nia@example.com")
    await page.get_by_label("Skills").fill("windows, ovens")
    await page.get_by_label("Team", exact=True).select_option(label="Team Alpha")
    await page.get_by_role("button", name="Add worker").click()
    await expect(page.get_by_role("status")).to_contain_text("Worker Nia Newcomer added.")
    await page.get_by_label("Team of Nia Newcomer").select_option(label="Team Gamma")
    await page.get_by_role("row", name="Nia Newcomer").get_by_role("button", name="Move").click()
    await expect(page.get_by_role("status")).to_contain_text("Worker moved.")
    await expect(page.get_by_label("Team of Nia Newcomer")).to_have_value(
        await page.get_by_label("Team of Nia Newcomer")
        .locator("option", has_text="Team Gamma")
        .get_attribute("value")
        or ""
    )

    # A blackout: an end before its start is refused beside the field, then it is added.
    await page.get_by_label("Team or worker").select_option(label="Wren Worker (worker)")
    await page.get_by_label("Starts").fill("2030-06-01T09:00")
    await page.get_by_label("Ends").fill("2030-06-01T08:00")
    await page.get_by_label("Reason").fill("Dentist")
    await page.get_by_role("button", name="Add blackout").click()
    await expect(page.locator("#e-ends_at")).to_be_visible()
    await page.get_by_label("Ends").fill("2030-06-01T12:00")
    await page.get_by_role("button", name="Add blackout").click()
    await expect(page.get_by_role("status")).to_contain_text("Blackout added.")
    row = page.get_by_role("row", name="Dentist")
    await expect(row).to_contain_text("Wren Worker")
    await expect(row).to_contain_text("Sat 01 Jun 2030 09:00")  # shown in the org's zone, as typed
    await screenshot(page, "teams")

    # The portal link is shown once, as an absolute URL of the worker portal.
    await page.get_by_role("button", name="Portal link for Wren Worker").click()
    link = await page.get_by_test_id("portal-link").input_value()
    assert link.startswith(web.url + "/portal/worker/login/callback?token="), link
    await page.get_by_role("link", name="Back to the workers").click()
    await page.get_by_role("button", name="Revoke portal access of Wren Worker").click()
    await expect(page.get_by_role("status")).to_contain_text("1 unused link(s) revoked")

    await page.get_by_role("button", name="Remove blackout of Wren Worker").click()
    await expect(page.get_by_role("status")).to_contain_text("Blackout removed.")
    await page.get_by_role("button", name="Delete Nia Newcomer").click()
    await expect(page.get_by_role("status")).to_contain_text("Worker deleted.")
    await page.get_by_role("button", name="Delete Team Gamma").click()
    await expect(page.get_by_role("status")).to_contain_text("Team deleted.")

    # BOLA: another org's team, worker and blackout are the web's 404, and stay as they were.
    csrf = await _csrf(page)
    for path in (
        f"/console/teams/{rival['team']}/delete",
        f"/console/teams/{rival['team']}/rename",
        f"/console/workers/{rival['worker']}/delete",
        f"/console/workers/{rival['worker']}/portal-link",
        f"/console/blackouts/{rival['blackout']}/delete",
    ):
        answer = await page.request.post(web.url + path, form={"csrf": csrf, "name": "Mine now"})
        assert answer.status == 404, (path, answer.status)
        assert "Not here" in await answer.text() or "not found" in (await answer.text()).lower()
    rival_headers = {"Authorization": rival["headers"]}
    teams = (await http.get(f"{gateway.url}/v1/admin/teams", headers=rival_headers)).json()["teams"]
    assert [t["name"] for t in teams] == ["Rival Team"]
    blackouts = (await http.get(f"{gateway.url}/v1/admin/blackouts", headers=rival_headers)).json()
    assert [b["id"] for b in blackouts["blackouts"]] == [rival["blackout"]]


async def test_users_created_reset_and_signed_out(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    org = await make_org("Sparkle Users")
    dana = f"dana-{uuid.uuid4().hex[:8]}@example.com"
    rival = await _other_org(http, gateway, make_org)
    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    await expect(page.get_by_role("cell", name=org.owner_email)).to_be_visible()

    await page.get_by_label("Email").fill("x")
    await page.get_by_label("Role").select_option("DISPATCHER")
    await page.get_by_role("button", name="Create user").click()
    await expect(page.locator("#e-email")).to_be_visible()
    await expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")

    await page.get_by_label("Email").fill(dana)
    await page.get_by_label("Full name").fill("Dana Dispatch")
    await page.get_by_label("Role").select_option("DISPATCHER")
    await page.get_by_role("button", name="Create user").click()
    await expect(page.get_by_role("heading", name="User created")).to_be_visible()
    first = (await page.get_by_test_id("temp-password").inner_text()).strip()
    assert len(first) >= 12
    await page.get_by_role("link", name="Back to the users").click()
    row = page.get_by_role("row", name=dana)
    await expect(row).to_contain_text("dispatcher")
    await expect(row).to_contain_text("Must change the temporary password")
    await screenshot(page, "users")

    # The temporary password works once at the gateway; a reset replaces it and ends its sessions.
    signed = await http.post(f"{gateway.url}/v1/auth/login", json={"email": dana, "password": first})
    assert signed.status_code == 200, signed.text
    await page.get_by_role("button", name=f"Reset password of {dana}").click()
    await expect(page.get_by_role("heading", name="Password reset")).to_be_visible()
    second = (await page.get_by_test_id("temp-password").inner_text()).strip()
    assert second and second != first
    refresh = await http.post(
        f"{gateway.url}/v1/auth/refresh", json={"refresh_token": signed.json()["refresh_token"]}
    )
    assert refresh.status_code == 401, refresh.text
    await page.get_by_role("link", name="Back to the users").click()

    await http.post(f"{gateway.url}/v1/auth/login", json={"email": dana, "password": second})
    await page.get_by_role("button", name=f"Sign {dana} out everywhere").click()
    await expect(page.get_by_role("status")).to_contain_text("Signed out everywhere: 1 session(s) ended.")

    # BOLA: another org's user cannot be reset or signed out from here.
    csrf = await _csrf(page)
    for path in (
        f"/console/users/{rival['user']}/reset-password",
        f"/console/users/{rival['user']}/sign-out",
    ):
        answer = await page.request.post(web.url + path, form={"csrf": csrf})
        assert answer.status == 404, (path, answer.status, await answer.text())
        assert "temp-password" not in await answer.text()
