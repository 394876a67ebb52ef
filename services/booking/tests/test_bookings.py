"""Bookings at the gateway: lifecycle, deposits, cleanup, time zones, idempotency, cross-org, events."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import psycopg
from cws.booking.v1 import events_pb2

from services.booking.tests.helpers import create_booking, slot
from tools import testkit
from tools.testkit import assert_problem, eventually


async def test_lifecycle_pending_confirmed_in_progress_completed(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, owner)
    assert booking["status"] == "pending" and booking["total_before_tax_cents"] > 0
    url = f"{gateway.url}/v1/admin/bookings/{booking['id']}"

    assert_problem(await http.post(f"{url}/start", headers=owner), 409, "invalid_transition")
    for action, status in (("confirm", "confirmed"), ("start", "in_progress"), ("complete", "completed")):
        response = await http.post(f"{url}/{action}", headers=owner)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    assert response.json()["nps_token"].startswith("nps.")
    assert_problem(
        await http.post(f"{url}/cancel", headers=owner, json={"reason": "late"}), 409, "invalid_transition"
    )
    assert_problem(await http.post(f"{url}/explode", headers=owner), 404)


async def test_cancel_keeps_the_reason(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, owner)
    cancelled = await http.post(
        f"{gateway.url}/v1/admin/bookings/{booking['id']}/cancel",
        headers=owner,
        json={"reason": "client moved"},
    )
    assert cancelled.status_code == 200 and cancelled.json()["cancel_reason"] == "client moved"
    too_long = await http.post(
        f"{gateway.url}/v1/admin/bookings/{booking['id']}/cancel", headers=owner, json={"reason": "x" * 501}
    )
    assert_problem(too_long, 422)


async def test_booking_from_a_lead_keeps_the_quoted_price(gateway, http, make_org):
    org = await make_org()
    lead = await http.post(
        f"{gateway.url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": "Lee Lead",
            "phone": "780-555-0101",
            "email": "lee@example.com",
            "postal_code": "T5J 0N3",
            "structured_inputs": {"beds": 3, "baths": 2, "cleaning_type": "move_out"},
        },
    )
    assert lead.status_code == 201, lead.text
    owner = await testkit.owner(http, gateway.url, org)
    booking = await create_booking(
        http,
        gateway.url,
        owner,
        lead_id=lead.json()["lead_id"],
        client_name="",
        client_email="",
        cleaning_type="",
        beds=0,
        baths=0,
    )
    assert booking["lead_id"] == lead.json()["lead_id"]
    assert booking["client_email"] == "lee@example.com" and booking["cleaning_type"] == "move_out"
    assert booking["total_before_tax_cents"] == lead.json()["estimate"]["total_before_tax_cents"]


async def test_deposits_keep_a_booking_pending_until_paid(gateways, http, make_org):
    gateway = gateways.get()
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    booking = await create_booking(http, gateway.url, owner, deposit_required=True)
    url = f"{gateway.url}/v1/admin/bookings/{booking['id']}"
    assert_problem(await http.post(f"{url}/confirm", headers=owner), 409, "deposit_required")
    paid = await http.post(f"{url}/deposit-paid", headers=owner)
    assert paid.status_code == 200 and paid.json()["status"] == "confirmed" and paid.json()["deposit_paid"]


async def test_times_are_utc_and_shown_in_the_org_time_zone(gateway, http, make_org):
    org = await make_org("Tz Org", time_zone="America/Edmonton")
    owner = await testkit.owner(http, gateway.url, org)
    start = (datetime.now(UTC) + timedelta(days=10)).replace(hour=16, minute=0, second=0, microsecond=0)

    async def zoned() -> dict[str, Any]:
        # The org profile (with its time zone) arrives by event; a lazy default is UTC.
        booking = await create_booking(http, gateway.url, owner, starts_at=start.isoformat())
        assert booking["time_zone"] == "America/Edmonton", booking
        return booking

    booking = await eventually(zoned, message="bookings in the org's time zone")
    assert booking["starts_at"].startswith(start.strftime("%Y-%m-%dT16:00:00"))
    local = datetime.fromisoformat(booking["starts_at_local"])
    assert local.utcoffset() in (timedelta(hours=-7), timedelta(hours=-6)) and local == start


async def test_bad_booking_input(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    base = {
        "starts_at": slot(24),
        "duration_minutes": 60,
        "client_name": "A",
        "cleaning_type": "standard",
        "beds": 1,
        "baths": 1,
    }
    for change, field in (
        ({"starts_at": "2030-01-01T10:00:00"}, "starts_at"),
        ({"duration_minutes": 5}, "duration_minutes"),
        ({"duration_minutes": 100_000}, "duration_minutes"),
        ({"starts_at": (datetime.now(UTC) + timedelta(days=3000)).isoformat()}, "starts_at"),
        ({"client_email": "nope"}, "client_email"),
        ({"cleaning_type": "palace"}, "cleaning_type"),
        ({"lead_id": "not-a-uuid"}, "lead_id"),
    ):
        response = await http.post(f"{gateway.url}/v1/admin/bookings", headers=owner, json={**base, **change})
        body = assert_problem(response, 422)
        assert any(field in e["field"] for e in body.get("errors", [])), body
    assert_problem(await http.get(f"{gateway.url}/v1/admin/bookings/not-a-uuid", headers=owner), 422)
    assert_problem(await http.get(f"{gateway.url}/v1/admin/bookings?status=lost", headers=owner), 422)


async def test_idempotent_booking_create(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    key = {"Idempotency-Key": f"bk-{uuid.uuid4()}", **owner}
    starts_at = slot(48)  # one body for both calls: create_booking's default moves with the clock
    first = await create_booking(http, gateway.url, key, starts_at=starts_at)
    second = await create_booking(http, gateway.url, key, starts_at=starts_at)
    assert second == first


BOOKING = {
    "starts_at": slot(50),
    "duration_minutes": 120,
    "client_name": "Priya Private",
    "client_email": "priya.private@example.com",
    "client_phone": "780-555-0142",
    "address": "12 Hidden Lane",
    "cleaning_type": "standard",
    "beds": 2,
    "baths": 1,
    "notes": "alarm 9021",
}


async def test_booking_idempotency_key_is_bound_to_its_request_and_its_caller(gateway, http, make_org):
    """Issue 9, hole 3 on the staff route: the same key with another body, or the same body from
    another member of staff, is 422 and shows nothing of the first booking; the same request from the
    same caller is replayed."""
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    dispatcher = await testkit.staff(http, gateway.url, owner, "DISPATCHER")
    key = f"bk-{uuid.uuid4()}"
    url = f"{gateway.url}/v1/admin/bookings"
    first = await http.post(url, headers={**dispatcher, "Idempotency-Key": key}, json=BOOKING)
    assert first.status_code == 201, first.text
    secrets = ("Priya", "priya.private", "0142", "Hidden Lane", "9021", first.json()["id"])

    for headers, body in (
        (dispatcher, {**BOOKING, "client_name": "Someone Else"}),
        (dispatcher, {**BOOKING, "notes": ""}),
        (dispatcher, {**BOOKING, "duration_minutes": 90}),
        (owner, BOOKING),  # the same body from another principal
    ):
        refused = await http.post(url, headers={**headers, "Idempotency-Key": key}, json=body)
        assert_problem(refused, 422, "idempotency_key_reused")
        assert "idempotent-replayed" not in refused.headers
        # Searched in what the answer says, not in its random request id (which once held "0142").
        said = {k: v for k, v in refused.json().items() if k != "request_id"}
        assert not [secret for secret in secrets if secret in json.dumps(said)], refused.text

    again = await http.post(url, headers={**dispatcher, "Idempotency-Key": key}, json=BOOKING)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert (await http.get(url, headers=owner)).json()["total"] == 1


async def test_concurrent_identical_bookings_with_one_key_make_one_booking(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    headers = {**owner, "Idempotency-Key": f"bk-race-{uuid.uuid4()}"}
    results = await asyncio.gather(
        *(http.post(f"{gateway.url}/v1/admin/bookings", headers=headers, json=BOOKING) for _ in range(6))
    )
    assert {r.status_code for r in results} == {201}, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert (await http.get(f"{gateway.url}/v1/admin/bookings", headers=owner)).json()["total"] == 1


async def test_another_orgs_booking_is_not_found_and_lists_are_separate(gateway, http, make_org):
    a, b = await make_org(), await make_org()
    owner_a, owner_b = await testkit.owner(http, gateway.url, a), await testkit.owner(http, gateway.url, b)
    booking = await create_booking(http, gateway.url, owner_a)
    url = f"{gateway.url}/v1/admin/bookings/{booking['id']}"
    assert_problem(await http.get(url, headers=owner_b), 404)
    for action in ("confirm", "cancel"):
        assert_problem(await http.post(f"{url}/{action}", headers=owner_b), 404)
    assert_problem(
        await http.post(
            f"{url}/reschedule", headers=owner_b, json={"starts_at": slot(72), "duration_minutes": 60}
        ),
        404,
    )
    assert (await http.get(f"{gateway.url}/v1/admin/bookings", headers=owner_b)).json()["total"] == 0
    assert (await http.get(url, headers=owner_a)).status_code == 200


async def test_roles(gateway, http, make_org):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    viewer = await testkit.staff(http, gateway.url, owner, "VIEWER")
    dispatcher = await testkit.staff(http, gateway.url, owner, "DISPATCHER")
    assert_problem(await http.post(f"{gateway.url}/v1/admin/bookings", headers=viewer, json={}), 403)
    booking = await create_booking(http, gateway.url, dispatcher)
    assert (
        await http.get(f"{gateway.url}/v1/admin/bookings/{booking['id']}", headers=viewer)
    ).status_code == 200
    assert_problem(await http.post(f"{gateway.url}/v1/admin/cleanup", headers=dispatcher), 403)
    assert_problem(await http.get(f"{gateway.url}/v1/admin/leads"), 401)


async def test_cleanup_removes_only_stale_pending_bookings(gateway, http, make_org, stack):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    stale = await create_booking(http, gateway.url, owner)
    fresh = await create_booking(http, gateway.url, owner)
    confirmed = await create_booking(http, gateway.url, owner)
    await http.post(f"{gateway.url}/v1/admin/bookings/{confirmed['id']}/confirm", headers=owner)
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE booking.bookings SET created_at = now() - interval '3 days' WHERE id = ANY(%s)",
            ([uuid.UUID(stale["id"]), uuid.UUID(confirmed["id"])],),
        )
    response = await http.post(f"{gateway.url}/v1/admin/cleanup", headers=owner)
    assert response.status_code == 202 and response.json() == {"deleted": 1}
    remaining = {
        b["id"]
        for b in (await http.get(f"{gateway.url}/v1/admin/bookings", headers=owner)).json()["bookings"]
    }
    assert remaining == {fresh["id"], confirmed["id"]}


async def test_booking_events_are_published_with_cloudevents_headers(gateway, http, make_org, stack):
    org = await make_org()
    owner = await testkit.owner(http, gateway.url, org)
    nc = await stack.nats.connect_as("admin")  # an observer of the whole stream: the operator's user
    try:
        js = nc.jetstream()
        seen: list = []
        sub = await js.subscribe(
            "cws.booking.booking.>", ordered_consumer=True, deliver_policy=nats.js.api.DeliverPolicy.NEW
        )
        booking = await create_booking(http, gateway.url, owner)
        await http.post(f"{gateway.url}/v1/admin/bookings/{booking['id']}/confirm", headers=owner)

        async def both() -> bool:
            try:
                message = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return False
            if message.headers and message.headers.get("cws-org-id") == org.org_id:
                seen.append(message)
            return len(seen) >= 2

        await eventually(both, timeout=5, message="the booking's created and confirmed events")
        assert [m.subject for m in seen] == ["cws.booking.booking.created", "cws.booking.booking.confirmed"]
        event = events_pb2.BookingChanged.FromString(seen[1].data)
        assert event.booking_id == booking["id"] and event.status == "confirmed"
        assert seen[1].headers["ce-source"] == "cws/booking" and seen[1].headers["ce-type"] == seen[1].subject
        assert seen[1].headers["Nats-Msg-Id"] == seen[1].headers["ce-id"]
    finally:
        await nc.close()
