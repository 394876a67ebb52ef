"""Invoices in the console, in a real browser against the real suite: a completed booking's draft
invoice is issued, a payment beyond the balance is refused beside its field, the right one makes it
paid, the PDF downloads, reconcile agrees; another org's invoice is the web's 404 page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.async_api import BrowserContext, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import eventually, owner
from web.tests.conftest import screenshot, sign_in_page


async def completed_booking_invoice(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> dict[str, Any]:
    """A booking taken through to completed, and the draft invoice billing makes of it."""
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": (datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)).isoformat(),
            "duration_minutes": 90,
            "client_name": "Robin Client",
            "client_email": f"robin-{uuid.uuid4().hex[:8]}@example.com",
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )
    assert created.status_code == 201, created.text
    booking = created.json()
    for step in ("confirm", "start", "complete"):
        done = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/{step}", headers=headers)
        assert done.status_code == 200, done.text

    async def drafted() -> list[dict[str, Any]]:
        found = await http.get(f"{url}/v1/admin/invoices", headers=headers, params={"status": "DRAFT"})
        return [i for i in found.json()["items"] if i["booking_id"] == booking["id"]]

    [invoice] = await eventually(drafted, timeout=20)
    return invoice


async def test_a_completed_booking_is_invoiced_paid_and_downloaded(
    web: WebProc, gateway: GatewayProc, http: httpx.AsyncClient, desk: BrowserContext, make_org
) -> None:
    org = await make_org("Sparkle Invoices")
    headers = await owner(http, gateway.url, org)
    draft = await completed_booking_invoice(http, gateway.url, headers)
    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)

    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Invoices").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Invoices")
    row = page.get_by_role("row").filter(has_text="Robin Client")
    await expect(row).to_contain_text("DRAFT")
    await page.get_by_label("Status").select_option("DRAFT")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(web.url + "/console/invoices?status=DRAFT")
    await expect(row).to_be_visible()
    await screenshot(page, "invoices-list")

    await row.get_by_role("link", name="Draft").click()
    await expect(page).to_have_url(f"{web.url}/console/invoices/{draft['id']}")
    await page.get_by_role("button", name="Issue invoice").click()
    await expect(page.get_by_role("status")).to_contain_text("Issued")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("INV-000001")
    await expect(page.get_by_test_id("invoice-status")).to_have_text("SENT")
    # Issued and owed: the unpaid queue counts and lists it.
    await page.goto(web.url + "/console/invoices?queue=unpaid")
    await expect(page.get_by_role("link", name="Unpaid")).to_contain_text("1")
    await page.get_by_role("link", name="INV-000001").click()

    # More than is owed: billing refuses it, and the page says so beside the amount.
    total = draft["total_cents"]
    await page.get_by_label("Amount (CAD)").fill(f"{(total + 100) / 100:.2f}")
    await page.get_by_label("Method").select_option("cheque")
    await page.get_by_label("Reference").fill("cheque 0042")
    await page.get_by_role("button", name="Record payment").click()
    await expect(page.locator("#e-amount")).to_contain_text("outstanding balance")
    await expect(page.get_by_label("Reference")).to_have_value("cheque 0042")  # what was typed stays
    await page.get_by_label("Amount (CAD)").fill(f"{total / 100:.2f}")
    await page.get_by_role("button", name="Record payment").click()
    await expect(page.get_by_role("status")).to_contain_text("Payment recorded")
    await expect(page.get_by_test_id("invoice-status")).to_have_text("PAID")
    await expect(page.get_by_test_id("invoice-outstanding")).to_have_text("0.00 CAD")
    await expect(page.get_by_role("cell", name="cheque 0042")).to_be_visible()
    await screenshot(page, "invoice-detail")

    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download PDF").click()
    download = await info.value
    assert download.suggested_filename.endswith(".pdf")
    path = await download.path()
    assert path.read_bytes().startswith(b"%PDF")

    await page.get_by_role("button", name="Reconcile").click()
    await expect(page.get_by_role("status")).to_contain_text("already agrees")
    await page.goto(web.url + "/console/invoices/reconcile")
    await expect(page.get_by_text("Every invoice's status agrees with its payments.")).to_be_visible()
    await page.goto(web.url + "/console/invoices")
    await expect(page.get_by_role("link", name="INV-000001")).to_be_visible()


async def test_a_draft_made_by_hand_and_voided(web: WebProc, desk: BrowserContext, make_org) -> None:
    org = await make_org("Sparkle By Hand")
    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.goto(web.url + "/console/invoices/new")
    await page.get_by_label("Client name").fill("Walk-in Client")
    await page.get_by_label("Client email").fill("not-an-email")
    await page.get_by_label("Description").fill("Window cleaning")
    await page.get_by_label("Unit price").fill("80")
    await page.get_by_role("button", name="Create draft invoice").click()
    await expect(page.locator("#e-client_email")).to_be_visible()
    await page.get_by_label("Client email").fill(f"walkin-{uuid.uuid4().hex[:6]}@example.com")
    await page.get_by_role("button", name="Create draft invoice").click()
    await expect(page.get_by_role("status")).to_contain_text("Draft invoice created")
    await expect(page.get_by_role("cell", name="Window cleaning")).to_be_visible()
    await page.get_by_role("checkbox", name="Yes, cancel this invoice").check()
    await page.get_by_role("button", name="Void invoice").click()
    await expect(page.get_by_test_id("invoice-status")).to_have_text("VOID")
    await expect(page.get_by_role("link", name="Download PDF")).to_have_count(0)


async def test_another_orgs_invoice_is_not_found(
    web: WebProc, gateway: GatewayProc, http: httpx.AsyncClient, desk: BrowserContext, make_org
) -> None:
    theirs = await make_org("Sparkle Theirs")
    created = await http.post(
        f"{gateway.url}/v1/admin/invoices",
        headers=await owner(http, gateway.url, theirs),
        json={
            "client_name": "Their Client",
            "client_email": "their-client@example.com",
            "items": [{"description": "Clean", "quantity": "1", "unit_price_cents": 5000, "tax_rate": "13"}],
        },
    )
    assert created.status_code == 201, created.text
    invoice_id = created.json()["id"]

    ours = await make_org("Sparkle Ours")
    page = await desk.new_page()
    await sign_in_page(page, web.url, ours.owner_email, ours.owner_password)
    for path in (f"/console/invoices/{invoice_id}", f"/console/invoices/{invoice_id}/pdf"):
        answer = await page.goto(web.url + path)
        assert answer is not None and answer.status == 404, path
        await expect(page.get_by_role("alert")).to_be_visible()
        await expect(page.get_by_text("Their Client")).to_have_count(0)
    # A write to it is refused the same way (the form posted from our own invoices page).
    await page.goto(web.url + "/console/invoices")
    answer = await page.request.post(
        f"{web.url}/console/invoices/{invoice_id}/issue",
        form={"csrf": await page.locator("input[name=csrf]").first.input_value()},
        headers={"Origin": web.url},
    )
    assert answer.status == 404
    mine = await http.get(
        f"{gateway.url}/v1/admin/invoices/{invoice_id}", headers=await owner(http, gateway.url, theirs)
    )
    assert mine.json()["status"] == "DRAFT", "untouched"
