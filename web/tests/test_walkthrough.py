"""Issue 16's walk-through, in Chromium against the whole suite, as the people of one cleaning business
do it: the owner signs in with TOTP, turns a lead into a booking and assigns it from the suggestions;
the cleaner opens the link the console gave out on a phone, starts, uploads a photo and completes;
the client, signed in by the emailed link, gives photo consent; the dispatcher approves the photo;
finance issues the invoice billing drafted and records the payment; the client then sees the booking,
the photo and the paid invoice. Screenshots of each main page are saved (.run/screenshots/)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pyotp
from playwright.async_api import Browser, BrowserContext, Page, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import eventually, jpeg_bytes, owner, sql
from web.tests.conftest import PHONE, screenshot
from web.tests.test_client_portal import LINK, fits_the_phone, link_in_mail

DESK = {"viewport": {"width": 1280, "height": 860}}


async def _api(
    http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any = None
) -> Any:
    answer = await http.request(method, url, headers=headers, json=body)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


async def _owner_with_totp(http: httpx.AsyncClient, url: str, org: Any) -> tuple[pyotp.TOTP, dict[str, str]]:
    """The owner enrolled TOTP earlier (the console's own enrolment is test_sign_in's); the API session
    the enrolment kept, for the set-up done through the API."""
    headers = await owner(http, url, org)
    secret = (
        await _api(
            http, "POST", f"{url}/v1/auth/2fa/enroll", headers, {"current_password": org.owner_password}
        )
    )["secret"]
    totp = pyotp.TOTP(secret)
    body = {"code": totp.at(time.time() - 30), "current_password": org.owner_password}  # the previous step
    tokens = await _api(http, "POST", f"{url}/v1/auth/2fa/verify", headers, body)
    return totp, {"Authorization": f"Bearer {tokens['access_token']}"}


async def _staff_member(
    page: Page, web_url: str, http: httpx.AsyncClient, url: str, headers: dict[str, str], role: str
) -> None:
    """A user the owner added with a temporary password, signing in for the first time in the console."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    created = await _api(http, "POST", f"{url}/v1/iam/users", headers, {"email": email, "role": role})
    await page.goto(web_url + "/console/sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(created["temp_password"])
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Current password").fill(created["temp_password"])
    await page.get_by_label("New password", exact=True).fill(f"{role.title()}-password-42")
    await page.get_by_label("New password again").fill(f"{role.title()}-password-42")
    await page.get_by_role("button", name="Change password").click()
    await page.wait_for_url(web_url + "/console")


async def test_the_walk_through_from_a_lead_to_a_paid_invoice_the_client_sees(
    web: WebProc,
    gateway: GatewayProc,
    browser: Browser,
    make_org: Any,
    http: httpx.AsyncClient,
    smtp_sink: Any,
    stack: Any,
) -> None:
    url = gateway.url
    org = await make_org("Walkthrough Cleaning Co", time_zone="America/Edmonton")
    totp, owner_api = await _owner_with_totp(http, url, org)
    client_email = f"robin-{uuid.uuid4().hex[:8]}@example.com"
    contexts: list[BrowserContext] = []

    async def context(**options: Any) -> BrowserContext:
        made = await browser.new_context(**options)
        contexts.append(made)
        return made

    try:
        # 1. The owner signs in with a TOTP code.
        desk = await (await context(**DESK)).new_page()
        await desk.goto(web.url + "/console")
        await desk.get_by_label("Email").fill(org.owner_email)
        await desk.get_by_label("Password").fill(org.owner_password)
        await desk.get_by_role("button", name="Sign in").click()
        await desk.get_by_label("Authenticator code").fill(totp.now())
        await desk.get_by_role("button", name="Verify and sign in").click()
        await desk.wait_for_url(web.url + "/console")
        await expect(desk.get_by_role("heading", level=1)).to_have_text("Today at a glance")

        # The owner sets up a team with a cleaner in the console.
        await desk.get_by_role("navigation", name="Main").get_by_role("link", name="Teams").click()
        await desk.get_by_label("Team name").fill("North crew")
        await desk.get_by_role("button", name="Create team").click()
        await expect(desk.get_by_role("status")).to_be_visible()
        await desk.get_by_label("Worker name").fill("Wren Cleaner")
        await desk.get_by_label("Worker email").fill(f"wren-{uuid.uuid4().hex[:6]}@example.com")
        await (
            desk.locator("form", has=desk.get_by_role("button", name="Add worker"))
            .get_by_label("Team", exact=True)
            .select_option(label="North crew")
        )
        await desk.get_by_role("button", name="Add worker").click()
        await expect(desk.get_by_role("status")).to_be_visible()
        await screenshot(desk, "teams")

        # A lead arrives from the website's estimate form.
        lead = await _api(
            http,
            "POST",
            f"{url}/v1/leads",
            {"X-Test-Org": org.org_id},
            {
                "name": "Robin Client",
                "phone": "780-555-0142",
                "email": client_email,
                "postal_code": "T5J0N3",
                "structured_inputs": {"beds": 3, "baths": 2, "cleaning_type": "deep"},
                "notes": "Dog in the yard",
            },
        )

        # 2. The owner turns the lead into a booking.
        await desk.get_by_role("navigation", name="Main").get_by_role("link", name="Leads").click()
        await screenshot(desk, "leads-inbox")
        await desk.get_by_role("link", name="Robin Client").click()
        await desk.get_by_role("link", name="Create booking").click()
        await expect(desk.get_by_label("Client email")).to_have_value(client_email)
        await screenshot(desk, "booking-new")
        await desk.get_by_role("button", name="Create booking").click()
        await expect(desk.get_by_role("status")).to_contain_text("Booking created")
        booking_id = desk.url.rsplit("/", 1)[-1]
        assert lead

        # 3. ... assigns it with the suggestions, and confirms it.
        await desk.get_by_role("button", name="Assign team North crew").click()
        await expect(desk.get_by_role("status")).to_be_visible()
        await desk.get_by_role("button", name="Assign worker Wren Cleaner").click()
        await expect(desk.get_by_role("status")).to_be_visible()
        await desk.get_by_role("button", name="Confirm", exact=True).click()
        await expect(desk.locator(".badge").filter(has_text="confirmed").first).to_be_visible()
        await expect(desk.get_by_test_id("booking-team")).to_have_text("North crew")
        await screenshot(desk, "booking-detail")
        await desk.get_by_role("link", name="← Board").click()  # the booking's day
        await expect(desk.locator(".slot").filter(has_text="Robin Client")).to_be_visible()
        await screenshot(desk, "bookings-board")

        # 4. The cleaner gets a portal link from the console ...
        await desk.get_by_role("navigation", name="Main").get_by_role("link", name="Teams").click()
        await desk.get_by_role("button", name="Portal link for Wren Cleaner").click()
        link = await desk.get_by_test_id("portal-link").input_value()
        assert "/portal/worker/login/callback?token=" in link, link

        # ... opens it on a phone, starts the job, uploads a photo and completes it.
        worker = await (await context(**PHONE)).new_page()
        await worker.goto(link)
        await worker.get_by_role("button", name="Sign in").click()
        await worker.wait_for_url(web.url + "/portal/worker/")
        await screenshot(worker, "worker-jobs")
        await worker.get_by_role("listitem").filter(has_text="Robin Client").get_by_role("link").click()
        await worker.get_by_role("button", name="Start job").click()
        await expect(worker.get_by_role("status")).to_have_text("Job started.")
        await worker.get_by_label("Take or choose a photo").set_input_files(
            files=[{"name": "kitchen.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes()}]
        )
        await worker.get_by_role("button", name="Upload photo").click()
        await expect(worker.get_by_role("status")).to_have_text("Photo uploaded. Thank you!")
        await worker.get_by_role("button", name="Complete job").click()
        await expect(worker.get_by_role("status")).to_be_visible()
        await screenshot(worker, "worker-job")
        await fits_the_phone(worker)

        # 5. The client asks for a sign-in link on the org's portal page, opens it from the email,
        # and gives photo consent for the booking.
        client = await (await context(**PHONE)).new_page()
        key = (
            await sql(
                stack.admin_url,
                "SELECT public_key FROM booking.org_profiles WHERE org_id = %s",
                (org.org_id,),
            )
        )[0][0]
        seen = frozenset(m for mail in smtp_sink.to(client_email) for m in LINK.findall(mail.text))
        await client.goto(web.url + f"/portal/client/sign-in?org={key}")
        await client.get_by_label("Email").fill(client_email)
        await client.get_by_role("button", name="Email me a sign-in link").click()
        emailed = await link_in_mail(smtp_sink, client_email, seen)
        await client.goto(web.url + "/portal" + emailed)
        await client.get_by_role("button", name="Sign in").click()
        await client.wait_for_url(web.url + "/portal/client/")
        await client.goto(web.url + f"/portal/client/bookings/{booking_id}")
        await client.get_by_role("button", name="Give my consent").click()
        await expect(client.get_by_role("button", name="Withdraw my consent")).to_be_visible()

        # 6. The dispatcher approves the photo, shown through its signed link.
        dispatcher = await (await context(**DESK)).new_page()
        await _staff_member(dispatcher, web.url, http, url, owner_api, "DISPATCHER")
        await dispatcher.get_by_role("navigation", name="Main").get_by_role("link", name="Photos").click()
        image = dispatcher.locator("figure img").first
        await expect(image).to_be_visible()
        assert await image.evaluate("i => i.complete && i.naturalWidth") > 0
        await screenshot(dispatcher, "photo-review")
        await dispatcher.get_by_role("button", name="Approve").first.click()
        await expect(dispatcher.get_by_role("status")).to_have_text("Photo approved.")

        # 7. Finance issues the invoice billing drafted for the completed booking and records payment.
        finance = await (await context(**DESK)).new_page()
        await _staff_member(finance, web.url, http, url, owner_api, "FINANCE")

        async def drafted() -> bool:
            await finance.goto(web.url + "/console/invoices")
            return await finance.get_by_role("row").filter(has_text="Robin Client").count() == 1

        await eventually(drafted, timeout=20, message="the booking's draft invoice")
        await screenshot(finance, "invoices-list")
        await finance.get_by_role("row").filter(has_text="Robin Client").get_by_role("link").first.click()
        await finance.get_by_role("button", name="Issue invoice").click()
        await expect(finance.get_by_test_id("invoice-status")).to_have_text("SENT")
        owed = await finance.get_by_test_id("invoice-outstanding").inner_text()
        await finance.get_by_label("Amount (CAD)").fill(owed.split()[0].replace(",", ""))
        await finance.get_by_label("Method").select_option("etransfer")
        await finance.get_by_label("Reference").fill("e-transfer 7781")
        await finance.get_by_role("button", name="Record payment").click()
        await expect(finance.get_by_test_id("invoice-status")).to_have_text("PAID")
        await screenshot(finance, "invoice-detail")

        # 8. The client sees the booking, the photo and the paid invoice.
        await client.goto(web.url + "/portal/client/")
        await expect(client.get_by_role("heading", name="Past cleanings")).to_be_visible()
        await screenshot(client, "client-home")
        await client.goto(web.url + f"/portal/client/bookings/{booking_id}")
        photo = client.locator("img").first
        await expect(photo).to_be_visible()
        assert await photo.evaluate("i => i.complete && i.naturalWidth") > 0
        await screenshot(client, "client-booking")
        await client.goto(web.url + "/portal/client/invoices")
        await expect(client.get_by_text("PAID", exact=False).first).to_be_visible()
        await screenshot(client, "client-invoice")
        await fits_the_phone(client)
    finally:
        for made in contexts:
            await made.close()
