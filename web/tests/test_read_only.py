"""Read-only incident mode in the console: the banner, a write refused, and break-glass letting an
owner make an urgent change (the gateway runs with ADMIN_READ_ONLY=true)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.async_api import BrowserContext, expect

from conftest import Gateways, Stack
from tools.processes import WebProc, web_proc
from web.tests.conftest import screenshot, sign_in_page


@pytest.fixture(scope="module")
def read_only_web(stack: Stack, gateways: Gateways) -> Iterator[WebProc]:
    gateway = gateways.get(ADMIN_READ_ONLY="true")
    proc = (
        web_proc(stack.env(), stack.work_dir / "logs", gateway.url, label="web-read-only")
        .start()
        .wait_ready()
    )
    yield proc
    proc.stop()


async def test_read_only_shows_a_banner_refuses_writes_and_break_glass_lets_an_owner_write(
    read_only_web: WebProc, desk: BrowserContext, make_org
) -> None:
    org = await make_org("Sparkle Incident")
    page = await desk.new_page()
    await sign_in_page(page, read_only_web.url, org.owner_email, org.owner_password)  # sign-in stays open
    banner = page.get_by_role("status").filter(has_text="Read-only mode")
    await expect(banner).to_be_visible()
    await screenshot(page, "read-only-banner")

    await page.goto(read_only_web.url + "/console/account")
    await page.get_by_label("Current password").fill(org.owner_password)
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.get_by_role("alert")).to_contain_text("read-only mode")  # the gateway's refusal

    await page.get_by_role("link", name="Start a break-glass session").click()
    await page.get_by_label("Reason").fill("INC-42: owner locked out of MFA")
    await page.get_by_label("Minutes").fill("15")
    await page.get_by_role("button", name="Start break-glass").click()
    await expect(
        page.get_by_role("status").filter(has_text="Break-glass is on for 15 minutes")
    ).to_be_visible()
    await expect(banner).to_contain_text("INC-42")
    await expect(page).to_have_url(
        read_only_web.url + "/console"
    )  # a refused post's page is no place to return to

    await page.goto(read_only_web.url + "/console/account")
    await page.get_by_label("Current password").fill(org.owner_password)
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.get_by_alt_text("QR code for your authenticator app")).to_be_visible()
