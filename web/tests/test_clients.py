"""The clients list (issue 16) in a real browser against the real suite: an org's bookings grouped by
client email, searched and paged; another org's clients never show."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from playwright.async_api import BrowserContext, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner
from web.tests.conftest import screenshot, sign_in_page
from web.tests.test_client_portal import new_booking

PER_PAGE = 25  # web/routes/clients.py


async def test_clients_listed_searched_paged_and_never_another_orgs(
    web: WebProc, gateway: GatewayProc, desk: BrowserContext, http: httpx.AsyncClient, make_org
) -> None:
    a, b = await make_org("Sparkle Clients"), await make_org("Other Clients")
    headers_a, headers_b = await owner(http, gateway.url, a), await owner(http, gateway.url, b)
    tag = uuid.uuid4().hex[:6]
    dana = f"dana.{tag}@example.com"
    await new_booking(http, gateway.url, headers_a, dana, 24, client_name="Dana Early")
    await new_booking(
        http, gateway.url, headers_a, dana, 24 * 30, client_name="Dana Doe", client_phone="780-555-0142"
    )
    # 25 more clients, each with one booking before Dana's last: Dana heads the first page.
    for n in range(PER_PAGE):
        await new_booking(
            http, gateway.url, headers_a, f"c{n:02d}.{tag}@example.com", 48 + n, client_name=f"Client {n:02d}"
        )
    secret = f"secret.{tag}@example.com"
    await new_booking(http, gateway.url, headers_b, secret, 24, client_name="Secret B")

    page = await desk.new_page()
    await sign_in_page(page, web.url, a.owner_email, a.owner_password)
    await page.goto(f"{web.url}/console/clients")
    await expect(page.get_by_role("heading", name="Clients")).to_be_visible()
    await expect(page.get_by_text("26 clients")).to_be_visible()
    rows = page.get_by_role("row")
    await expect(rows).to_have_count(PER_PAGE + 1)  # the header row and one page
    first = rows.nth(1)
    await expect(first).to_contain_text("Dana Doe")  # the latest booking's name and phone
    await expect(first).to_contain_text("+17805550142")
    await expect(first.get_by_role("link", name=dana)).to_have_attribute("href", f"mailto:{dana}")
    cells = first.get_by_role("cell")
    await expect(cells.nth(3)).to_have_text("2")  # bookings
    last_day = (datetime.now(UTC) + timedelta(days=30)).strftime("%d %b %Y")
    await expect(cells.nth(4)).to_contain_text(last_day)
    await expect(cells.nth(5)).to_have_text("2")  # both upcoming
    await expect(page.get_by_text("Secret B")).to_have_count(0)
    await screenshot(page, "clients")

    await page.get_by_role("link", name="More clients").click()
    await expect(page.get_by_role("row")).to_have_count(2)
    await expect(page.get_by_role("row").nth(1)).to_contain_text("Client 00")  # the earliest last booking
    await page.get_by_role("link", name="Previous clients").click()
    await expect(page.get_by_role("row").nth(1)).to_contain_text("Dana Doe")

    search = page.get_by_role("search", name="Search clients")
    await search.get_by_label("Name or email").fill("DANA")
    await search.get_by_role("button", name="Search").click()
    await expect(page.get_by_text("1 client matching")).to_be_visible()
    await expect(page.get_by_role("row")).to_have_count(2)
    await expect(page.get_by_label("Name or email")).to_have_value("DANA")
    await search.get_by_label("Name or email").fill("secret")
    await search.get_by_role("button", name="Search").click()
    await expect(page.get_by_text("No client matches")).to_be_visible()
    await page.goto(
        f"{web.url}/console/clients?q=%25&offset=-5"
    )  # a wildcard is a character; bad offset starts over
    await expect(page.get_by_text("No client matches")).to_be_visible()

    other = await desk.new_page()
    await other.context.clear_cookies()
    await sign_in_page(other, web.url, b.owner_email, b.owner_password)
    await other.goto(f"{web.url}/console/clients?q={tag}")
    await expect(other.get_by_role("row")).to_have_count(2)
    await expect(other.get_by_role("row").nth(1)).to_contain_text("Secret B")
    await expect(other.get_by_text("Dana")).to_have_count(0)
