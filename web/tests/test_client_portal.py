"""The client portal in a real phone-sized browser, against the real suite: a client signs in with the
link notify emails, sees their booking with its photo and their invoice (Pay goes to the local
Stripe's Checkout, the PDF downloads), gives and withdraws photo consent, and signs out; another
client's booking and invoice are the web's 404; an NPS survey is answered once; no page scrolls
sideways at 390 px."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Browser, BrowserContext, Page, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import eventually, jpeg_bytes, owner, sql
from web.tests.conftest import screenshot

PHONE_WIDTH = 390


def slot(hours_from_now: float) -> str:
    return (datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours_from_now)).isoformat()


async def new_booking(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    client_email: str,
    hours_from_now: float = 48,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "starts_at": slot(hours_from_now),
        "duration_minutes": 120,
        "client_name": "Casey Client",
        "client_email": client_email,
        "address": "12 Harbour Street, Unit 4",
        "cleaning_type": "standard",
        "beds": 2,
        "baths": 1,
        **extra,
    }
    created = await http.post(f"{url}/v1/admin/bookings", headers=headers, json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def admin_act(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str, action: str
) -> Any:
    done = await http.post(f"{url}/v1/admin/bookings/{booking_id}/{action}", headers=headers)
    assert done.status_code == 200, done.text
    return done.json()


async def issued_invoice(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    client_email: str,
    booking_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_name": "Casey Client",
        "client_email": client_email,
        "items": [
            {"description": "Standard clean", "quantity": "1", "unit_price_cents": 12000, "tax_rate": "13"}
        ],
    }
    if booking_id:
        body["booking_id"] = booking_id
    created = await http.post(f"{url}/v1/admin/invoices", headers=headers, json=body)
    assert created.status_code == 201, created.text
    issued = await http.post(f"{url}/v1/admin/invoices/{created.json()['id']}/issue", headers=headers)
    assert issued.status_code == 200, issued.text
    return dict(issued.json())


LINK = re.compile(r"https://portal\.cws\.test(/client/login/callback\?token=\S+)")


async def link_in_mail(smtp_sink: Any, email: str, seen: frozenset[str] = frozenset()) -> str:
    """The path and query of a sign-in link notify emailed to `email` (CLIENT_PORTAL_BASE_URL +
    callback) that is not in `seen`; other mail to the client (a booking's confirmation) is skipped."""

    def fresh() -> str:
        links = [m for mail in smtp_sink.to(email) for m in LINK.findall(mail.text)]
        new = [link for link in links if link not in seen]
        assert new, f"{len(links)} link(s) so far"
        return new[-1]

    return await eventually(fresh, timeout=15, message=f"a sign-in link to {email}")


async def emailed_link(http: httpx.AsyncClient, url: str, org_id: str, email: str, smtp_sink: Any) -> str:
    """A new sign-in link for `email`, asked for at the gateway as the org's own site would."""
    seen = frozenset(m for mail in smtp_sink.to(email) for m in LINK.findall(mail.text))
    requested = await http.post(
        f"{url}/client/login/request", json={"email": email}, headers={"X-Test-Org": org_id}
    )
    assert requested.status_code == 202, requested.text
    return await link_in_mail(smtp_sink, email, seen)


async def client_signs_in(page: Page, web_url: str, link: str) -> None:
    """Opens the emailed link on the console (deployments set CLIENT_PORTAL_BASE_URL to <console>/portal)."""
    await page.goto(web_url + "/portal" + link)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to your bookings")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(web_url + "/portal/client/")


async def fits_the_phone(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE_WIDTH, f"{page.url} scrolls sideways: {width}px"


async def test_a_client_signs_in_by_the_emailed_link_and_sees_bookings_photos_and_invoices(
    web: WebProc,
    gateway: GatewayProc,
    browser: Browser,
    phone: BrowserContext,
    make_org: Any,
    http: httpx.AsyncClient,
    smtp_sink: Any,
    stack: Any,
) -> None:
    url = gateway.url
    org = await make_org("Sparkle Portal")
    headers = await owner(http, url, org)
    email = f"casey-{uuid.uuid4().hex[:8]}@example.com"
    booking = await new_booking(http, url, headers, email, 48)
    await admin_act(http, url, headers, booking["id"], "confirm")
    uploaded = await http.post(
        f"{url}/v1/admin/bookings/{booking['id']}/photos",
        headers=headers,
        files={"file": ("job.jpg", jpeg_bytes(320, 240), "image/jpeg")},
    )
    assert uploaded.status_code == 201, uploaded.text
    invoice = await issued_invoice(http, url, headers, email, booking["id"])
    earlier = await new_booking(http, url, headers, email, -20, address="9 Old Mill Road")
    for action in ("confirm", "start", "complete"):
        await admin_act(http, url, headers, earlier["id"], action)

    page = await phone.new_page()
    # Not signed in: the portal sends the client to the sign-in page, whose form always says the same.
    await page.goto(web.url + "/portal/client/")
    await expect(page).to_have_url(web.url + "/portal/client/sign-in")
    await page.get_by_label("Email").fill(f"nobody-{uuid.uuid4().hex[:6]}@example.com")
    await page.get_by_role("button", name="Email me a sign-in link").click()
    await expect(page.get_by_role("status")).to_contain_text("Check your email")
    await fits_the_phone(page)

    # The org's own sign-in address names it by its public key (no API answer carries the key: SQL).
    [(key,)] = await sql(
        stack.admin_url, "SELECT public_key FROM booking.org_profiles WHERE org_id = %s", (org.org_id,)
    )
    await page.goto(web.url + f"/portal/client/sign-in?org={key}")
    await page.get_by_label("Email").fill(email)
    await page.get_by_role("button", name="Email me a sign-in link").click()
    await expect(page.get_by_role("status")).to_contain_text("Check your email")
    link = await link_in_mail(smtp_sink, email)
    await client_signs_in(page, web.url, link)
    await expect(page.get_by_role("heading", name="Coming up")).to_be_visible()
    await expect(page.get_by_text("12 Harbour Street, Unit 4")).to_be_visible()
    past = page.get_by_role("region", name="Past cleanings")
    await expect(past.get_by_text("9 Old Mill Road")).to_be_visible()
    await expect(past.get_by_text("12 Harbour Street")).to_have_count(0)
    await fits_the_phone(page)
    await screenshot(page, "client-home")

    # The link was used: pressing Sign in on it again says so, and signs nobody in.
    other = await browser.new_context()
    try:
        used = await other.new_page()
        await used.goto(web.url + "/portal" + link)
        await used.get_by_role("button", name="Sign in").click()
        await expect(used.get_by_role("alert")).to_contain_text("expired or was used already")
        await used.goto(web.url + "/portal/client/")
        await expect(used).to_have_url(web.url + "/portal/client/sign-in")
    finally:
        await other.close()

    await page.get_by_role("link", name=re.compile(r"\d{2}:\d{2}")).first.click()
    await page.wait_for_url(web.url + f"/portal/client/bookings/{booking['id']}")
    image = page.get_by_role("img", name="Photo 1 of your cleaning")
    await expect(image).to_be_visible()
    # The signed link loaded from the gateway: a real picture, not a broken one.
    loaded = await image.evaluate("img => img.complete && img.naturalWidth")
    assert loaded == 320, loaded
    src = await image.get_attribute("src")
    assert src and src.startswith(gateway.url + "/v1/public/photos/"), src
    await fits_the_phone(page)
    await screenshot(page, "client-booking")

    await page.get_by_role("button", name="Give my consent").click()
    await expect(page.get_by_role("status")).to_contain_text("you allow us to use the photos")
    consent = await http.get(f"{url}/v1/admin/bookings/{booking['id']}/photo-consent", headers=headers)
    assert consent.json()["granted"] is True, consent.text
    await page.get_by_role("button", name="Withdraw my consent").click()
    await expect(page.get_by_role("status")).to_contain_text("we no longer use the photos")
    consent = await http.get(f"{url}/v1/admin/bookings/{booking['id']}/photo-consent", headers=headers)
    assert consent.json()["granted"] is False, consent.text

    await page.get_by_role("link", name="Invoices").click()
    await page.get_by_role("link", name=f"Invoice {invoice['number']}").click()
    await page.wait_for_url(web.url + f"/portal/client/invoices/{invoice['id']}")
    await expect(page.get_by_text("Standard clean")).to_be_visible()
    await fits_the_phone(page)
    await screenshot(page, "client-invoice")

    async with page.expect_download() as waiting:
        await page.get_by_role("link", name="Download PDF").click()
    download = await waiting.value
    assert download.suggested_filename.endswith(".pdf"), download.suggested_filename
    pdf = await page.request.get(web.url + f"/portal/client/invoices/{invoice['id']}/pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    assert (await pdf.body()).startswith(b"%PDF-")

    # The dunning email's link (CLIENT_PORTAL_BASE_URL/invoices/{id}) lands on the same invoice.
    await page.goto(web.url + f"/portal/invoices/{invoice['id']}")
    await page.wait_for_url(web.url + f"/portal/client/invoices/{invoice['id']}")
    await page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    await page.wait_for_url(re.compile(r"/pay/cs_test_"))
    assert urlsplit(page.url).netloc != urlsplit(web.url).netloc

    await page.goto(web.url + "/portal/client/")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(web.url + "/portal/client/sign-in")
    await expect(page.get_by_role("status")).to_contain_text("signed out")
    await page.goto(web.url + f"/portal/client/invoices/{invoice['id']}")
    await expect(page).to_have_url(web.url + "/portal/client/sign-in")


async def test_another_clients_booking_and_invoice_are_the_webs_404(
    web: WebProc,
    gateway: GatewayProc,
    phone: BrowserContext,
    make_org: Any,
    http: httpx.AsyncClient,
    smtp_sink: Any,
) -> None:
    url = gateway.url
    org = await make_org("Sparkle BOLA")
    headers = await owner(http, url, org)
    mine, theirs = (f"{who}-{uuid.uuid4().hex[:8]}@example.com" for who in ("mine", "theirs"))
    own = await new_booking(http, url, headers, mine, 30)
    their_booking = await new_booking(http, url, headers, theirs, 50)
    their_invoice = await issued_invoice(http, url, headers, theirs)

    page = await phone.new_page()
    await client_signs_in(page, web.url, await emailed_link(http, url, org.org_id, mine, smtp_sink))
    await page.goto(web.url + f"/portal/client/bookings/{own['id']}")
    await expect(page.get_by_role("heading", name="Details")).to_be_visible()
    for path in (
        f"/portal/client/bookings/{their_booking['id']}",
        f"/portal/client/invoices/{their_invoice['id']}",
        f"/portal/client/invoices/{their_invoice['id']}/pdf",
        f"/portal/client/bookings/{uuid.uuid4()}",
        "/portal/client/bookings/not-an-id",
    ):
        response = await page.goto(web.url + path)
        assert response is not None and response.status == 404, path
        await expect(page.get_by_role("alert")).to_have_text("There is no such page.")
        await expect(page.get_by_text(theirs)).to_have_count(0)
    # Nor can the other client's invoice be paid or their consent recorded from this session (no
    # page offers the form: post it as the browser would, with this session's CSRF token).
    await page.goto(web.url + "/portal/client/")
    token = await page.locator("input[name=csrf]").first.get_attribute("value") or ""
    forms: list[tuple[str, dict[str, str | float | bool]]] = [
        (f"/portal/client/invoices/{their_invoice['id']}/pay", {"csrf": token}),
        (f"/portal/client/bookings/{their_booking['id']}/consent", {"csrf": token, "granted": "true"}),
    ]
    for path, form in forms:
        answer = await page.request.post(web.url + path, form=form, max_redirects=0)
        assert answer.status == 404, (path, answer.status)
    consent = await http.get(f"{url}/v1/admin/bookings/{their_booking['id']}/photo-consent", headers=headers)
    assert consent.json()["granted"] is False, consent.text


async def test_an_nps_survey_is_answered_once(
    web: WebProc, gateway: GatewayProc, phone: BrowserContext, make_org: Any, http: httpx.AsyncClient
) -> None:
    url = gateway.url
    org = await make_org("Sparkle NPS")
    headers = await owner(http, url, org)
    booking = await new_booking(http, url, headers, f"nps-{uuid.uuid4().hex[:8]}@example.com", -3)
    for action in ("confirm", "start"):
        await admin_act(http, url, headers, booking["id"], action)
    token = (await admin_act(http, url, headers, booking["id"], "complete"))["nps_token"]

    page = await phone.new_page()
    await page.goto(web.url + f"/portal/nps/{token}")
    await page.get_by_role("button", name="Send my answer").click()
    await expect(page.locator("#e-score")).to_have_text("Choose a number from 0 to 10.")
    await page.get_by_label("9", exact=True).check()
    await page.get_by_label("Anything you would like to tell us? (optional)").fill("Spotless kitchen.")
    await fits_the_phone(page)
    await screenshot(page, "client-nps")
    await page.get_by_role("button", name="Send my answer").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Thank you!")
    analytics = await http.get(f"{url}/v1/admin/analytics/nps", headers=headers)
    assert analytics.status_code == 200, analytics.text
    assert (analytics.json()["responses"], analytics.json()["promoters"]) == (1, 1), analytics.text

    await page.goto(web.url + f"/portal/nps/{token}")
    await page.get_by_label("3", exact=True).check()
    await page.get_by_role("button", name="Send my answer").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Already answered")
    await expect(page.get_by_role("alert")).to_contain_text("answered already")

    await page.goto(web.url + f"/portal/nps/nps.{org.org_id}.{'x' * 32}")
    await page.get_by_label("5", exact=True).check()
    await page.get_by_role("button", name="Send my answer").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Survey not found")
