"""Leads and bookings in a real browser against the real suite: a lead becomes a booking through the
form (a refused field shown beside itself, then fixed), is assigned from the suggestions, confirmed,
and shows in its team's lane on the board; another org's lead and booking are the web's 404."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from playwright.async_api import BrowserContext, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner
from web.tests.conftest import screenshot, sign_in_page

ZONE = "America/Edmonton"
HAND_MADE = {"cleaning_type": "standard", "beds": 1, "baths": 1}


async def _lead(http: httpx.AsyncClient, url: str, org: Any, name: str) -> dict[str, Any]:
    created = await http.post(
        f"{url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": name,
            "phone": "780-555-0142",
            "email": f"lead-{uuid.uuid4().hex[:8]}@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 2, "baths": 1.5, "cleaning_type": "standard"},
            "notes": "Side door",
        },
    )
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def _post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    response = await http.post(url, headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_lead_to_booking_assigned_confirmed_and_on_the_board(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    org = await make_org("Sparkle Bookings", time_zone=ZONE)
    headers = await owner(http, gateway.url, org)
    await _lead(http, gateway.url, org, "Older Lead")
    lead = await _lead(http, gateway.url, org, "Dana Lead")
    team = await _post(http, f"{gateway.url}/v1/admin/teams", headers, {"name": "Team Alpha"})
    await _post(http, f"{gateway.url}/v1/admin/teams", headers, {"name": "Team Beta"})
    await _post(
        http, f"{gateway.url}/v1/admin/workers", headers, {"name": "Wren Worker", "team_id": team["id"]}
    )

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Leads").click()
    rows = page.get_by_role("row")
    await expect(rows.nth(1)).to_contain_text("Dana Lead")  # newest first
    await expect(rows.nth(2)).to_contain_text("Older Lead")
    await screenshot(page, "leads-inbox")

    await page.get_by_role("link", name="Dana Lead").click()
    await expect(page.get_by_role("heading", name="Estimate")).to_be_visible()
    await page.get_by_role("link", name="Create booking").click()
    await expect(page.get_by_label("Client name")).to_have_value("Dana Lead")
    await expect(page.get_by_label("Client email")).to_have_value(lead["email"])
    await expect(page.get_by_label("Bathrooms")).to_have_value("1.5")

    # The org has no booking yet, so its zone is asked for; then one refused field, shown beside itself.
    await page.get_by_label("Time zone").fill(ZONE)
    await page.get_by_label("Client email").fill("not-an-email")
    await page.get_by_role("button", name="Create booking").click()
    error = page.locator("#e-client_email")
    await expect(error).to_be_visible()
    await expect(page.get_by_label("Client email")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Client name")).to_have_value("Dana Lead")  # the rest kept
    await screenshot(page, "booking-new")

    await page.get_by_label("Client email").fill(lead["email"])
    await page.get_by_role("button", name="Create booking").click()
    await expect(page.get_by_role("status")).to_contain_text("Booking created")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Dana Lead")
    await expect(page.get_by_test_id("booking-team")).to_have_text("Unassigned")
    booking_url = page.url
    booking_id = booking_url.rsplit("/", 1)[-1]
    created = (await http.get(f"{gateway.url}/v1/admin/bookings/{booking_id}", headers=headers)).json()
    assert created["lead_id"] == lead["lead_id"]
    assert created["total_before_tax_cents"] == lead["estimate"]["total_before_tax_cents"]
    tomorrow = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=1)
    assert created["starts_at_local"].startswith(tomorrow.isoformat() + "T09:00")  # read in the org's zone

    await page.get_by_role("button", name="Assign team Team Alpha").click()
    await expect(page.get_by_role("status")).to_contain_text("Assignment saved")
    await expect(page.get_by_test_id("booking-team")).to_have_text("Team Alpha")
    await page.get_by_role("button", name="Assign worker Wren Worker").click()
    await expect(page.get_by_role("status")).to_contain_text("Assignment saved")
    await expect(page.get_by_text("Wren Worker", exact=True).first).to_be_visible()
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("status")).to_contain_text("Booking confirmed")
    await expect(page.locator(".badge")).to_have_text("confirmed")
    await screenshot(page, "booking-detail")

    await page.goto(f"{web.url}/console/bookings?view=day&date={tomorrow.isoformat()}")
    alpha = page.locator(".lane", has=page.get_by_role("heading", name="Team Alpha"))
    await expect(alpha.get_by_role("link", name="Dana Lead")).to_be_visible()
    await expect(alpha.get_by_role("link", name="Dana Lead")).to_contain_text("09:00")
    unassigned = page.locator(".lane", has=page.get_by_role("heading", name="Unassigned"))
    await expect(unassigned.get_by_role("link")).to_have_count(0)
    await page.goto(f"{web.url}/console/bookings?view=week&date={tomorrow.isoformat()}&team_id={team['id']}")
    await expect(page.get_by_role("link", name="Dana Lead")).to_be_visible()
    await expect(page.get_by_role("heading", name="Team Beta")).to_have_count(0)
    await page.goto(f"{web.url}/console/bookings?view=day&date={tomorrow.isoformat()}")
    await screenshot(page, "bookings-board")

    # A second booking by hand, at the same time: the zone is now known (not asked), and the team
    # already busy then is not among the suggestions.
    await page.get_by_role("link", name="New booking").click()
    await expect(page.get_by_label("Time zone")).to_have_count(0)
    await expect(page.get_by_text(f"Times in {ZONE}")).to_be_visible()
    await page.get_by_label("Client name").fill("Second Client")
    await page.get_by_label("Cleaning type").fill("standard")
    await page.get_by_label("Bedrooms").fill("1")
    await page.get_by_label("Bathrooms").fill("1")
    await page.get_by_role("button", name="Create booking").click()
    await expect(page.get_by_role("status")).to_contain_text("Booking created")
    await expect(page.get_by_role("button", name="Assign team Team Beta")).to_be_visible()
    await expect(page.get_by_role("button", name="Assign team Team Alpha")).to_have_count(0)
    await page.goto(f"{web.url}/console/bookings?view=week&date={tomorrow.isoformat()}")
    await expect(page.get_by_role("link", name="Second Client")).to_be_visible()
    await screenshot(page, "bookings-board-week")

    # Moving the booking with a bad duration: the error beside the field; then moved for real.
    await page.goto(booking_url)
    await page.get_by_label("Duration (minutes)").fill("5")
    await page.get_by_role("button", name="Reschedule").click()
    await expect(page.locator("#e-duration_minutes")).to_be_visible()
    await page.get_by_label("Duration (minutes)").fill("90")
    await page.get_by_role("button", name="Reschedule").click()
    await expect(page.get_by_role("status")).to_contain_text("Booking moved")


async def test_schedule_conflict_is_explained(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    org = await make_org("Sparkle Conflicts")
    headers = await owner(http, gateway.url, org)
    team = await _post(http, f"{gateway.url}/v1/admin/teams", headers, {"name": "Team Busy"})
    starts = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)
    body = {**HAND_MADE, "starts_at": starts.isoformat(), "duration_minutes": 120, "client_name": "First"}
    first = await _post(http, f"{gateway.url}/v1/admin/bookings", headers, body)
    assigned = await http.post(
        f"{gateway.url}/v1/admin/bookings/{first['id']}/assign", headers=headers, json={"team_id": team["id"]}
    )
    assert assigned.status_code == 200, assigned.text
    second = await _post(http, f"{gateway.url}/v1/admin/bookings", headers, {**body, "client_name": "Second"})

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    # The suggestions leave the busy team out; a stale page (or a crafted form) can still ask for it.
    await page.goto(f"{web.url}/console/bookings/{first['id']}")
    csrf = await page.locator("input[name=csrf]").first.input_value()
    answer = await page.request.post(
        f"{web.url}/console/bookings/{second['id']}/assign",
        form={"csrf": csrf, "team_id": team["id"]},
        headers={"Origin": web.url},
    )
    assert answer.status == 409, await answer.text()
    await page.set_content(await answer.text())
    await expect(page.get_by_role("heading", name="Conflicts")).to_be_visible()
    await expect(page.get_by_role("link", name="the other booking")).to_have_attribute(
        "href", f"/console/bookings/{first['id']}"
    )


async def test_another_orgs_lead_and_booking_are_not_found(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    theirs = await make_org("Other Org")
    their_headers = await owner(http, gateway.url, theirs)
    lead = await _lead(http, gateway.url, theirs, "Their Lead")
    booking = await _post(
        http,
        f"{gateway.url}/v1/admin/bookings",
        their_headers,
        {
            "lead_id": lead["lead_id"],
            "starts_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
            "duration_minutes": 60,
        },
    )
    ours = await make_org("Our Org")
    page = await desk.new_page()
    await sign_in_page(page, web.url, ours.owner_email, ours.owner_password)
    for path in (
        f"/console/bookings/{booking['id']}",
        f"/console/leads/{lead['lead_id']}",
        f"/console/bookings/new?lead_id={lead['lead_id']}",
    ):
        response = await page.goto(web.url + path)
        assert response is not None and response.status == 404, path
        await expect(page.get_by_role("alert")).to_be_visible()
        await expect(page.get_by_text("Their Lead")).to_have_count(0)
    csrf = await page.locator("input[name=csrf]").first.input_value()
    answer = await page.request.post(
        f"{web.url}/console/bookings/{booking['id']}/confirm",
        form={"csrf": csrf},
        headers={"Origin": web.url},
    )
    assert answer.status == 404
    state = (await http.get(f"{gateway.url}/v1/admin/bookings/{booking['id']}", headers=their_headers)).json()
    assert state["status"] == "pending"


async def test_start_complete_and_cancel_with_a_reason(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    org = await make_org("Sparkle Lifecycle")
    headers = await owner(http, gateway.url, org)
    starts = (datetime.now(UTC) + timedelta(days=1)).replace(hour=16, minute=0, second=0, microsecond=0)
    body = {**HAND_MADE, "starts_at": starts.isoformat(), "duration_minutes": 60}
    done = await _post(http, f"{gateway.url}/v1/admin/bookings", headers, {**body, "client_name": "Done"})
    dropped = await _post(http, f"{gateway.url}/v1/admin/bookings", headers, {**body, "client_name": "Gone"})

    for n in range(12):  # more than one page of suggestions
        await _post(http, f"{gateway.url}/v1/admin/workers", headers, {"name": f"Worker {n:02d}"})

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.goto(f"{web.url}/console/bookings/{done['id']}")
    assign = page.get_by_role("button", name="Assign worker")
    await expect(assign).to_have_count(10)
    first_page = await page.locator(".cards h3").all_inner_texts()
    await page.get_by_role("link", name="More suggestions").click()
    await expect(assign).to_have_count(2)
    assert not set(first_page) & set(await page.locator(".cards h3").all_inner_texts())
    await page.get_by_role("link", name="Previous suggestions").click()
    await expect(assign).to_have_count(10)
    for button, flash, status in (
        ("Confirm", "Booking confirmed", "confirmed"),
        ("Start", "Booking started", "in progress"),
        ("Complete", "Booking completed", "completed"),
    ):
        await page.get_by_role("button", name=button, exact=True).click()
        await expect(page.get_by_role("status")).to_contain_text(flash)
        await expect(page.locator("h1 .badge")).to_have_text(status)
    # A finished booking offers no more actions, moves or assignment.
    await expect(page.get_by_role("button", name="Reschedule")).to_have_count(0)
    await expect(page.get_by_role("heading", name="Assign")).to_have_count(0)

    await page.goto(f"{web.url}/console/bookings/{dropped['id']}")
    await page.get_by_label("Reason").fill("Client moved away")
    await page.get_by_role("button", name="Cancel booking").click()
    await expect(page.get_by_role("status")).to_contain_text("Booking cancelled")
    await expect(page.locator("h1 .badge")).to_have_text("cancelled")
    await expect(page.get_by_text("Client moved away")).to_be_visible()

    # A deposit holds the confirmation back (the refusal shown on the page) until it is marked paid.
    held = await _post(
        http,
        f"{gateway.url}/v1/admin/bookings",
        headers,
        {**body, "client_name": "Held", "deposit_required": True},
    )
    await page.goto(f"{web.url}/console/bookings/{held['id']}")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("alert")).to_contain_text("deposit")
    await page.get_by_role("button", name="Mark deposit paid").click()
    await expect(page.get_by_role("status")).to_contain_text("Deposit marked paid")
    await expect(page.locator("h1 .badge")).to_have_text("confirmed")
