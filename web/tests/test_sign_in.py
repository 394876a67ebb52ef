"""Staff sign-in in a real browser: password, TOTP enrolment from the QR page, and sign-in with a code."""

from __future__ import annotations

import time

import pyotp
from playwright.async_api import BrowserContext, expect

from tools.processes import WebProc
from web.tests.conftest import screenshot


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
