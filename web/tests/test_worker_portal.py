"""The worker portal on a phone, against the real suite: a worker opens the link a dispatcher minted,
signs in, starts their job, uploads a photo taken with the camera (a real JPEG; a file that is no
photo and one too large are refused with a clear message), completes the job, and signs out; another worker's job is
the web's 404; no page scrolls sideways at 390 px."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
from PIL import Image
from playwright.async_api import BrowserContext, Page, expect

from tools.processes import GatewayProc, WebProc
from tools.testkit import owner
from web.tests.conftest import screenshot
from web.tests.test_client_portal import admin_act, fits_the_phone, new_booking


def phone_photo() -> bytes:
    """A real JPEG, as a phone's camera would hand the browser (smaller)."""
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(out, "JPEG", quality=80)
    return out.getvalue()


async def new_worker(http: httpx.AsyncClient, url: str, headers: dict[str, str], name: str) -> str:
    created = await http.post(f"{url}/v1/admin/workers", headers=headers, json={"name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def assigned_job(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], worker_id: str, hours_from_now: float
) -> dict[str, Any]:
    """A confirmed booking with the worker on it."""
    job = await new_booking(http, url, headers, f"home-{uuid.uuid4().hex[:8]}@example.com", hours_from_now)
    await admin_act(http, url, headers, job["id"], "confirm")
    assigned = await http.post(
        f"{url}/v1/admin/bookings/{job['id']}/assign", headers=headers, json={"worker_ids": [worker_id]}
    )
    assert assigned.status_code == 200, assigned.text
    return job


async def minted_link(http: httpx.AsyncClient, url: str, headers: dict[str, str], worker_id: str) -> str:
    """The dispatcher's link (`/worker/login/callback?token=…`), which the console hands out under /portal."""
    issued = await http.post(f"{url}/v1/admin/workers/{worker_id}/portal-link", headers=headers)
    assert issued.status_code == 200, issued.text
    link = str(issued.json()["link"])
    assert link.startswith("/worker/login/callback?token="), link
    return link


async def worker_signs_in(page: Page, web_url: str, link: str) -> None:
    await page.goto(web_url + "/portal" + link)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to your jobs")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(web_url + "/portal/worker/")


async def test_a_worker_starts_photographs_and_completes_their_job_on_a_phone(
    web: WebProc, gateway: GatewayProc, phone: BrowserContext, make_org: Any, http: httpx.AsyncClient
) -> None:
    url = gateway.url
    org = await make_org("Sparkle Crew")
    headers = await owner(http, url, org)
    wren = await new_worker(http, url, headers, "Wren")
    job = await assigned_job(http, url, headers, wren, 2)
    later = await assigned_job(http, url, headers, wren, 50)

    page = await phone.new_page()
    await page.goto(web.url + "/portal/worker/")
    await expect(page.get_by_text("Open the sign-in link your dispatcher sent you")).to_be_visible()
    link = await minted_link(http, url, headers, wren)
    await worker_signs_in(page, web.url, link)
    await expect(page.get_by_role("heading", name="Today")).to_be_visible()
    cards = page.get_by_role("listitem")
    await expect(cards).to_have_count(2)
    await fits_the_phone(page)
    await screenshot(page, "worker-jobs")

    await page.locator(f"a[href='/portal/worker/jobs/{job['id']}']").click()
    await page.wait_for_url(web.url + f"/portal/worker/jobs/{job['id']}")
    await expect(page.get_by_role("button", name="Complete job")).to_have_count(0)
    await page.get_by_role("button", name="Start job").click()
    await expect(page.get_by_role("status")).to_have_text("Job started.")
    await expect(page.locator("dd .badge")).to_have_text("in progress")

    # A file that is no photo: the gateway's 415, said plainly, nothing stored.
    file_input = page.get_by_label("Take or choose a photo")
    assert await file_input.get_attribute("capture") == "environment"
    await file_input.set_input_files(
        {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"<html>not a photo</html>" * 20}
    )
    await page.get_by_role("button", name="Upload photo").click()
    await expect(page.get_by_role("alert")).to_contain_text("not a photo we accept")
    await expect(page.get_by_text("No photos uploaded yet.")).to_be_visible()
    # Past the gateway's ORDER_PHOTO_MAX_BYTES (10 MiB in tests): its 413, said plainly.
    await page.get_by_label("Take or choose a photo").set_input_files(
        {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * (11 * 1024 * 1024)}
    )
    await page.get_by_role("button", name="Upload photo").click()
    await expect(page.get_by_role("alert")).to_contain_text("That photo is too large")

    await page.get_by_label("Take or choose a photo").set_input_files(
        {"name": "kitchen.jpg", "mimeType": "image/jpeg", "buffer": phone_photo()}
    )
    await page.get_by_role("button", name="Upload photo").click()
    await expect(page.get_by_role("status")).to_have_text("Photo uploaded. Thank you!")
    await expect(page.get_by_text("640\u00d7480")).to_be_visible()
    office = await http.get(f"{url}/v1/admin/bookings/{job['id']}/photos", headers=headers)
    [stored] = office.json()["items"]
    assert (stored["uploader_role"], stored["uploaded_by"], stored["width"]) == ("WORKER", wren, 640), stored
    await fits_the_phone(page)
    await screenshot(page, "worker-job")

    await page.get_by_role("button", name="Complete job").click()
    await expect(page.get_by_role("status")).to_have_text("Job completed. Thank you!")
    await expect(page.locator("dd .badge")).to_have_text("completed")
    done = await http.get(f"{url}/v1/admin/bookings/{job['id']}", headers=headers)
    assert done.json()["status"] == "completed", done.text
    # The later job is untouched and still listed.
    await page.get_by_role("link", name="My jobs", exact=True).click()
    await expect(page.locator(f"a[href='/portal/worker/jobs/{later['id']}']")).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(web.url + "/portal/worker/")
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    await page.goto(web.url + f"/portal/worker/jobs/{job['id']}")
    await expect(page).to_have_url(web.url + "/portal/worker/")
    # The link signed in once; pressed again it says so and opens nothing.
    await page.goto(web.url + "/portal" + link)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("expired or was used already")
    await page.goto(web.url + "/portal/worker/")
    await expect(page.get_by_text("Open the sign-in link your dispatcher sent you")).to_be_visible()


async def test_another_workers_job_is_the_webs_404(
    web: WebProc, gateway: GatewayProc, phone: BrowserContext, make_org: Any, http: httpx.AsyncClient
) -> None:
    url = gateway.url
    org, other_org = await make_org("Crew A"), await make_org("Crew B")
    headers, other_headers = await owner(http, url, org), await owner(http, url, other_org)
    wren, robin = await new_worker(http, url, headers, "Wren"), await new_worker(http, url, headers, "Robin")
    mine = await assigned_job(http, url, headers, wren, 20)
    robins = await assigned_job(http, url, headers, robin, 22)
    unassigned = await new_booking(http, url, headers, f"x-{uuid.uuid4().hex[:6]}@example.com", 24)
    elsewhere = await assigned_job(
        http, url, other_headers, await new_worker(http, url, other_headers, "Finch"), 26
    )

    page = await phone.new_page()
    await worker_signs_in(page, web.url, await minted_link(http, url, headers, wren))
    response = await page.goto(web.url + f"/portal/worker/jobs/{mine['id']}")
    assert response is not None and response.status == 200
    token = await page.locator("input[name=csrf]").first.get_attribute("value")
    for job_id in (robins["id"], unassigned["id"], elsewhere["id"], str(uuid.uuid4()), "not-an-id"):
        response = await page.goto(web.url + f"/portal/worker/jobs/{job_id}")
        assert response is not None and response.status == 404, job_id
        await expect(page.get_by_role("alert")).to_have_text("There is no such page.")
        for action in ("start", "complete"):
            answer = await page.request.post(
                web.url + f"/portal/worker/jobs/{job_id}/{action}",
                form={"csrf": token or ""},
                max_redirects=0,
            )
            assert answer.status == 404, (job_id, action, answer.status)
        answer = await page.request.post(
            web.url + f"/portal/worker/jobs/{job_id}/photos",
            multipart={
                "csrf": token or "",
                "file": {"name": "x.jpg", "mimeType": "image/jpeg", "buffer": phone_photo()},
            },
            max_redirects=0,
        )
        assert answer.status == 404, (job_id, "photos", answer.status)
    robin_job = await http.get(f"{url}/v1/admin/bookings/{robins['id']}", headers=headers)
    assert robin_job.json()["status"] == "confirmed", robin_job.text
    listed = await http.get(f"{url}/v1/admin/bookings/{robins['id']}/photos", headers=headers)
    assert listed.json()["items"] == [], listed.text
    # A form from another site is refused before anything is read or sent on.
    forged = await page.request.post(
        web.url + f"/portal/worker/jobs/{mine['id']}/start",
        form={"csrf": "forged"},
        headers={"Sec-Fetch-Site": "cross-site"},
        max_redirects=0,
    )
    assert forged.status == 403, forged.status
