"""Photo consent and signed delivery through the gateway, against the real suite (media with the
local backend, as the stack runs it): consent required, then granted (client portal), then withdrawn
and recorded by staff; the admin's signed_url and the public link that streams the local file; the
client portal's photo list and signed-download; tampered links 404; other clients' and orgs' ids 404.
A second media process (one-time links in Redis, bound to the User-Agent, PHOTO_URL_TTL_SECONDS=10)
behind its own gateway shows a link opening once, refused to another browser, and expiring (410)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import media_env
from gateway.tests.test_photo_routes import jpeg_bytes, upload
from gateway.tests.test_subscription_routes import slot
from tools.processes import service_proc
from tools.testkit import assert_clean, assert_problem, eventually, owner, sql, staff

BOOKING = {
    "duration_minutes": 120,
    "client_name": "Photo Client",
    "cleaning_type": "standard",
    "beds": 2,
    "baths": 1,
}
BROWSER = {"User-Agent": "Mozilla/5.0 (photo-links test) Firefox/140.0"}


async def booking_of(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], email: str
) -> dict[str, Any]:
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={**BOOKING, "client_email": email, "starts_at": slot(48)},
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


async def photo_of(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], booking_id: str
) -> dict[str, Any]:
    response = await upload(http, url, headers, booking_id, jpeg_bytes())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def client_of(
    http: httpx.AsyncClient, url: str, org_id: str, email: str, smtp_sink: Any
) -> dict[str, str]:
    """A client signed in to the portal by the magic link notify emails, as a bearer header."""
    requested = await http.post(
        f"{url}/client/login/request", json={"email": email}, headers={"X-Test-Org": org_id}
    )
    assert requested.status_code == 202, requested.text
    [mail] = await smtp_sink.delivered(email)
    token = re.search(r"token=([^\s&]+)", mail.text).group(1)  # type: ignore[union-attr]
    confirmed = await http.post(f"{url}/client/login/confirm", json={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    http.cookies.clear()
    return {"Authorization": f"Bearer {confirmed.json()['session_token']}"}


def public_path(url: str) -> str:
    return urlsplit(url).path


async def test_consent_gates_staff_links_and_the_public_link_streams_the_photo(
    gateway, http, make_org, smtp_sink
) -> None:
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    email = f"photo-client-{uuid.uuid4().hex[:8]}@example.com"
    booking = await booking_of(http, url, headers, email)
    photo = await photo_of(http, url, headers, booking["id"])
    consent_url = f"{url}/v1/admin/bookings/{booking['id']}/photo-consent"

    # Nothing recorded: the state says so, and no staff link is signed, with the reason.
    state = await http.get(consent_url, headers=headers)
    assert state.status_code == 200, state.text
    assert state.json() == {
        "booking_id": booking["id"],
        "granted": False,
        "recorded": False,
        "source": None,
        "granted_at": None,
        "withdrawn_at": None,
        "granted_by": None,
    }
    refused = await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=headers)
    problem = assert_problem(refused, 409, "photo_consent_required")
    assert "not given photo consent" in problem["detail"], problem

    # The client gives consent from the portal.
    client = await client_of(http, url, org.org_id, email, smtp_sink)
    portal_consent = f"{url}/v1/client/portal/bookings/{booking['id']}/photo-consent"
    before = await http.get(portal_consent, headers=client)
    assert before.status_code == 200 and before.json()["granted"] is False, before.text
    given = await http.put(portal_consent, headers=client, json={"granted": True})
    assert given.status_code == 200, given.text
    assert (given.json()["granted"], given.json()["source"]) == (True, "client_portal")
    assert "granted_by" not in given.json() and given.json()["granted_at"]
    seen_by_staff = (await http.get(consent_url, headers=headers)).json()
    assert (seen_by_staff["granted"], seen_by_staff["granted_by"]) == (True, email), seen_by_staff

    # A signed link: short-lived, opens the photo as stored, privately.
    signed = await http.get(
        f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers={**headers, **BROWSER}
    )
    assert signed.status_code == 200, signed.text
    assert signed.headers["cache-control"] == "private, no-store"
    link = signed.json()["url"]
    assert public_path(link).startswith("/v1/public/photos/v1.") and signed.json()["expires_at"]
    opened = await http.get(url + public_path(link), headers=BROWSER)
    assert opened.status_code == 200, opened.text
    assert opened.headers["content-type"] == "image/jpeg"
    assert opened.headers["cache-control"] == "private, no-store"
    assert opened.headers["x-content-type-options"] == "nosniff"
    assert hashlib.sha256(opened.content).hexdigest() == photo["sha256"]
    # The session's media has one-time links off: the link opens again while it lives.
    again = await http.get(url + public_path(link), headers=BROWSER)
    assert again.status_code == 200 and again.content == opened.content

    # Forged and tampered links are one 404; nothing about why.
    token = public_path(link).rsplit("/", 1)[1]
    version, payload, signature = token.split(".")
    tampered = f"{version}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    for bad in (tampered, f"{version}.{payload}.{signature[::-1]}", "v1.x.y", "not-a-token", "a" * 1024):
        response = await http.get(f"{url}/v1/public/photos/{bad}")
        assert_problem(response, 404, "photo_link_invalid" if len(bad) < 1024 else None)
    assert_problem(await http.get(f"{url}/v1/public/photos/{'a' * 1025}"), 422)

    # Withdrawn: staff links stop, and the staff view says when.
    withdrawn = await http.put(portal_consent, headers=client, json={"granted": False})
    assert withdrawn.status_code == 200 and withdrawn.json()["withdrawn_at"], withdrawn.text
    refused = await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=headers)
    assert "withdrawn" in assert_problem(refused, 409, "photo_consent_required")["detail"]
    # ... and links minted before the withdrawal stop opening.
    assert_problem(await http.get(url + public_path(link), headers=BROWSER), 404, "photo_not_found")

    # Staff record consent (dispatcher or higher); a viewer may read it, not record it.
    viewer = await staff(http, url, headers, "VIEWER")
    assert (await http.get(consent_url, headers=viewer)).status_code == 200
    assert_problem(await http.put(consent_url, headers=viewer, json={"granted": True}), 403)
    dispatcher = await staff(http, url, headers, "DISPATCHER")
    recorded = await http.put(consent_url, headers=dispatcher, json={"granted": True})
    assert recorded.status_code == 200, recorded.text
    body = recorded.json()
    assert (body["granted"], body["source"], body["withdrawn_at"]) == (True, "staff", None), body
    assert body["granted_by"] and body["granted_by"] != email

    # The staff write is in the org's admin audit log, with before and after (the client's is not).
    async def audited() -> dict[str, Any]:
        entries = (
            await http.get(f"{url}/v1/admin/audit-logs", params={"limit": 200}, headers=headers)
        ).json()
        found = [e for e in entries if (e["after"] or {}).get("source") == "staff"]
        assert found, entries[:5]
        return dict(found[0])

    entry = await eventually(audited)
    assert entry["actor"] == body["granted_by"] and entry["role"] == "DISPATCHER", entry
    assert (entry["before"]["granted"], entry["after"]["granted"]) == (False, True), entry
    viewer_link = await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=viewer)
    assert viewer_link.status_code == 200, viewer_link.text

    # Bad bodies and ids are 4xx.
    for bad_body in ({}, {"granted": "yes"}, {"granted": True, "extra": 1}):
        response = await http.put(consent_url, headers=dispatcher, json=bad_body)
        assert_clean(response)
        assert response.status_code == 422, response.text
    assert_problem(await http.get(f"{url}/v1/admin/bookings/nope/photo-consent", headers=headers), 422)
    missing = await http.get(f"{url}/v1/admin/photos/{uuid.uuid4()}/signed_url", headers=headers)
    assert_problem(missing, 404)


async def test_the_client_portal_lists_and_downloads_its_own_photos_only(
    gateway, http, make_org, smtp_sink
) -> None:
    url = gateway.url
    org, other_org = await make_org(), await make_org()
    headers = await owner(http, url, org)
    email = f"portal-photos-{uuid.uuid4().hex[:8]}@example.com"
    booking = await booking_of(http, url, headers, email)
    photo = await photo_of(http, url, headers, booking["id"])
    # Another client's booking in the same org, and a booking of the same email in another org.
    neighbour = await booking_of(http, url, headers, f"neighbour-{uuid.uuid4().hex[:8]}@example.com")
    neighbours_photo = await photo_of(http, url, headers, neighbour["id"])
    other_headers = await owner(http, url, other_org)
    elsewhere = await booking_of(http, url, other_headers, email)
    elsewhere_photo = await photo_of(http, url, other_headers, elsewhere["id"])
    client = await client_of(http, url, org.org_id, email, smtp_sink)

    listed = await http.get(f"{url}/v1/client/portal/bookings/{booking['id']}/photos", headers=client)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["consent"]["granted"] is False and body["booking_id"] == booking["id"]
    [item] = body["photos"]
    assert item["photo_id"] == photo["photo_id"] and item["mime"] == "image/jpeg"
    assert item["download"] == f"/v1/orders/{booking['id']}/photos/{photo['photo_id']}/signed-download"
    assert "storage_key" not in item and "sha256" not in item

    # The client needs no consent of their own to see their photos: a redirect to a signed link.
    redirected = await http.get(url + item["download"], headers={**client, **BROWSER})
    assert redirected.status_code == 302, redirected.text
    assert redirected.headers["cache-control"] == "private, no-store"
    location = redirected.headers["location"]
    assert public_path(location).startswith("/v1/public/photos/")
    opened = await http.get(url + public_path(location), headers=BROWSER)
    assert opened.status_code == 200 and hashlib.sha256(opened.content).hexdigest() == photo["sha256"]

    # Another client's booking and photos, a photo of another booking, another org's: all 404.
    refusals = [
        f"/v1/client/portal/bookings/{neighbour['id']}/photos",
        f"/v1/client/portal/bookings/{neighbour['id']}/photo-consent",
        f"/v1/orders/{neighbour['id']}/photos/{neighbours_photo['photo_id']}/signed-download",
        f"/v1/orders/{booking['id']}/photos/{neighbours_photo['photo_id']}/signed-download",
        f"/v1/client/portal/bookings/{elsewhere['id']}/photos",
        f"/v1/orders/{elsewhere['id']}/photos/{elsewhere_photo['photo_id']}/signed-download",
        f"/v1/orders/{booking['id']}/photos/{elsewhere_photo['photo_id']}/signed-download",
        f"/v1/orders/{booking['id']}/photos/{uuid.uuid4()}/signed-download",
    ]
    for path in refusals:
        assert_problem(await http.get(url + path, headers=client), 404)
    put = await http.put(
        f"{url}/v1/client/portal/bookings/{neighbour['id']}/photo-consent",
        headers=client,
        json={"granted": True},
    )
    assert_problem(put, 404)
    # Staff credentials are no portal credentials; no credentials at all are refused too.
    assert_problem(await http.get(url + item["download"], headers=headers), 401)
    assert_problem(await http.get(url + item["download"]), 401)
    # Another org's staff cannot sign a link to this org's photo.
    assert_problem(
        await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=other_headers), 404
    )


async def test_a_deleted_photo_answers_404_through_a_link_minted_before(gateway, http, make_org) -> None:
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await booking_of(http, url, headers, f"gone-{uuid.uuid4().hex[:8]}@example.com")
    photo = await photo_of(http, url, headers, booking["id"])
    granted = await http.put(
        f"{url}/v1/admin/bookings/{booking['id']}/photo-consent", headers=headers, json={"granted": True}
    )
    assert granted.status_code == 200, granted.text
    link = (await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=headers)).json()
    deleted = await http.delete(f"{url}/v1/admin/photos/{photo['photo_id']}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    assert_problem(await http.get(url + public_path(link["url"])), 404)
    again = await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=headers)
    assert_problem(again, 404)


async def test_a_photo_stored_under_a_legacy_alias_is_still_served(gateway, http, make_org, stack) -> None:
    """Seed 002: canonical keys are orders/{org}/{booking}/{photo}.{ext}; older objects stored without
    the extension (the legacy alias) still resolve for reads."""
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    booking = await booking_of(http, url, headers, f"legacy-{uuid.uuid4().hex[:8]}@example.com")
    photo = await photo_of(http, url, headers, booking["id"])
    [(key,)] = await sql(
        stack.admin_url, "SELECT storage_key FROM media.order_photos WHERE id = %s", (photo["photo_id"],)
    )
    root = stack.work_dir / "uploads"
    legacy = key.rsplit(".", 1)[0]
    original = (root / key).read_bytes()
    (root / key).rename(root / legacy)  # the object as an older release stored it
    await sql(
        stack.admin_url,
        "UPDATE media.order_photos SET legacy_key = %s WHERE id = %s",
        (legacy, photo["photo_id"]),
    )
    granted = await http.put(
        f"{url}/v1/admin/bookings/{booking['id']}/photo-consent", headers=headers, json={"granted": True}
    )
    assert granted.status_code == 200, granted.text
    link = (await http.get(f"{url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers=headers)).json()
    served = await http.get(url + public_path(link["url"]))
    assert served.status_code == 200, served.text
    assert served.content == original


@pytest.fixture(scope="module")
def strict_media(stack, booking, notify) -> Iterator[Any]:
    """A second media process on the same database and files: links one-time (Redis), bound to the
    User-Agent, living 10 s."""
    if not stack.redis_url:
        pytest.skip("one-time photo links need Redis (REDIS_URL or 127.0.0.1:6379)")
    env = {
        **media_env(stack, booking, notify),
        "REDIS_URL": stack.redis_url,
        "PHOTO_TOKEN_ONE_TIME": "true",
        "PHOTO_TOKEN_BIND_USER_AGENT": "true",
        "PHOTO_URL_TTL_SECONDS": "10",
    }
    proc = service_proc("media", env, stack.work_dir / "logs", label="media-strict").start().wait_ready()
    yield proc
    proc.stop()


async def test_one_time_user_agent_bound_links_open_once_for_their_browser_then_expire(
    gateways, gateway, strict_media, http, make_org
) -> None:
    strict = gateways.get(MEDIA_GRPC_TARGET=strict_media.target)
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking = await booking_of(http, gateway.url, headers, f"strict-{uuid.uuid4().hex[:8]}@example.com")
    photo = await photo_of(http, gateway.url, headers, booking["id"])
    granted = await http.put(
        f"{gateway.url}/v1/admin/bookings/{booking['id']}/photo-consent",
        headers=headers,
        json={"granted": True},
    )
    assert granted.status_code == 200, granted.text

    async def mint() -> str:
        signed = await http.get(
            f"{strict.url}/v1/admin/photos/{photo['photo_id']}/signed_url", headers={**headers, **BROWSER}
        )
        assert signed.status_code == 200, signed.text
        return strict.url + public_path(signed.json()["url"])

    # Once, for the browser that asked; another browser learns nothing (404), and does not spend it.
    link = await mint()
    assert_problem(await http.get(link, headers={"User-Agent": "curl/8.0"}), 404, "photo_link_invalid")
    assert_problem(await http.get(link), 404, "photo_link_invalid")
    first = await http.get(link, headers=BROWSER)
    assert first.status_code == 200 and hashlib.sha256(first.content).hexdigest() == photo["sha256"]
    assert_problem(await http.get(link, headers=BROWSER), 410, "photo_link_used")

    # Many at once: exactly one opens.
    link = await mint()
    answers = await asyncio.gather(*(http.get(link, headers=BROWSER) for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [200, 410, 410, 410, 410, 410]

    # Past PHOTO_URL_TTL_SECONDS: 410, told only to its own browser.
    link = await mint()
    await asyncio.sleep(11)
    assert_problem(await http.get(link, headers=BROWSER), 410, "photo_link_expired")
    assert_problem(await http.get(link, headers={"User-Agent": "curl/8.0"}), 404, "photo_link_invalid")
