"""Staff sign-in in a real browser: password, TOTP enrolment from the QR page, and sign-in with a code."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pyotp
from playwright.async_api import BrowserContext, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner
from web.tests.conftest import screenshot, sign_in_page


async def test_owner_enrols_totp_then_signs_in_with_a_code(
    web: WebProc, desk: BrowserContext, make_org
) -> None:
    org = await make_org("Sparkle Sign-in")
    page = await desk.new_page()
    await page.goto(web.url + "/console")
    await expect(page).to_have_url(web.url + "/console/sign-in?next=/console")
    await page.get_by_label("Email").fill(org.owner_email)
    await page.get_by_label("Password").fill("wrong-password-1")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await screenshot(page, "sign-in-refused")

    await page.get_by_label("Email").fill(org.owner_email)
    await page.get_by_label("Password").fill(org.owner_password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_be_visible()

    await page.goto(web.url + "/console/account")
    await page.get_by_label("Current password").fill(org.owner_password)
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.get_by_alt_text("QR code for your authenticator app")).to_be_visible()
    await screenshot(page, "totp-enrol")
    secret = (await page.get_by_test_id("totp-secret").inner_text()).strip()
    totp = pyotp.TOTP(secret)
    await page.get_by_label("Code from the app").fill(totp.at(time.time() - 30))  # the previous step
    await page.get_by_role("button", name="Turn on two-step sign-in").click()
    await expect(page.get_by_role("status")).to_contain_text("Two-step sign-in is on")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(web.url + "/console/sign-in")
    await page.get_by_label("Email").fill(org.owner_email)
    await page.get_by_label("Password").fill(org.owner_password)
    await page.get_by_role("button", name="Sign in").click()
    code_box = page.get_by_label("Authenticator code")
    await expect(code_box).to_be_visible()
    await code_box.fill("000000")
    await page.get_by_role("button", name="Verify and sign in").click()
    await expect(page.locator("#e-totp_code")).to_be_visible()  # the error beside its field
    await code_box.fill(totp.now())
    await page.get_by_role("button", name="Verify and sign in").click()
    await expect(page).to_have_url(web.url + "/console")
    await page.goto(web.url + "/console/account")
    await expect(page.get_by_text("On (this session was verified with a code)")).to_be_visible()


async def test_a_new_user_changes_the_temporary_password_first(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, make_org, http: httpx.AsyncClient
) -> None:
    org = await make_org("Sparkle First Sign-in")
    email = f"dispatcher-{uuid.uuid4().hex[:8]}@example.com"
    created = await http.post(
        f"{gateway.url}/v1/iam/users",
        headers=await owner(http, gateway.url, org),
        json={"email": email, "role": "DISPATCHER"},
    )
    assert created.status_code == 201, created.text
    temporary = created.json()["temp_password"]

    page = await desk.new_page()
    await page.goto(web.url + "/console/sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(temporary)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(web.url + "/console/password")
    await page.goto(web.url + "/console")  # nothing else opens until the password is changed
    await expect(page).to_have_url(web.url + "/console/password")

    await page.get_by_label("Current password").fill(temporary)
    await page.get_by_label("New password", exact=True).fill("short")
    await page.get_by_label("New password again").fill("short")
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator("#e-new_password")).to_contain_text("at least 12")  # the gateway's words

    await page.get_by_label("Current password").fill(temporary)
    await page.get_by_label("New password", exact=True).fill("Dispatcher-password-1")
    await page.get_by_label("New password again").fill("Dispatcher-password-2")
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator("#e-confirm_password")).to_contain_text("differ")

    await page.get_by_label("Current password").fill(temporary)
    await page.get_by_label("New password", exact=True).fill("Dispatcher-password-1")
    await page.get_by_label("New password again").fill("Dispatcher-password-1")
    await page.get_by_role("button", name="Change password").click()
    await expect(page).to_have_url(web.url + "/console")
    await expect(page.get_by_role("status")).to_contain_text("password is changed")


async def test_a_form_posted_from_another_site_is_refused(web: WebProc) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=15) as browserless:  # keeps the cookie
        page = await browserless.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert browserless.cookies.get("cws_web") and token
        form = {"csrf": token.group(1), "email": "a@example.com", "password": "x"}
        cross = await browserless.post(
            "/console/sign-in", data=form, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        assert "another site" in cross.text
        forged = await browserless.post(
            "/console/sign-in", data={**form, "csrf": "forged-token-forged-token"}
        )
        assert forged.status_code == 403
        same = await browserless.post(
            "/console/sign-in", data=form, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert same.status_code == 401  # reached the gateway: wrong email or password, shown on the form
        assert "script-src 'self'" in same.headers["Content-Security-Policy"]


async def test_signing_in_works_from_the_keyboard_alone(web: WebProc, desk: BrowserContext, make_org) -> None:
    """Labelled fields in order, focus on the first, Enter submits: no mouse needed."""
    org = await make_org("Sparkle Keyboard")
    page = await desk.new_page()
    await page.goto(web.url + "/console/sign-in")
    await expect(page.get_by_label("Email")).to_be_focused()  # autofocus
    await page.keyboard.type(org.owner_email)
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Password")).to_be_focused()
    await page.keyboard.type(org.owner_password)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(web.url + "/console")
    await page.keyboard.press("Tab")  # the first stop is the skip link, then the main navigation
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()


async def test_a_mistyped_password_or_code_at_enrolment_is_shown_and_keeps_the_session(
    web: WebProc, desk: BrowserContext, make_org
) -> None:
    """The gateway answers 401 to a wrong step-up password or TOTP code: that is the form's error, not a
    sign-out (the console signed people out on it before)."""
    org = await make_org("Sparkle Typos")
    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.goto(web.url + "/console/account")
    await page.get_by_label("Current password").fill("not-my-password-1")
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.get_by_role("alert")).to_contain_text("current password is wrong")
    await expect(page).to_have_url(web.url + "/console/account/totp")  # still signed in, on the form
    await page.get_by_label("Current password").fill(org.owner_password)
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await page.get_by_label("Code from the app").fill("000000")
    await page.get_by_role("button", name="Turn on two-step sign-in").click()
    await expect(page.locator("#e-code")).to_be_visible()
    await page.goto(web.url + "/console")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Today at a glance")
