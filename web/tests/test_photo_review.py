"""Photo review in the console, in a real browser against the real suite (media on local storage): a
photo of a booking with consent renders through its signed link (loaded from the gateway by the
browser), one without consent says why instead; approve takes a photo off the queue, a retake needs a
note (refused beside the field without one); another org's photo is the web's 404 page."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from PIL import Image
from playwright.async_api import BrowserContext, Page, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner
from web.tests.conftest import screenshot, sign_in_page


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(out, "JPEG", quality=85)
    return out.getvalue()


async def booking(http: httpx.AsyncClient, url: str, headers: dict[str, str], consent: bool) -> str:
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": (datetime.now(UTC).replace(microsecond=0) + timedelta(hours=48)).isoformat(),
            "duration_minutes": 120,
            "client_name": "Photo Client",
            "client_email": f"photo-{uuid.uuid4().hex[:8]}@example.com",
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )
    assert created.status_code == 201, created.text
    booking_id = str(created.json()["id"])
    if consent:  # recorded by staff, as a dispatcher does when the client agrees on the phone
        given = await http.put(
            f"{url}/v1/admin/bookings/{booking_id}/photo-consent", headers=headers, json={"granted": True}
        )
        assert given.status_code == 200, given.text
    return booking_id


async def photo(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str, color: tuple[int, int, int]
) -> dict[str, Any]:
    sent = await http.post(
        f"{url}/v1/admin/bookings/{booking_id}/photos",
        headers=headers,
        files={"file": ("job.jpg", jpeg(color), "image/jpeg")},
    )
    assert sent.status_code == 201, sent.text
    return dict(sent.json())


def figure(page: Page, shown: dict[str, Any]) -> Any:
    return page.get_by_role("figure", name=f"Photo {shown['photo_id'][:8]}")


async def rendered_width(page: Page, shown: dict[str, Any]) -> int:
    img = figure(page, shown).get_by_role("img")
    await expect(img).to_be_visible()
    # Loaded from the gateway through the rewritten signed link: a decoded image has a width.
    await img.evaluate("i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })")
    return int(await img.evaluate("i => i.naturalWidth"))


async def test_review_shows_consented_photos_and_approves_and_asks_for_retakes(
    web: WebProc, gateway: GatewayProc, http: httpx.AsyncClient, desk: BrowserContext, make_org
) -> None:
    org = await make_org("Sparkle Photos")
    headers = await owner(http, gateway.url, org)
    consented = await booking(http, gateway.url, headers, consent=True)
    private = await booking(http, gateway.url, headers, consent=False)
    kitchen = await photo(http, gateway.url, headers, consented, (30, 140, 200))
    bathroom = await photo(http, gateway.url, headers, consented, (220, 180, 40))
    hidden = await photo(http, gateway.url, headers, private, (90, 90, 90))

    page = await desk.new_page()
    await sign_in_page(page, web.url, org.owner_email, org.owner_password)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Photos").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Photo review")
    assert await rendered_width(page, kitchen) == 320
    assert await rendered_width(page, bathroom) == 320
    src = await figure(page, kitchen).get_by_role("img").get_attribute("src")
    assert src and src.startswith(gateway.url + "/v1/public/photos/"), src
    await expect(figure(page, hidden).get_by_role("img")).to_have_count(0)
    await expect(figure(page, hidden)).to_contain_text("has not given photo consent")
    await screenshot(page, "photo-review")

    await figure(page, kitchen).get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_contain_text("Photo approved")
    await expect(figure(page, kitchen)).to_have_count(0)

    # A retake without a note is refused beside the field, on the photo's own page.
    await figure(page, bathroom).get_by_role("link", name=f"Photo {bathroom['photo_id'][:8]}").click()
    await expect(page).to_have_url(f"{web.url}/console/photos/{bathroom['photo_id']}")
    assert await page.locator("main img").evaluate("i => i.complete && i.naturalWidth") == 320
    await page.get_by_role("button", name="Ask for a retake").click()
    await expect(page.locator("#e-note")).to_be_visible()
    await screenshot(page, "photo-detail")
    await page.get_by_label("What to retake, and why").fill("Blurry: please retake the tiles in daylight")
    await page.get_by_role("button", name="Ask for a retake").click()
    await expect(page.get_by_role("status")).to_contain_text("Retake requested")
    await expect(figure(page, bathroom)).to_contain_text("needs retake")
    await expect(figure(page, bathroom)).to_contain_text("Blurry: please retake the tiles in daylight")

    await page.get_by_label("Show").select_option("needs_retake")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("figure")).to_have_count(1)
    shown = await http.get(f"{gateway.url}/v1/admin/photos/{kitchen['photo_id']}", headers=headers)
    assert shown.json()["status"] == "approved"


async def test_another_orgs_photo_is_not_found(
    web: WebProc, gateway: GatewayProc, http: httpx.AsyncClient, desk: BrowserContext, make_org
) -> None:
    theirs = await make_org("Sparkle Their Photos")
    their_headers = await owner(http, gateway.url, theirs)
    their_photo = await photo(
        http, gateway.url, their_headers, await booking(http, gateway.url, their_headers, True), (1, 2, 3)
    )
    ours = await make_org("Sparkle Our Photos")
    page = await desk.new_page()
    await sign_in_page(page, web.url, ours.owner_email, ours.owner_password)
    for photo_id in (their_photo["photo_id"], "not-a-photo-id"):
        answer = await page.goto(f"{web.url}/console/photos/{photo_id}")
        assert answer is not None and answer.status == 404, photo_id
    await expect(page.get_by_role("alert")).to_be_visible()
    await page.goto(web.url + "/console/photos")
    await expect(page.get_by_text("Nothing to review.")).to_be_visible()
    csrf = await page.locator("input[name=csrf]").first.input_value()
    for action in ("approve", "retake"):
        refused = await page.request.post(
            f"{web.url}/console/photos/{their_photo['photo_id']}/{action}",
            form={"csrf": csrf, "note": "mine now"},
            headers={"Origin": web.url},
        )
        assert refused.status == 404, action
    after = await http.get(f"{gateway.url}/v1/admin/photos/{their_photo['photo_id']}", headers=their_headers)
    assert after.json()["status"] == "pending", "untouched"
