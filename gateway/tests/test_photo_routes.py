"""Job photos through the gateway against the real suite (media with the local backend under the
session's work dir): upload a real JPEG and find it at its canonical key under ORDER_UPLOAD_ROOT, list
and read its metadata; 413 past ORDER_PHOTO_MAX_BYTES with and without Content-Length; 415 for
something that is no image; another org's booking and photo 404; VIEWER and FINANCE 403 for upload;
409 `subscription_paused` once media heard billing's pause; /readyz shows media."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from gateway.tests.test_subscription_routes import act, create_booking
from tools.testkit import assert_clean, assert_problem, eventually, jpeg_bytes, owner, staff

BOUNDARY = "cwsTestBoundary1f2e3d"


def photo_form(data: bytes, filename: str = "job.jpg", content_type: str = "image/jpeg") -> tuple[bytes, str]:
    """A multipart/form-data body (a note field, then the file), and its Content-Type."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nkitchen\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={BOUNDARY}"


async def upload(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str, data: bytes, **form: str
) -> httpx.Response:
    body, content_type = photo_form(data, **form)
    return await http.post(
        f"{url}/v1/admin/bookings/{booking_id}/photos",
        content=body,
        headers={**headers, "Content-Type": content_type},
    )


async def test_a_jpeg_uploaded_through_the_gateway_lands_at_its_canonical_key(
    gateway, http, make_org, stack, media
) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, headers)
    dispatcher = await staff(http, gateway.url, headers, "DISPATCHER")
    original = jpeg_bytes()

    response = await upload(http, gateway.url, dispatcher, booking["id"], original, filename="../../evil.jpg")
    assert_clean(response)
    assert response.status_code == 201, response.text
    photo = response.json()
    assert (photo["booking_id"], photo["status"], photo["mime"], photo["ext"]) == (
        booking["id"],
        "pending",
        "image/jpeg",
        "jpg",
    )
    assert (photo["width"], photo["height"]) == (64, 48)
    assert photo["uploader_role"] == "DISPATCHER" and photo["bytes"] > 0 and len(photo["sha256"]) == 64

    stored = (
        Path(stack.work_dir) / "uploads" / "orders" / org.org_id / booking["id"] / f"{photo['photo_id']}.jpg"
    )
    assert stored.is_file(), sorted(p.name for p in (Path(stack.work_dir) / "uploads").rglob("*"))
    assert stored.stat().st_size == photo["bytes"]
    with Image.open(stored) as image:
        assert (image.format, image.size) == ("JPEG", (64, 48))
    assert not list((Path(stack.work_dir) / "uploads").rglob("evil*")), "the client's name is never a path"

    listed = await http.get(f"{gateway.url}/v1/admin/bookings/{booking['id']}/photos", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [p["photo_id"] for p in listed.json()["items"]] == [photo["photo_id"]]
    viewer = await staff(http, gateway.url, headers, "VIEWER")
    one = await http.get(f"{gateway.url}/v1/admin/photos/{photo['photo_id']}", headers=viewer)
    assert one.status_code == 200, one.text
    assert one.json() == photo


async def test_bad_uploads_are_problems(gateways, gateway, http, make_org) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, headers)

    # Not an image, whatever its name says.
    html = await upload(http, gateway.url, headers, booking["id"], b"<html><script>x</script></html>" * 10)
    assert_problem(html, 415, "unsupported_media_type")
    # A truncated JPEG.
    cut = await upload(http, gateway.url, headers, booking["id"], jpeg_bytes(400, 300)[:600])
    assert 400 <= cut.status_code < 500 and cut.status_code != 413, cut.text
    assert_clean(cut)
    # Not multipart at all, and a form without the file.
    raw = await http.post(
        f"{gateway.url}/v1/admin/bookings/{booking['id']}/photos",
        content=jpeg_bytes(),
        headers={**headers, "Content-Type": "image/jpeg"},
    )
    assert_problem(raw, 415, "unsupported_media_type")
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n--{BOUNDARY}--\r\n'.encode()
    empty = await http.post(
        f"{gateway.url}/v1/admin/bookings/{booking['id']}/photos",
        content=body,
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert_problem(empty, 422)
    # A booking id that is no id.
    assert_clean(await upload(http, gateway.url, headers, "not-a-uuid", jpeg_bytes()))
    listed = await http.get(f"{gateway.url}/v1/admin/bookings/{booking['id']}/photos", headers=headers)
    assert listed.json()["items"] == [], "nothing refused was stored"


async def test_an_upload_past_the_limit_is_413_with_and_without_content_length(
    gateways, http, make_org
) -> None:
    limit = 64 * 1024
    small = gateways.get(ORDER_PHOTO_MAX_BYTES=str(limit))
    org = await make_org()
    headers = await owner(http, small.url, org)
    booking = await create_booking(http, small.url, headers)
    big = jpeg_bytes(900, 900) + b"\0" * (limit * 4)

    declared = await upload(http, small.url, headers, booking["id"], big)
    assert_problem(declared, 413, "payload_too_large")

    # Chunked: no Content-Length, so it is counted while it streams (the file part alone is too big,
    # the whole body within the route's envelope).
    body, content_type = photo_form(b"\xff\xd8\xff" + b"\0" * (limit + 1024))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = await http.post(
        f"{small.url}/v1/admin/bookings/{booking['id']}/photos",
        content=chunks(),
        headers={**headers, "Content-Type": content_type},
    )
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert_problem(streamed, 413, "payload_too_large")
    listed = await http.get(f"{small.url}/v1/admin/bookings/{booking['id']}/photos", headers=headers)
    assert listed.json()["items"] == []


async def test_roles_and_other_orgs(gateway, http, make_org) -> None:
    org_a, org_b = await make_org("Photos A"), await make_org("Photos B")
    owner_a = await owner(http, gateway.url, org_a)
    owner_b = await owner(http, gateway.url, org_b)
    booking_a = await create_booking(http, gateway.url, owner_a)
    booking_b = await create_booking(http, gateway.url, owner_b)
    photo = (await upload(http, gateway.url, owner_a, booking_a["id"], jpeg_bytes())).json()

    for role in ("VIEWER", "FINANCE"):
        refused = await upload(
            http, gateway.url, await staff(http, gateway.url, owner_a, role), booking_a["id"], jpeg_bytes()
        )
        assert_problem(refused, 403)
    # Org B: A's booking and photo do not exist for it.
    assert_problem(await upload(http, gateway.url, owner_b, booking_a["id"], jpeg_bytes()), 404)
    assert_problem(await http.get(f"{gateway.url}/v1/admin/photos/{photo['photo_id']}", headers=owner_b), 404)
    assert_problem(
        await http.get(f"{gateway.url}/v1/admin/bookings/{booking_a['id']}/photos", headers=owner_b), 404
    )
    assert_problem(await http.get(f"{gateway.url}/v1/admin/photos/{uuid.uuid4()}", headers=owner_a), 404)
    # B's own booking works for B.
    mine = await upload(http, gateway.url, owner_b, booking_b["id"], jpeg_bytes())
    assert mine.status_code == 201, mine.text


async def test_uploads_stop_while_the_subscription_is_paused(gateway, http, make_org, billing, media) -> None:
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, headers)
    paused = await act(http, gateway.url, headers, "pause", "seasonal_break")
    assert paused.status_code == 200, paused.text

    async def refused() -> httpx.Response | None:
        response = await upload(http, gateway.url, headers, booking["id"], jpeg_bytes())
        assert response.status_code in (201, 409), response.text
        return response if response.status_code == 409 else None

    assert_problem(
        await eventually(refused, timeout=30, message="media hearing the pause"), 409, "subscription_paused"
    )
    # Reads go on.
    listed = await http.get(f"{gateway.url}/v1/admin/bookings/{booking['id']}/photos", headers=headers)
    assert listed.status_code == 200
    resumed = await act(http, gateway.url, headers, "resume", "back")
    assert resumed.status_code == 200, resumed.text

    async def accepted() -> Any:
        response = await upload(http, gateway.url, headers, booking["id"], jpeg_bytes())
        assert response.status_code in (201, 409), response.text
        return response.status_code == 201

    await eventually(accepted, timeout=30, message="media hearing the resume")


async def test_readiness_shows_media(gateway, http) -> None:
    response = await http.get(f"{gateway.url}/readyz")
    assert response.status_code == 200, response.text
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["service:media"]["ok"] is True, checks.get("service:media")
