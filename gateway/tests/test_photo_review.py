"""Photo review and deletion through the gateway against the real suite (media with the local backend,
notify sending to the session's SMTP sink): the queue's filters, order, limit and JSON-array shape (seed
004's smoke line reads an array); approve and needs-retake with their 409s, roles and audit; the worker
who uploaded a photo emailed about a retake (a staff uploader is not); delete tombstones the photo (404
after, the object still on disk until the janitor runs, cws.media.photo.deleted written); another org's
photo is 404 on every route."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from gateway.tests.test_photo_routes import jpeg_bytes, upload
from gateway.tests.test_subscription_routes import create_booking
from tools.testkit import assert_clean, assert_problem, eventually, owner, sql, staff


async def uploaded(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str
) -> dict[str, Any]:
    response = await upload(http, url, headers, booking_id, jpeg_bytes())
    assert response.status_code == 201, response.text
    return dict(response.json())


def queue_url(url: str) -> str:
    return f"{url}/v1/admin/queue/photos"


async def test_the_queue_lists_photos_awaiting_action_oldest_first_as_an_array(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any
) -> None:
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await create_booking(http, url, headers)
    dispatcher = await staff(http, url, headers, "DISPATCHER")
    first, second, third = [await uploaded(http, url, dispatcher, booking["id"]) for _ in range(3)]

    # Seed 004's smoke line: dispatcher credentials, status=pending&limit=1, a 200 JSON array.
    response = await http.get(queue_url(url), headers=dispatcher, params={"status": "pending", "limit": 1})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), list)
    assert [p["photo_id"] for p in response.json()] == [first["photo_id"]]
    assert response.json()[0] == first

    everything = await http.get(queue_url(url), headers=dispatcher)
    assert [p["photo_id"] for p in everything.json()] == [p["photo_id"] for p in (first, second, third)]

    approved = await http.post(f"{url}/v1/admin/photos/{first['photo_id']}/approve", headers=dispatcher)
    assert approved.status_code == 200, approved.text
    retake = await http.post(
        f"{url}/v1/admin/photos/{second['photo_id']}/needs-retake",
        headers=dispatcher,
        json={"note": "blurry"},
    )
    assert retake.status_code == 200, retake.text

    async def ids(status: str) -> list[str]:
        found = await http.get(queue_url(url), headers=headers, params={"status": status})
        assert found.status_code == 200, found.text
        return [p["photo_id"] for p in found.json()]

    assert await ids("pending") == [third["photo_id"]]
    assert await ids("needs_retake") == [second["photo_id"]]
    assert await ids("all") == [second["photo_id"], third["photo_id"]]

    # Bad filters and limits are 422 problems; nothing else is accepted.
    for params in ({"status": "approved"}, {"status": "x"}, {"limit": 0}, {"limit": 201}, {"limit": "a"}):
        assert_problem(await http.get(queue_url(url), headers=headers, params=params), 422)
    # Dispatcher or higher: VIEWER and FINANCE are refused, signed-out is 401.
    for role in ("VIEWER", "FINANCE"):
        assert_problem(await http.get(queue_url(url), headers=await staff(http, url, headers, role)), 403)
    assert_problem(await http.get(queue_url(url)), 401)


async def test_review_transitions_409_roles_and_audit(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any, smtp_sink: Any
) -> None:
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await create_booking(http, url, headers)
    dispatcher = await staff(http, url, headers, "DISPATCHER")
    photo = await uploaded(http, url, dispatcher, booking["id"])
    photo_url = f"{url}/v1/admin/photos/{photo['photo_id']}"

    # Not for VIEWER or FINANCE.
    for role in ("VIEWER", "FINANCE"):
        other = await staff(http, url, headers, role)
        assert_problem(await http.post(f"{photo_url}/approve", headers=other), 403)
        assert_problem(await http.post(f"{photo_url}/needs-retake", headers=other, json={"note": "x"}), 403)
        assert_problem(await http.delete(photo_url, headers=other), 403)

    approved = await http.post(f"{photo_url}/approve", headers=dispatcher)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["review_note"]) == ("approved", None)
    assert approved.json()["reviewed_by"] and approved.json()["reviewed_at"]
    assert_problem(
        await http.post(f"{photo_url}/approve", headers=dispatcher), 409, "photo_transition_invalid"
    )

    # A note is required, bounded, and the body holds nothing else.
    for body in ({}, {"note": ""}, {"note": "x" * 1001}, {"note": "ok", "extra": 1}, {"note": 5}):
        assert_problem(await http.post(f"{photo_url}/needs-retake", headers=dispatcher, json=body), 422)
    blank = await http.post(f"{photo_url}/needs-retake", headers=dispatcher, json={"note": "   "})
    assert 400 <= blank.status_code < 500, blank.text
    assert_clean(blank)

    retake = await http.post(f"{photo_url}/needs-retake", headers=dispatcher, json={"note": "too dark"})
    assert retake.status_code == 200, retake.text
    assert (retake.json()["status"], retake.json()["review_note"]) == ("needs_retake", "too dark")
    # The uploader is staff (a dispatcher): nobody is emailed.
    assert retake.json()["worker_notified"] is False
    assert_problem(
        await http.post(f"{photo_url}/needs-retake", headers=dispatcher, json={"note": "again"}),
        409,
        "photo_transition_invalid",
    )
    again = await http.post(f"{photo_url}/approve", headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "approved", again.text
    assert not [m for m in smtp_sink.messages if booking["id"] in m.text], "no email about this booking"

    async def audited() -> list[dict[str, Any]]:
        logs = await http.get(
            f"{url}/v1/admin/audit-logs", headers=headers, params={"action": "media.RequestPhotoRetake"}
        )
        assert logs.status_code == 200, logs.text
        found = list(logs.json())
        assert found, found
        return found

    entries: list[dict[str, Any]] = await eventually(audited)
    [entry] = entries
    assert entry["before"]["status"] == "approved" and entry["after"]["status"] == "needs_retake", entry
    assert entry["after"]["review_note"] == "too dark" and entry["resource_id"] == photo["photo_id"], entry


async def test_a_retake_emails_the_worker_who_uploaded_it(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any, smtp_sink: Any, stack: Any
) -> None:
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await create_booking(http, url, headers)
    email = f"worker-{uuid.uuid4().hex[:8]}@example.com"
    worker = await http.post(f"{url}/v1/admin/workers", headers=headers, json={"name": "Wen", "email": email})
    assert worker.status_code == 201, worker.text
    photo = await uploaded(http, url, headers, booking["id"])
    # As if the worker had uploaded it from their portal (a worker portal session's subject is the
    # worker's id): set behind media's back, the superuser URL bypasses RLS.
    await sql(
        stack.admin_url,
        "UPDATE media.order_photos SET uploaded_by = %s, uploader_role = 'WORKER' WHERE id = %s",
        (worker.json()["id"], uuid.UUID(photo["photo_id"])),
    )

    retake = await http.post(
        f"{url}/v1/admin/photos/{photo['photo_id']}/needs-retake",
        headers=headers,
        json={"note": "Please photograph the oven again"},
    )
    assert retake.status_code == 200, retake.text
    assert retake.json()["worker_notified"] is True

    [mail] = await eventually(lambda: smtp_sink.to(email), timeout=20, message="the retake email")
    assert "retaken" in mail.subject
    assert "Please photograph the oven again" in mail.text and booking["id"] in mail.text


async def test_delete_tombstones_the_photo_and_keeps_the_object_for_the_janitor(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any, stack: Any
) -> None:
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await create_booking(http, url, headers)
    dispatcher = await staff(http, url, headers, "DISPATCHER")
    photo = await uploaded(http, url, dispatcher, booking["id"])
    photo_url = f"{url}/v1/admin/photos/{photo['photo_id']}"
    stored = (
        Path(stack.work_dir) / "uploads" / "orders" / org.org_id / booking["id"] / f"{photo['photo_id']}.jpg"
    )
    assert stored.is_file()

    gone = await http.delete(photo_url, headers=dispatcher)
    assert gone.status_code == 204, gone.text
    assert_problem(await http.get(photo_url, headers=headers), 404)
    assert_problem(await http.delete(photo_url, headers=dispatcher), 404)
    assert_problem(await http.post(f"{photo_url}/approve", headers=dispatcher), 404)
    assert (await http.get(queue_url(url), headers=headers)).json() == []
    listed = await http.get(f"{url}/v1/admin/bookings/{booking['id']}/photos", headers=headers)
    assert listed.json()["items"] == []

    # Not deleted inline: the object waits for the janitor, named by its tombstone; the event and the
    # row's deleted_at were written with it (superuser URL: reading behind media's back).
    assert stored.is_file()
    [(key, backend, attempts)] = await sql(
        stack.admin_url,
        "SELECT storage_key, backend, attempts FROM media.photo_tombstones WHERE photo_id = %s",
        (uuid.UUID(photo["photo_id"]),),
    )
    assert (key, backend, attempts) == (
        f"orders/{org.org_id}/{booking['id']}/{photo['photo_id']}.jpg",
        "local",
        0,
    )
    events = await sql(
        stack.admin_url,
        "SELECT subject FROM media.event_outbox WHERE org_id = %s AND subject = 'cws.media.photo.deleted'",
        (uuid.UUID(org.org_id),),
    )
    assert len(events) == 1

    async def audited() -> list[dict[str, Any]]:
        logs = await http.get(
            f"{url}/v1/admin/audit-logs", headers=headers, params={"action": "media.DeletePhoto"}
        )
        found = list(logs.json())
        assert found, found
        return found

    entries: list[dict[str, Any]] = await eventually(audited)
    [entry] = entries
    assert entry["before"]["deleted"] is False and entry["after"]["deleted"] is True, entry


async def test_another_orgs_photo_is_404_on_every_review_route(
    gateway: Any, http: httpx.AsyncClient, make_org: Any, media: Any
) -> None:
    url = gateway.url
    mine, theirs = await make_org(), await make_org()
    my_headers = await owner(http, url, mine)
    their_headers = await owner(http, url, theirs)
    booking = await create_booking(http, url, their_headers)
    photo = await uploaded(http, url, their_headers, booking["id"])
    photo_url = f"{url}/v1/admin/photos/{photo['photo_id']}"

    assert_problem(await http.post(f"{photo_url}/approve", headers=my_headers), 404)
    assert_problem(await http.post(f"{photo_url}/needs-retake", headers=my_headers, json={"note": "x"}), 404)
    assert_problem(await http.delete(photo_url, headers=my_headers), 404)
    assert (await http.get(queue_url(url), headers=my_headers)).json() == []
    # Untouched in its own org.
    still = await http.get(queue_url(url), headers=their_headers)
    assert [(p["photo_id"], p["status"]) for p in still.json()] == [(photo["photo_id"], "pending")]
    # Malformed ids are 4xx problems, never 5xx.
    for bad in ("not-a-uuid", "x" * 64, "%2e%2e"):
        response = await http.post(f"{url}/v1/admin/photos/{bad}/approve", headers=my_headers)
        assert 400 <= response.status_code < 500, response.text
        assert_clean(response)
