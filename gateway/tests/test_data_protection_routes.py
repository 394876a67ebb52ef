"""Seed 002's data export/delete playbook through the gateway in front of the real services (issue 13):
the export bundle by lead id or by email, gathered from every service; deletion requests recorded,
listed and read, asking twice answering the same request; the retention cleanup working on them;
OWNER/ADMIN only; bad input as Problem+JSON naming the problem; another org's lead and request ids
404; and an export failing (503 naming the service) rather than coming back incomplete.

The erasure itself, service by service and with one service stopped, is tests/test_erasure.py's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tools.devstack import free_port
from tools.testkit import assert_problem, owner, staff

SECTIONS = {
    "leads",
    "bookings",
    "nps",
    "invoices",
    "payments",
    "refunds",
    "emails",
    "photos",
    "photo_consents",
    "portal_access",
}
EXPORT = "/v1/admin/data/export"
REQUESTS = "/v1/admin/data-deletion/requests"
STEP_KEYS = {"name", "done", "done_at", "attempts", "last_error"}


async def person_with_records(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, str]:
    """A lead, a booking from it and an issued invoice for the same email, part paid. Their ids."""
    headers = await owner(http, url, org)
    email = f"Person.{uuid.uuid4().hex[:8]}@Example.com"
    lead = await http.post(
        f"{url}/v1/leads",
        headers={"X-Test-Org": org.org_id},
        json={
            "name": "Petra Person",
            "phone": "780-555-0142",
            "email": email,
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 2, "baths": 1, "cleaning_type": "standard"},
        },
    )
    assert lead.status_code == 201, lead.text
    lead_id = lead.json()["lead_id"]
    starts = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    booking = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={"lead_id": lead_id, "starts_at": starts.isoformat(), "duration_minutes": 90},
    )
    assert booking.status_code == 201, booking.text
    invoice = await http.post(
        f"{url}/v1/admin/invoices",
        headers=headers,
        json={
            "client_name": "Petra Person",
            "client_email": email.lower(),
            "booking_id": booking.json()["id"],
            "items": [{"description": "Clean", "quantity": "1", "unit_price_cents": 9000, "tax_rate": "5"}],
        },
    )
    assert invoice.status_code == 201, invoice.text
    invoice_id = invoice.json()["id"]
    assert (
        await http.post(f"{url}/v1/admin/invoices/{invoice_id}/issue", headers=headers)
    ).status_code == 200
    paid = await http.post(
        f"{url}/v1/admin/invoices/{invoice_id}/payments",
        headers=headers,
        json={"amount_cents": 4000, "method": "cash"},
    )
    assert paid.status_code == 201, paid.text
    return {"lead_id": lead_id, "email": email, "booking_id": booking.json()["id"], "invoice_id": invoice_id}


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def assert_bundle(body: dict[str, Any]) -> None:
    assert body.keys() >= SECTIONS | {"subject", "generated_at"}, body.keys()
    for section in SECTIONS:
        assert isinstance(body[section], list), section
    # Metadata only: nothing that opens a photo or an invoice, or signs someone in.
    leaked = {k for k in keys_of(body) if "token" in k.lower() or k.lower() in {"url", "signed_url", "link"}}
    assert not leaked, leaked


async def test_an_export_by_lead_id_or_by_email_gathers_every_service(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    person = await person_with_records(http, url, org)
    headers = await owner(http, url, org)

    by_lead = await http.post(f"{url}{EXPORT}", headers=headers, json={"lead_id": person["lead_id"]})
    assert by_lead.status_code == 200, by_lead.text
    body = by_lead.json()
    assert_bundle(body)
    assert body["subject"] == {"lead_id": person["lead_id"]}
    assert person["lead_id"] in {r.get("id") for r in body["leads"]}, body["leads"]
    assert person["booking_id"] in {r.get("id") for r in body["bookings"]}, body["bookings"]
    assert person["invoice_id"] in {r.get("id") for r in body["invoices"]}, body["invoices"]
    assert [p["amount_cents"] for p in body["payments"]] == [4000], body["payments"]
    assert isinstance(body["payments"][0]["amount_cents"], int)  # a whole number, not 4000.0

    # The same person by email, in any case.
    by_email = await http.post(f"{url}{EXPORT}", headers=headers, json={"email": person["email"].upper()})
    assert by_email.status_code == 200, by_email.text
    again = by_email.json()
    assert again["subject"] == {"email": person["email"].lower()}
    assert {r.get("id") for r in again["leads"]} == {r.get("id") for r in body["leads"]}
    assert {r.get("id") for r in again["invoices"]} == {r.get("id") for r in body["invoices"]}

    # Somebody the org never met: the empty bundle, not an error.
    nobody = await http.post(f"{url}{EXPORT}", headers=headers, json={"email": "nobody-here@example.com"})
    assert nobody.status_code == 200, nobody.text
    assert_bundle(nobody.json())
    assert all(nobody.json()[section] == [] for section in SECTIONS), nobody.json()


async def test_bad_input_is_a_clear_422(gateway, http, make_org):
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    cases = [
        ({}, "exactly one"),
        ({"lead_id": str(uuid.uuid4()), "email": "a@example.com"}, "exactly one"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"lead_id": "not-a-uuid"}, "UUID"),
        ({"email": "a@example.com", "extra": 1}, "extra"),
        ({"email": "a@example.com" + "x" * 400}, "email"),
    ]
    for path in (EXPORT, REQUESTS):
        for body, needle in cases:
            problem = assert_problem(await http.post(f"{gateway.url}{path}", headers=headers, json=body), 422)
            text = " ".join(f"{e['field']} {e['message']}" for e in problem["errors"])
            assert needle.lower() in text.lower(), (path, body, problem)
        broken = {**headers, "Content-Type": "application/json"}
        assert_problem(await http.post(f"{gateway.url}{path}", headers=broken, content=b"{"), 400)
    for bad in ("not-a-uuid", "1"):
        problem = assert_problem(await http.get(f"{gateway.url}{REQUESTS}/{bad}", headers=headers), 422)
        assert problem["errors"][0]["field"] == "request_id"
    assert_problem(await http.get(f"{gateway.url}{REQUESTS}", headers=headers, params={"limit": 0}), 422)
    assert_problem(await http.get(f"{gateway.url}{REQUESTS}", headers=headers, params={"status": "x"}), 422)
    assert_problem(await http.get(f"{gateway.url}{REQUESTS}/{uuid.uuid4()}", headers=headers), 404)


async def test_managers_only(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    body = {"email": "someone@example.com"}
    admin = await staff(http, url, headers, "ADMIN")
    assert (await http.post(f"{url}{EXPORT}", headers=admin, json=body)).status_code == 200
    for role in ("FINANCE", "DISPATCHER", "VIEWER"):
        session = await staff(http, url, headers, role)
        assert_problem(await http.post(f"{url}{EXPORT}", headers=session, json=body), 403, "forbidden_role")
        assert_problem(await http.post(f"{url}{REQUESTS}", headers=session, json=body), 403, "forbidden_role")
        assert_problem(await http.get(f"{url}{REQUESTS}", headers=session), 403, "forbidden_role")
    assert_problem(await http.post(f"{url}{EXPORT}", json=body), 401)
    assert_problem(await http.post(f"{url}{REQUESTS}", json=body), 401)


async def test_a_deletion_request_is_recorded_once_listed_and_worked_on(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    person = await person_with_records(http, url, org)
    headers = await owner(http, url, org)

    created = await http.post(f"{url}{REQUESTS}", headers=headers, json={"lead_id": person["lead_id"]})
    assert created.status_code == 202, created.text
    request = created.json()
    assert request["created"] is True and request["status"] == "pending", request
    assert request["matched_leads"] == 1 and request["subject"] == f"lead:{person['lead_id']}", request
    assert request["created_at"] and request["completed_at"] is None
    for step in request["steps"]:
        assert step.keys() >= STEP_KEYS, step
    # Asking again answers the open request.
    again = await http.post(f"{url}{REQUESTS}", headers=headers, json={"lead_id": person["lead_id"]})
    assert again.status_code == 202, again.text
    assert (again.json()["id"], again.json()["created"]) == (request["id"], False)

    listed = await http.get(f"{url}{REQUESTS}", headers=headers, params={"status": "pending"})
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()["requests"]] == [request["id"]]
    one = await http.get(f"{url}{REQUESTS}/{request['id']}", headers=headers)
    assert one.status_code == 200 and one.json()["id"] == request["id"], one.text

    # The retention cleanup works on it and says so.
    run = await http.post(f"{url}/v1/admin/retention/cleanup", headers=headers)
    assert run.status_code == 200, run.text
    counts = run.json()
    assert set(counts) == {
        "deleted",
        "deletion_requests_processed",
        "deletion_requests_completed",
        "deletion_steps_failed",
    }, counts
    assert all(isinstance(v, int) for v in counts.values()), counts
    assert counts["deletion_requests_processed"] >= 1, counts
    after = (await http.get(f"{url}{REQUESTS}/{request['id']}", headers=headers)).json()
    assert after["status"] == "completed" and after["completed_at"], after
    assert all(step["done"] and step["done_at"] for step in after["steps"]), after["steps"]
    done = await http.get(f"{url}{REQUESTS}", headers=headers, params={"status": "completed"})
    assert [r["id"] for r in done.json()["requests"]] == [request["id"]]


async def test_nothing_crosses_orgs(gateway, http, make_org):
    url = gateway.url
    org_a, org_b = await make_org(), await make_org()
    person = await person_with_records(http, url, org_a)
    a, b = await owner(http, url, org_a), await owner(http, url, org_b)
    request = await http.post(
        f"{url}{REQUESTS}", headers=a, json={"email": f"x-{uuid.uuid4().hex[:6]}@e.com"}
    )
    assert request.status_code == 202, request.text

    assert_problem(await http.post(f"{url}{EXPORT}", headers=b, json={"lead_id": person["lead_id"]}), 404)
    assert_problem(await http.post(f"{url}{REQUESTS}", headers=b, json={"lead_id": person["lead_id"]}), 404)
    assert_problem(await http.get(f"{url}{REQUESTS}/{request.json()['id']}", headers=b), 404)
    assert (await http.get(f"{url}{REQUESTS}", headers=b)).json()["requests"] == []
    # Org B asking by org A's person's email finds nothing of org A's.
    found = await http.post(f"{url}{EXPORT}", headers=b, json={"email": person["email"]})
    assert found.status_code == 200, found.text
    assert all(found.json()[section] == [] for section in SECTIONS), found.json()
    # Org A's lead is not pending deletion because of org B.
    lead = await http.get(f"{url}/v1/admin/leads/{person['lead_id']}", headers=a)
    assert lead.status_code == 200, lead.text
    assert lead.json()["email"].lower() == person["email"].lower(), lead.text


async def test_an_export_that_would_be_incomplete_fails_naming_the_service(gateways, gateway, http, make_org):
    org = await make_org()
    person = await person_with_records(http, gateway.url, org)
    gw = gateways.get(MEDIA_GRPC_TARGET=f"127.0.0.1:{free_port()}")
    headers = await owner(http, gw.url, org)
    problem = assert_problem(
        await http.post(f"{gw.url}{EXPORT}", headers=headers, json={"lead_id": person["lead_id"]}), 503
    )
    assert "media" in problem["detail"], problem


async def test_read_only_mode_refuses_the_writes_and_keeps_the_reads(gateways, gateway, http, make_org):
    org = await make_org()
    gw = gateways.get(ADMIN_READ_ONLY="true")
    headers = await owner(http, gw.url, org)
    body = {"email": "someone@example.com"}
    assert_problem(await http.post(f"{gw.url}{REQUESTS}", headers=headers, json=body), 409, "read_only")
    # The export writes its audit entry and hands out all the org holds about someone: refused too.
    assert_problem(await http.post(f"{gw.url}{EXPORT}", headers=headers, json=body), 409, "read_only")
    listed = await http.get(f"{gw.url}{REQUESTS}", headers=headers)
    assert listed.status_code == 200 and listed.json() == {"requests": []}, listed.text
