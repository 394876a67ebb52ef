"""The web console's fixtures: the web process in front of the session's gateway, and Debian's
Chromium driven by Playwright (never a browser Playwright downloads: CHROMIUM names the binary)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from conftest import Stack
from tools.processes import GatewayProc, WebProc, web_proc

ROOT = Path(__file__).resolve().parents[2]
# Saved by every browser test run for a reviewer to look at (README links the ones in docs/images/).
SCREENSHOTS = ROOT / ".run" / "screenshots"
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError(
            "the browser tests need Debian's Chromium: apt-get install chromium (or CHROMIUM=/path/to/chrome); "
            ".ci/run installs it"
        )
    return found


@pytest.fixture(scope="session")
def web(stack: Stack, gateway: GatewayProc) -> Iterator[WebProc]:
    # The browser loads signed photo links from the gateway itself (no proxy in front in tests).
    env = {**stack.env(), "WEB_GATEWAY_PUBLIC_URL": gateway.url}
    proc = web_proc(env, stack.work_dir / "logs", gateway.url).start().wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def desk(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A desktop browser of its own (cookies and all) for one person in a test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    yield context
    await context.close()


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A phone-sized browser of its own, for the worker and client pages."""
    context = await browser.new_context(**PHONE)
    yield context
    await context.close()


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in_page(page: Page, web_url: str, email: str, password: str) -> None:
    """Signs a staff user in through the console's own form (no TOTP) and waits for the console."""
    await page.goto(web_url + "/console/sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(web_url + "/console")
