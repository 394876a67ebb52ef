"""The booking and invoice timelines (issue 13) through the gateway in front of the real services: one
list, oldest first, gathered from iam, booking, billing, media and notify; personal data masked for
the VIEWER role (checked over the whole body, not field by field); another org's ids and unknown ids
404; a non-UUID 422; and a degraded answer, marked partial, when a service is unreachable (a gateway
whose target for it is a closed port) or too slow (a tiny TIMELINE_SOURCE_TIMEOUT_SECONDS)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.tests.test_photo_routes import jpeg_bytes
from tools.devstack import free_port
from tools.testkit import assert_problem, basic, eventually, owner, staff

SOURCES = {"iam", "booking", "billing", "media", "notify"}
STATUSES = {"ok", "unavailable", "timeout", "error"}
EVENT_KEYS = {"at", "service", "source", "kind", "summary", "actor", "id", "details"}
STRONG = "Strong-timeline-pass-" + "9c1d2e3f"


def client_of(tag: str) -> dict[str, str]:
    """A client whose every personal value is distinctive, so a search of the body finds it."""
    return {
        "client_name": f"Zelda Quixote{tag}",
        "client_email": f"zelda.{tag}@example.com",
        "client_phone": "780-555-0" + tag[:3].translate(str.maketrans("abcdef", "123456")),
        "address": f"{tag} Jasper Avenue NW",
    }


async def booking_with_history(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], client: dict[str, str]
) -> tuple[str, str]:
    """A booking confirmed and with a photo, and an issued invoice for it, part paid: every service
    has something to say about them. (booking id, invoice id)"""
    starts = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": starts.isoformat(),
            "duration_minutes": 90,
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
            "notes": "gate code 1234",
            **client,
        },
    )
    assert created.status_code == 201, created.text
    booking_id = created.json()["id"]
    confirmed = await http.post(f"{url}/v1/admin/bookings/{booking_id}/confirm", headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    photo = await http.post(
        f"{url}/v1/admin/bookings/{booking_id}/photos",
        files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")},
        headers=headers,
    )
    assert photo.status_code == 201, photo.text
    invoice = await http.post(
        f"{url}/v1/admin/invoices",
        headers=headers,
        json={
            "client_name": client["client_name"],
            "client_email": client["client_email"],
            "booking_id": booking_id,
            "items": [{"description": "Clean", "quantity": "1", "unit_price_cents": 12000, "tax_rate": "5"}],
        },
    )
    assert invoice.status_code == 201, invoice.text
    invoice_id = invoice.json()["id"]
    issued = await http.post(f"{url}/v1/admin/invoices/{invoice_id}/issue", headers=headers)
    assert issued.status_code == 200, issued.text
    paid = await http.post(
        f"{url}/v1/admin/invoices/{invoice_id}/payments",
        headers=headers,
        json={"amount_cents": 5000, "method": "etransfer", "reference": "ET-77"},
    )
    assert paid.status_code == 201, paid.text
    return booking_id, invoice_id


def assert_shape(body: dict[str, Any], kind: str, subject_id: str) -> None:
    assert body["subject"] == {"type": kind, "id": subject_id}
    assert set(body["sources"]) == SOURCES, body["sources"]
    assert set(body["sources"].values()) <= STATUSES, body["sources"]
    assert body["partial"] == any(s != "ok" for s in body["sources"].values()), body
    assert isinstance(body["truncated"], bool)
    times = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in body["events"]]
    assert times == sorted(times), "events are oldest first"
    for event in body["events"]:
        assert event.keys() >= EVENT_KEYS, event
        assert isinstance(event["details"], dict), event


async def test_a_booking_and_its_invoice_timelines_gather_every_service(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    client = client_of(uuid.uuid4().hex[:8])
    booking_id, invoice_id = await booking_with_history(http, url, headers, client)

    response = await http.get(f"{url}/v1/admin/timeline/booking/{booking_id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_shape(body, "booking", booking_id)
    assert body["partial"] is False and set(body["sources"].values()) == {"ok"}, body["sources"]
    services = {e["service"] for e in body["events"]}
    # The booking's own story, its photo and the booking's confirmation at least.
    assert {"booking", "media"} <= services, services
    assert body["truncated"] is False

    response = await http.get(f"{url}/v1/admin/timeline/invoice/{invoice_id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_shape(body, "invoice", invoice_id)
    assert body["partial"] is False, body["sources"]
    assert "billing" in {e["service"] for e in body["events"]}
    kinds = " ".join(e["kind"] for e in body["events"])
    assert "payment" in kinds, kinds


async def test_a_viewer_sees_no_personal_data_anywhere_while_an_admin_does(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    client = client_of(uuid.uuid4().hex[:8])
    booking_id, invoice_id = await booking_with_history(http, url, headers, client)
    admin = await staff(http, url, headers, "ADMIN")
    viewer = await staff(http, url, headers, "VIEWER")
    phone_digits = "".join(c for c in client["client_phone"] if c.isdigit())

    for kind, subject_id in (("booking", booking_id), ("invoice", invoice_id)):
        path = f"{url}/v1/admin/timeline/{kind}/{subject_id}"

        async def both_reads(path: str = path) -> tuple[httpx.Response, httpx.Response]:
            seen = await http.get(path, headers=admin)
            masked = await http.get(path, headers=viewer)
            assert seen.status_code == 200, seen.text
            assert masked.status_code == 200, masked.text
            # The same entries, only their personal values masked. Entries the consumers are still
            # writing (an email's outcome, an audit row) may land between the two reads: read again.
            assert [e["id"] for e in masked.json()["events"]] == [e["id"] for e in seen.json()["events"]]
            return seen, masked

        seen, masked = await eventually(both_reads, timeout=10, message=f"the same {kind} entries for both")
        assert client["client_email"] in seen.text, f"the {kind} timeline holds the client's email"
        assert_shape(masked.json(), kind, subject_id)
        text = masked.text
        for value in (*client.values(), client["client_name"].split()[1], phone_digits):
            assert value not in text, f"a VIEWER's {kind} timeline shows {value!r}"
            assert value.lower() not in text.lower(), f"a VIEWER's {kind} timeline shows {value!r}"

    # The admin sees the client as they are: booking's "created" entry holds all four values (the
    # phone as booking normalised it).
    full = (await http.get(f"{url}/v1/admin/timeline/booking/{booking_id}", headers=admin)).json()
    [created] = [e for e in full["events"] if e["kind"] == "booking.created"]
    details = created["details"]
    assert (details["client_name"], details["client_email"], details["address"]) == (
        client["client_name"],
        client["client_email"],
        client["address"],
    ), details
    assert "".join(c for c in details["client_phone"] if c.isdigit()).endswith(phone_digits), details


async def test_staff_roles_and_basic_auth_pairs(gateways, gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    client = client_of(uuid.uuid4().hex[:8])
    booking_id, _ = await booking_with_history(http, url, headers, client)
    path = f"/v1/admin/timeline/booking/{booking_id}"
    for role in ("DISPATCHER", "FINANCE"):
        seen = await http.get(f"{url}{path}", headers=await staff(http, url, headers, role))
        assert seen.status_code == 200, f"{role}: {seen.text}"
        assert client["client_email"] in seen.text, f"{role} sees the client unmasked"
    assert_problem(await http.get(f"{url}{path}"), 401)

    gw = gateways.get(
        VIEWER_BASIC_USERNAME="viewer",
        VIEWER_BASIC_PASSWORD=STRONG,
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=STRONG,
        LEGACY_BASIC_AUTH_ENABLED="true",
    )
    viewer = await http.get(f"{gw.url}{path}", headers={**basic("viewer", STRONG), "X-Test-Org": org.org_id})
    assert viewer.status_code == 200, viewer.text
    assert client["client_email"] not in viewer.text and client["client_name"] not in viewer.text
    admin = await http.get(f"{gw.url}{path}", headers={**basic("admin", STRONG), "X-Test-Org": org.org_id})
    assert admin.status_code == 200 and client["client_email"] in admin.text, admin.text


async def test_bad_unknown_and_other_orgs_ids(gateway, http, make_org):
    url = gateway.url
    org_a, org_b = await make_org(), await make_org()
    booking_id, invoice_id = await booking_with_history(
        http, url, await owner(http, url, org_a), client_of(uuid.uuid4().hex[:8])
    )
    b = await owner(http, url, org_b)
    for kind in ("booking", "invoice"):
        for bad in ("not-a-uuid", "123", "x" * 80):
            problem = assert_problem(await http.get(f"{url}/v1/admin/timeline/{kind}/{bad}", headers=b), 422)
            assert problem["errors"][0]["field"] == f"{kind}_id"
        assert_problem(await http.get(f"{url}/v1/admin/timeline/{kind}/{uuid.uuid4()}", headers=b), 404)
    # Org A's booking and invoice, asked for by org B's owner and viewer: not found, nothing leaks.
    viewer_b = await staff(http, url, b, "VIEWER")
    for headers in (b, viewer_b):
        for kind, subject_id in (("booking", booking_id), ("invoice", invoice_id)):
            response = await http.get(f"{url}/v1/admin/timeline/{kind}/{subject_id}", headers=headers)
            assert_problem(response, 404)


async def test_a_service_that_is_down_makes_the_answer_partial_not_failed(gateways, gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking_id, invoice_id = await booking_with_history(
        http, gateway.url, headers, client_of(uuid.uuid4().hex[:8])
    )
    # A gateway whose media is a closed port: media's share is left out, the rest answers.
    gw = gateways.get(MEDIA_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    headers = await owner(http, gw.url, org)
    response = await http.get(f"{gw.url}/v1/admin/timeline/booking/{booking_id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_shape(body, "booking", booking_id)
    assert body["partial"] is True
    assert body["sources"]["media"] == "unavailable", body["sources"]
    assert {s for name, s in body["sources"].items() if name != "media"} == {"ok"}, body["sources"]
    services = {e["service"] for e in body["events"]}
    assert "media" not in services and "booking" in services, services

    # The owner itself down: still an answer (the other services are confined to the caller's org),
    # partial, without the owner's entries.
    gw = gateways.get(BILLING_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    headers = await owner(http, gw.url, org)
    response = await http.get(f"{gw.url}/v1/admin/timeline/invoice/{invoice_id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["partial"] is True and body["sources"]["billing"] == "unavailable", body["sources"]
    assert "billing" not in {e["service"] for e in body["events"]}


async def test_a_slow_service_times_out_alone(gateways, gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    booking_id, _ = await booking_with_history(http, gateway.url, headers, client_of(uuid.uuid4().hex[:8]))
    # Each share gets 1 ms: no service answers in time, and the answer says so rather than failing.
    gw = gateways.get(TIMELINE_SOURCE_TIMEOUT_SECONDS="0.001")
    headers = await owner(http, gw.url, org)
    response = await http.get(f"{gw.url}/v1/admin/timeline/booking/{booking_id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_shape(body, "booking", booking_id)
    assert "timeout" in body["sources"].values() and body["partial"] is True, body["sources"]
    timed_out = {name for name, status in body["sources"].items() if status == "timeout"}
    assert not timed_out & {e["service"] for e in body["events"]}
