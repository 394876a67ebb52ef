"""The web console's fixtures: the web process in front of the session's gateway, and Debian's
Chromium driven by Playwright (never a browser Playwright downloads: CHROMIUM names the binary).

The integrations pages get a console of their own (`integrations_console`): Google and QuickBooks
send the browser back to the OAuth redirect URI the integrations service was configured with, so that
service must know the web's address before it starts. It is its own integrations process (redirect
URI: this web's /admin/settings/integrations, against the session's fake Google and QuickBooks), a
gateway pointed at it, and a web in front of that gateway on the port the redirect URI names."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from conftest import Gateways, Stack, integrations_env
from tools.devstack import free_port
from tools.processes import GatewayProc, ServiceProc, WebProc, service_proc, web_proc

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


# The console's integrations page: where Google and QuickBooks send the browser back (seed 003's path).
INTEGRATIONS_PAGE = "/admin/settings/integrations"


@dataclass
class IntegrationsConsole:
    """A web console whose integrations connect for real: `web.url + INTEGRATIONS_PAGE` is the
    redirect URI its integrations service gives Google and QuickBooks (the session's fakes)."""

    web: WebProc
    gateway: GatewayProc
    service: ServiceProc
    google: Any  # tools.fake_google.FakeGoogle
    quickbooks: Any  # tools.fake_quickbooks.FakeQuickBooks


@pytest.fixture(scope="session")
def integrations_console(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    billing: ServiceProc,
    notify: ServiceProc,
    gateways: Gateways,
    fake_google: Any,
    fake_quickbooks: Any,
) -> Iterator[IntegrationsConsole]:
    logs = stack.work_dir / "logs"
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}{INTEGRATIONS_PAGE}"
    env = integrations_env(
        stack,
        iam,
        booking,
        billing,
        notify,
        fake_google.base_url,
        fake_quickbooks.base_url,
        redirect_uri=redirect_uri,
    )
    service = service_proc("integrations", env, logs, label="integrations-console").start().wait_ready()
    web_process: WebProc | None = None
    try:
        gateway = gateways.get(INTEGRATIONS_GRPC_TARGET=service.target)
        web_env = {**stack.env(), "WEB_GATEWAY_PUBLIC_URL": gateway.url}
        web_process = web_proc(web_env, logs, gateway.url, port=port, label="web-integrations")
        web_process.start().wait_ready()
        yield IntegrationsConsole(web_process, gateway, service, fake_google, fake_quickbooks)
    finally:
        if web_process is not None:
            web_process.stop()
        service.stop()


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
