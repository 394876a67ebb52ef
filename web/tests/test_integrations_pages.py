"""The integrations page (/admin/settings/integrations) in a real browser, against the real suite and
the session's fake Google and QuickBooks (tools/fake_google.py, tools/fake_quickbooks.py): the
connect-sync-disconnect walk-through of issue 17 for both providers, a denied consent, another org's
admin, and a grant revoked at the provider.

The consent pages are the fakes' own (tools/fake_oauth.py): the browser really goes there from the
Connect button and really comes back to the redirect URI with code and state."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.async_api import BrowserContext, Locator, Page, expect

from tools.testkit import owner
from web.tests.conftest import INTEGRATIONS_PAGE, IntegrationsConsole, screenshot, sign_in_page

GOOGLE = "Google Calendar"
QUICKBOOKS = "QuickBooks Online"


async def _post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: Any = None) -> Any:
    response = await http.post(url, headers=headers, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _control(http: httpx.AsyncClient, base: str, method: str, path: str, **kwargs: Any) -> Any:
    response = await http.request(method, f"{base}/_control/{path}", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def _booking(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    starts = (datetime.now(UTC) + timedelta(days=2)).replace(hour=15, minute=0, second=0, microsecond=0)
    return await _post(  # type: ignore[no-any-return]
        http,
        f"{url}/v1/admin/bookings",
        headers,
        {
            "starts_at": starts.isoformat(),
            "duration_minutes": 120,
            "client_name": "Cora Calendar",
            "client_email": f"cora-{uuid.uuid4().hex[:8]}@example.com",
            "address": "12 Jasper Ave",
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )


def _section(page: Page, name: str) -> Locator:
    return page.get_by_role("region", name=re.compile(f"^{re.escape(name)}"))


async def _open_page(page: Page, console: IntegrationsConsole, email: str, password: str) -> None:
    await sign_in_page(page, console.web.url, email, password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    await page.wait_for_url(console.web.url + INTEGRATIONS_PAGE)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Integrations")


async def _consent(page: Page, section: Locator, name: str, provider_url: str) -> None:
    """Connect → the provider's consent page (the fake's) → the person's answer is the caller's."""
    await section.get_by_role("button", name=f"Connect {name}").click()
    await page.wait_for_url(re.compile("^" + re.escape(provider_url) + "/oauth/authorize\\?"))
    await expect(page.get_by_role("button", name="Allow")).to_be_visible()


async def _connect_google(page: Page, console: IntegrationsConsole) -> Locator:
    google = _section(page, GOOGLE)
    await _consent(page, google, GOOGLE, console.google.base_url)
    await page.get_by_role("button", name="Allow").click()
    # Back on the page, the code and state gone from the address.
    await page.wait_for_url(console.web.url + INTEGRATIONS_PAGE)
    await expect(page.get_by_role("status")).to_contain_text("Google Calendar connected")
    await expect(google.get_by_text("Connected since")).to_be_visible()
    return google


async def _choose_jobs_calendar(page: Page, google: Locator, team: str | None = None) -> str:
    """Chooses the fake account's "Cleaning jobs" calendar (and the busy team); its id."""
    await google.get_by_label("Calendar", exact=True).select_option(label="Cleaning jobs")
    if team:
        await google.get_by_label("Busy time blocks").select_option(label=team)
    await google.get_by_role("button", name="Save calendar").click()
    await expect(page.get_by_role("status")).to_contain_text(
        "Bookings now sync with the calendar Cleaning jobs"
    )
    calendar_id = await google.get_by_label("Calendar", exact=True).input_value()
    assert calendar_id.startswith("jobs-"), calendar_id
    return calendar_id


def _grant_of(calendar_id: str) -> str:
    """The fake's grant id from one of its calendars' ids (jobs-<grant>@group.calendar.google.com)."""
    return calendar_id.removeprefix("jobs-").split("@", 1)[0]


async def _grant(http: httpx.AsyncClient, base: str, grant_id: str) -> dict[str, Any]:
    state = await _control(http, base, "GET", "oauth/state")
    [grant] = [g for g in state["grants"] if g["grant_id"] == grant_id]
    return grant  # type: ignore[no-any-return]


async def test_google_calendar_connect_choose_sync_and_disconnect(
    integrations_console: IntegrationsConsole, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    console = integrations_console
    fake = console.google.base_url
    org = await make_org("Sparkle Calendar")
    headers = await owner(http, console.gateway.url, org)
    team = await _post(http, f"{console.gateway.url}/v1/admin/teams", headers, {"name": "Team Calendar"})
    booking = await _booking(http, console.gateway.url, headers)

    page = await desk.new_page()
    await _open_page(page, console, org.owner_email, org.owner_password)
    google = _section(page, GOOGLE)
    await expect(google).to_contain_text("Not connected")
    await expect(google.get_by_text("Last sync")).to_be_visible()
    await expect(_section(page, QUICKBOOKS)).to_contain_text("Not connected")
    await screenshot(page, "integrations-disconnected")

    await _connect_google(page, console)
    # No calendar yet: nothing syncs until one is chosen.
    await expect(google).to_contain_text("None chosen yet")
    calendar_id = await _choose_jobs_calendar(page, google, team="Team Calendar")
    await expect(google).to_contain_text("Team Calendar")

    # Someone puts a dentist appointment in the calendar in Google's own UI: busy time.
    busy_start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=16, minute=0, second=0, microsecond=0)
    await _control(
        http,
        fake,
        "POST",
        "events",
        json={
            "calendar_id": calendar_id,
            "summary": "Dentist",
            "start": busy_start.isoformat(),
            "end": (busy_start + timedelta(hours=1)).isoformat(),
        },
    )

    await google.get_by_role("button", name="Sync Google Calendar now").click()
    await expect(page.get_by_role("status")).to_contain_text("Google Calendar synced")
    await expect(google.get_by_text("events created 1")).to_be_visible()
    await screenshot(page, "integrations")

    # The booking is an event on the chosen calendar, marked as ours.
    events = (await _control(http, fake, "GET", "events", params={"calendar_id": calendar_id}))["items"]
    ours = [
        e
        for e in events
        if ((e.get("extendedProperties") or {}).get("private") or {}).get("cws_booking_id") == booking["id"]
    ]
    assert len(ours) == 1, events
    assert ours[0].get("status") != "cancelled"
    assert "Cora Calendar" in ours[0].get("summary", "") + ours[0].get("description", "")
    # The dentist's hour blocks the busy team's scheduling.
    blackouts = await http.get(f"{console.gateway.url}/v1/admin/blackouts", headers=headers)
    assert blackouts.status_code == 200, blackouts.text
    starts = [
        datetime.fromisoformat(b["starts_at"].replace("Z", "+00:00"))
        for b in blackouts.json()["blackouts"]
        if b.get("team_id") == team["id"]
    ]
    assert busy_start in starts, blackouts.json()

    await google.get_by_role("button", name="Disconnect Google Calendar").click()
    await expect(page.get_by_role("status")).to_have_text("Google Calendar disconnected.")
    await expect(google).to_contain_text("Not connected")
    await expect(google.get_by_role("button", name="Connect Google Calendar")).to_be_visible()
    await expect(google.get_by_role("button", name="Sync Google Calendar now")).to_have_count(0)
    # Revoked at Google too, not only forgotten here.
    assert (await _grant(http, fake, _grant_of(calendar_id)))["revoked"] is True


async def test_quickbooks_connect_shows_the_company_and_pushes_an_issued_invoice(
    integrations_console: IntegrationsConsole, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    console = integrations_console
    fake = console.quickbooks.base_url
    # A company of this test's own in the fake: the next consent picks it.
    company = await _control(
        http, fake, "POST", "companies", json={"name": f"Sparkle Books {uuid.uuid4().hex[:6]}"}
    )
    org = await make_org("Sparkle Ledger")
    headers = await owner(http, console.gateway.url, org)
    invoice = await _post(
        http,
        f"{console.gateway.url}/v1/admin/invoices",
        headers,
        {
            "client_name": "Quinn Books",
            "client_email": f"quinn-{uuid.uuid4().hex[:8]}@example.com",
            "items": [
                {"description": "Deep clean", "quantity": "1", "unit_price_cents": 20000, "tax_rate": "13"}
            ],
        },
    )
    issued = await _post(http, f"{console.gateway.url}/v1/admin/invoices/{invoice['id']}/issue", headers)
    number = issued["number"]
    assert number

    page = await desk.new_page()
    await _open_page(page, console, org.owner_email, org.owner_password)
    books = _section(page, QUICKBOOKS)
    await _consent(page, books, QUICKBOOKS, fake)
    await page.get_by_role("button", name="Allow").click()
    await page.wait_for_url(console.web.url + INTEGRATIONS_PAGE)
    await expect(page.get_by_role("status")).to_have_text(
        f"QuickBooks Online connected to {company['name']}."
    )
    await expect(books).to_contain_text(company["name"])
    await expect(books).to_contain_text(f"realm {company['realm_id']}")

    await books.get_by_role("button", name="Sync QuickBooks Online now").click()
    await expect(page.get_by_role("status")).to_contain_text("QuickBooks Online synced")
    await expect(books.get_by_text("invoices created 1")).to_be_visible()
    await screenshot(page, "integrations-quickbooks")
    pushed = await _control(http, fake, "GET", "invoices", params={"realm_id": company["realm_id"]})
    [remote] = [i for i in pushed["Invoice"] if i.get("DocNumber") == number]
    # The tax is the invoice's snapshot (13 % of 200.00), never recomputed there.
    assert float(remote["TxnTaxDetail"]["TotalTax"]) == 26.0

    # The accountant records the payment in QuickBooks: the next sync applies it here.
    await _control(
        http, fake, "POST", "payments", json={"realm_id": company["realm_id"], "invoice_id": remote["Id"]}
    )
    await books.get_by_role("button", name="Sync QuickBooks Online now").click()
    await expect(page.get_by_role("status")).to_contain_text("QuickBooks Online synced")
    paid = await http.get(f"{console.gateway.url}/v1/admin/invoices/{invoice['id']}", headers=headers)
    assert paid.json()["status"] == "PAID", paid.text

    await books.get_by_role("button", name="Disconnect QuickBooks Online").click()
    await expect(page.get_by_role("status")).to_have_text("QuickBooks Online disconnected.")
    await expect(books).to_contain_text("Not connected")


async def test_a_denied_consent_is_shown_as_an_error(
    integrations_console: IntegrationsConsole, desk: BrowserContext, make_org
) -> None:
    console = integrations_console
    org = await make_org("Sparkle Denied")
    page = await desk.new_page()
    await _open_page(page, console, org.owner_email, org.owner_password)
    google = _section(page, GOOGLE)
    await _consent(page, google, GOOGLE, console.google.base_url)
    await page.get_by_role("button", name="Deny").click()
    await page.wait_for_url(console.web.url + INTEGRATIONS_PAGE)
    await expect(page.get_by_role("alert")).to_contain_text(re.compile("denied", re.IGNORECASE))
    await expect(google).to_contain_text("Not connected")
    await screenshot(page, "integrations-denied")
    # The outcome is shown once: a reload is the plain page.
    await page.reload()
    await expect(page.get_by_role("alert")).to_have_count(0)


async def test_another_orgs_admin_sees_only_their_own_and_cannot_use_anothers_consent(
    integrations_console: IntegrationsConsole, browser: Any, make_org
) -> None:
    console = integrations_console
    ours, theirs = await make_org("Sparkle Ours"), await make_org("Sparkle Theirs")
    async with (
        await browser.new_context(viewport={"width": 1280, "height": 860}) as our_desk,
        await browser.new_context(viewport={"width": 1280, "height": 860}) as their_desk,
    ):
        page = await our_desk.new_page()
        await _open_page(page, console, ours.owner_email, ours.owner_password)
        google = await _connect_google(page, console)
        await _choose_jobs_calendar(page, google)

        other = await their_desk.new_page()
        await _open_page(other, console, theirs.owner_email, theirs.owner_password)
        their_google = _section(other, GOOGLE)
        await expect(their_google).to_contain_text("Not connected")
        await expect(other.get_by_text("Cleaning jobs")).to_have_count(0)

        # Our admin starts connecting QuickBooks; their admin gets hold of the consent link and
        # answers it in their own session: the state is ours, so it completes nothing for them.
        books = _section(page, QUICKBOOKS)
        await _consent(page, books, QUICKBOOKS, console.quickbooks.base_url)
        await other.goto(page.url)
        await other.get_by_role("button", name="Allow").click()
        await other.wait_for_url(console.web.url + INTEGRATIONS_PAGE)
        await expect(other.get_by_role("alert")).to_be_visible()
        await expect(_section(other, QUICKBOOKS)).to_contain_text("Not connected")
        await expect(their_google).to_contain_text("Not connected")


async def test_a_grant_revoked_at_google_is_shown_with_its_reason(
    integrations_console: IntegrationsConsole, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    console = integrations_console
    org = await make_org("Sparkle Revoked")
    page = await desk.new_page()
    await _open_page(page, console, org.owner_email, org.owner_password)
    google = await _connect_google(page, console)
    await _choose_jobs_calendar(page, google)

    # The person removes the app in their Google account: every grant of the fake is revoked.
    await _control(http, console.google.base_url, "POST", "revoke-grants")
    await _control(http, console.google.base_url, "POST", "expire-tokens")
    await google.get_by_role("button", name="Sync Google Calendar now").click()
    await expect(page.get_by_role("alert")).to_contain_text("did not sync: the grant was revoked")
    await expect(google).to_contain_text("Revoked")
    await expect(google.locator(".badge")).to_have_text("revoked")
    await expect(google.get_by_role("button", name="Connect Google Calendar again")).to_be_visible()
    await expect(google.get_by_role("button", name="Sync Google Calendar now")).to_have_count(0)
    await screenshot(page, "integrations-revoked")


async def test_staff_who_do_not_manage_the_org_see_the_state_and_no_buttons(
    integrations_console: IntegrationsConsole, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    console = integrations_console
    org = await make_org("Sparkle Dispatch")
    headers = await owner(http, console.gateway.url, org)
    email = f"dispatcher-{uuid.uuid4().hex[:8]}@example.com"
    created = await _post(
        http, f"{console.gateway.url}/v1/iam/users", headers, {"email": email, "role": "DISPATCHER"}
    )
    temporary = await http.post(
        f"{console.gateway.url}/v1/auth/login", json={"email": email, "password": created["temp_password"]}
    )
    password = "Chosen-password-" + uuid.uuid4().hex[:10]
    changed = await http.post(
        f"{console.gateway.url}/v1/auth/change-password",
        headers={"Authorization": "Bearer " + temporary.json()["access_token"]},
        json={"current_password": created["temp_password"], "new_password": password},
    )
    assert changed.status_code == 204, changed.text

    page = await desk.new_page()
    await sign_in_page(page, console.web.url, email, password)
    # No nav entry for a dispatcher, but the page itself shows where things stand.
    await expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings")
    ).to_have_count(0)
    await page.goto(console.web.url + INTEGRATIONS_PAGE)
    await expect(_section(page, GOOGLE)).to_contain_text("Not connected")
    await expect(page.get_by_text("Only an owner or admin connects")).to_be_visible()
    await expect(page.get_by_role("button", name=re.compile("^(Connect|Sync|Disconnect) "))).to_have_count(0)
    # A connect posted anyway is the gateway's 403.
    answer = await page.request.post(
        f"{console.web.url}{INTEGRATIONS_PAGE}/google_calendar/connect",
        form={"csrf": await page.locator("input[name=csrf]").first.input_value()},
        headers={"Origin": console.web.url},
        max_redirects=0,
    )
    assert answer.status == 403
