"""BOLA sweep: every route with an object id in its path, read from the gateway's own OpenAPI document,
called on a real object of org A by every staff role of org B, and the portal routes also by a
client and a worker of org B signed in to their portals (the client with the very email of org A's
client). Each must answer 403 or 404 (the portal users: 404), never a 2xx, and org A's objects must
be as they were afterwards.

A path parameter this test does not know how to fill fails the sweep, so a new route with an id is
covered the day it appears: give its kind a maker in `objects_of_org_a` (and its body in BODIES), or
list it in NOT_OBJECT_IDS with the reason."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from gateway.portal_auth import PORTAL_PREFIXES
from gateway.tests.test_accounting_export_routes import stored_export
from gateway.tests.test_outbox_routes import dead_row
from gateway.tests.test_photo_routes import jpeg_bytes
from tools.testkit import assert_clean, owner, staff

ROLES_OF_B = ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER")

# Path parameters that name an object of org A, and the kind of object each names.
KIND_OF_PARAMETER = {
    "user_id": "user",
    "lead_id": "lead",
    "booking_id": "booking",
    "job_id": "booking",  # the worker portal's name for a booking
    "team_id": "team",
    "worker_id": "worker",
    "blackout_id": "blackout",
    "event_id": "outbox_event",
    "dead_letter_id": "export_dead_letter",
    "invoice_id": "invoice",
    "payment_id": "payment",
    "export_id": "stored_export",  # a monthly accounting CSV kept for review (notify)
    "expense_id": "expense",
    "instalment_id": "instalment",
    "photo_id": "photo",  # a job photo (media), uploaded to org A's booking
    "order_id": "booking",  # seed 002's name for a booking in the client's photo download path
    "request_id": "deletion_request",  # a data deletion request (booking, seed 002's playbook)
}

# Path parameters that name no object of another org, and why the sweep does not apply to them.
NOT_OBJECT_IDS = {
    # An NPS link's token is a capability, public by design: whoever holds it may answer the survey;
    # no org role is involved (tested in services/booking/tests/test_nps.py).
    "token": None,
    # A verb after a job id (start/complete); the job id itself is swept.
    "action": "start",
    # A digest's name (daily, weekly...) inside the caller's own org's settings: org B writes its own.
    "digest_key": None,
}

# Bodies valid in shape, so that validation (422) cannot hide what the route does with the id;
# "{kind}" stands for the id of org A's object of that kind.
SOON = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/admin/bookings/{booking_id}/reschedule"): {
        "starts_at": (SOON + timedelta(days=1)).isoformat(),
        "duration_minutes": 60,
    },
    ("POST", "/v1/admin/bookings/{booking_id}/cancel"): {"reason": "org B says so"},
    # A's own team: only the booking's org can decide the answer.
    ("POST", "/v1/admin/bookings/{booking_id}/assign"): {"team_id": "{team}"},
    ("PATCH", "/v1/admin/teams/{team_id}"): {"name": "Taken by B"},
    ("PATCH", "/v1/admin/workers/{worker_id}"): {"name": "Taken by B"},
    ("PUT", "/v1/admin/invoices/{invoice_id}/items"): {
        "items": [{"description": "Taken by B", "quantity": "1", "unit_price_cents": 1, "tax_rate": "0"}]
    },
    ("POST", "/v1/admin/invoices/{invoice_id}/payments"): {"amount_cents": 100, "method": "cash"},
    ("PATCH", "/v1/admin/finance/expenses/{expense_id}"): {"vendor": "Taken by B"},
    ("PATCH", "/v1/admin/finance/tax-instalments/{instalment_id}"): {"reference": "Taken by B"},
    ("PUT", "/v1/admin/bookings/{booking_id}/photo-consent"): {"granted": True},
    ("PUT", "/v1/client/portal/bookings/{booking_id}/photo-consent"): {"granted": True},
    ("POST", "/v1/admin/photos/{photo_id}/needs-retake"): {"note": "Taken by B"},
}

# Staff credentials are no portal credentials: the portal routes answer them 401 before any id is
# looked at. A portal session of org B gets a 404 on its own portal's routes (PORTAL_USERS_OF_B).
PORTAL_REFUSALS = {401, 403, 404}
REFUSALS = {403, 404}
# The portal users of org B, and the routes whose sessions they hold.
PORTAL_USERS_OF_B = {"CLIENT": ("/v1/client/portal/", "/v1/orders/"), "WORKER": ("/v1/worker/portal/",)}
# Client portal routes outside the portal prefixes (seed 002's photo download path): portal credentials.
PORTAL_PATHS = (*PORTAL_PREFIXES, "/v1/orders/")


def routes_with_ids(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        if "{" in path
        for method, operation in operations.items()
    ]


async def objects_of_org_a(http: httpx.AsyncClient, url: str, org: Any, stack: Any) -> dict[str, str]:
    """One real object of every kind in KIND_OF_PARAMETER, made in org A."""
    headers = await owner(http, url, org)

    async def created(path: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        response = await http.post(f"{url}{path}", json=body, headers=extra.get("headers", headers))
        assert response.status_code == 201, f"{path}: {response.text}"
        return response.json()  # type: ignore[no-any-return]

    user = await created(
        "/v1/iam/users", {"email": f"a-{uuid.uuid4().hex[:8]}@example.com", "role": "VIEWER"}
    )
    lead = await created(
        "/v1/leads",
        {
            "name": "Lead of A",
            "phone": "780-555-0000",
            "email": "lead-of-a@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
        },
        headers={"X-Test-Org": org.org_id},
    )
    team = await created("/v1/admin/teams", {"name": "Team of A"})
    worker = await created("/v1/admin/workers", {"name": "Worker of A", "team_id": team["id"]})
    booking = await created(
        "/v1/admin/bookings",
        {
            "starts_at": SOON.isoformat(),
            "duration_minutes": 120,
            "client_name": "Client of A",
            "client_email": client_email_of(org),
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )
    blackout = await created(
        "/v1/admin/blackouts",
        {
            "team_id": team["id"],
            "starts_at": (SOON + timedelta(days=5)).isoformat(),
            "ends_at": (SOON + timedelta(days=6)).isoformat(),
        },
    )
    # An issued invoice of A's client, part paid by hand (its payment is the payment id swept).
    invoice = await created(
        "/v1/admin/invoices",
        {
            "client_name": "Client of A",
            "client_email": client_email_of(org),
            "items": [{"description": "Clean", "quantity": "1", "unit_price_cents": 10000, "tax_rate": "5"}],
        },
    )
    issued = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/issue", headers=headers)
    assert issued.status_code == 200, issued.text
    paid = await created(
        f"/v1/admin/invoices/{invoice['id']}/payments", {"amount_cents": 500, "method": "cash"}
    )
    expense = await created(
        "/v1/admin/finance/expenses",
        {"spent_on": "2026-01-05", "category": "supplies", "vendor": "Vendor of A", "amount_cents": 1000},
    )
    instalment = await created(
        "/v1/admin/finance/tax-instalments",
        {"period_start": "2026-01-01", "period_end": "2026-03-31", "amount_cents": 500, "reference": "of A"},
    )
    outbox_id, _ = await dead_row(stack, org.org_id)
    _, letter_id = await dead_row(stack, org.org_id, kind="webhook", letter=True)
    assert letter_id
    kept_export_id = await stored_export(stack, org.org_id)
    photo = await http.post(
        f"{url}/v1/admin/bookings/{booking['id']}/photos",
        files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")},
        headers=headers,
    )
    assert photo.status_code == 201, photo.text
    # A deletion request of someone who is no lead of A's: A's own objects stay as they are.
    deletion = await http.post(
        f"{url}/v1/admin/data-deletion/requests",
        json={"email": f"gone-{uuid.uuid4().hex[:8]}@example.com"},
        headers=headers,
    )
    assert deletion.status_code == 202, deletion.text
    return {
        "user": user["user"]["id"],
        "lead": lead["lead_id"],
        "team": team["id"],
        "worker": worker["id"],
        "booking": booking["id"],
        "blackout": blackout["id"],
        "outbox_event": outbox_id,
        "export_dead_letter": letter_id,
        "stored_export": kept_export_id,
        "invoice": invoice["id"],
        "payment": paid["payments"][0]["id"],
        "expense": expense["id"],
        "instalment": instalment["id"],
        "photo": photo.json()["photo_id"],
        "deletion_request": deletion.json()["id"],
    }


def client_email_of(org: Any) -> str:
    """Org A's client, whose email a client of org B shares: only the org tells them apart."""
    return f"client-{org.org_id[:8]}@example.com"


async def portal_sessions_of_org_b(
    http: httpx.AsyncClient, url: str, org: Any, email: str, smtp_sink: Any
) -> dict[str, dict[str, str]]:
    """A client of org B (signed in by the magic link notify emails) and a worker of org B (by the
    link an owner mints), each shown able to read their own portal."""
    owner_headers = await owner(http, url, org)
    requested = await http.post(
        f"{url}/client/login/request", json={"email": email}, headers={"X-Test-Org": org.org_id}
    )
    assert requested.status_code == 202, requested.text
    [mail] = await smtp_sink.delivered(email)
    found = re.search(r"(/client/login/callback\?token=\S+)", mail.text)
    assert found, mail.text
    worker = await http.post(f"{url}/v1/admin/workers", json={"name": "Worker of B"}, headers=owner_headers)
    issued = await http.post(
        f"{url}/v1/admin/workers/{worker.json()['id']}/portal-link", headers=owner_headers
    )
    assert issued.status_code == 200, issued.text
    sessions = {}
    for who, link in (("CLIENT", found.group(1)), ("WORKER", issued.json()["link"])):
        kind = who.lower()
        token = parse_qs(urlsplit(link).query)["token"][0]
        confirmed = await http.post(f"{url}/{kind}/login/confirm", json={"token": token})
        assert confirmed.status_code == 200, confirmed.text
        sessions[who] = {"Authorization": f"Bearer {confirmed.json()['session_token']}"}
        http.cookies.clear()
    for who, prefix in PORTAL_USERS_OF_B.items():
        own = await http.get(
            f"{url}{prefix[0]}{'bookings' if who == 'CLIENT' else 'jobs'}", headers=sessions[who]
        )
        assert own.status_code == 200, f"the {who} of org B cannot read their own portal: {own.text}"
    return sessions


async def sessions_of_org_b(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, dict[str, str]]:
    """Every staff role of org B, signed in; each shown able to work in its own org."""
    owner_headers = await owner(http, url, org)
    sessions = {"OWNER": owner_headers}
    for role in ROLES_OF_B[1:]:
        sessions[role] = await staff(http, url, owner_headers, role)
    for role, headers in sessions.items():
        # The control: a refusal below must come from the id, not from a dead or blocked session.
        own = await http.get(f"{url}/v1/admin/bookings", headers=headers)
        assert own.status_code == 200, f"{role} of org B cannot list its own bookings: {own.text}"
    return sessions


async def test_no_role_of_another_org_reaches_an_object_by_its_id(
    gateway, http, make_org, stack, smtp_sink
) -> None:
    org_a, org_b = await make_org("BOLA A"), await make_org("BOLA B")
    objects = await objects_of_org_a(http, gateway.url, org_a, stack)
    # Org A's worker signed in to their portal: no route swept below may end it (portal/revoke).
    worker_of_a = await worker_session_of(http, gateway.url, org_a, objects["worker"])
    sessions = await sessions_of_org_b(http, gateway.url, org_b)
    portal_users = await portal_sessions_of_org_b(http, gateway.url, org_b, client_email_of(org_a), smtp_sink)
    document = (await http.get(f"{gateway.url}/openapi.json")).json()
    routes = routes_with_ids(document)
    assert len(routes) >= 20, [f"{m} {p}" for m, p, _ in routes]

    unknown: list[str] = []
    leaks: list[str] = []
    swept: set[str] = set()
    portal_swept: set[str] = set()
    for method, path, operation in routes:
        values: dict[str, str] = {}
        for name in re.findall(r"{(\w+)}", path):
            if name in KIND_OF_PARAMETER:
                values[name] = objects[KIND_OF_PARAMETER[name]]
            elif name in NOT_OBJECT_IDS:
                if NOT_OBJECT_IDS[name] is None:
                    break  # this route addresses no object of another org
                values[name] = str(NOT_OBJECT_IDS[name])
            else:
                unknown.append(f"{method} {path}: no object of org A for {{{name}}}")
                break
        else:
            body = fill(BODIES.get((method, path)), objects)
            if operation.get("requestBody", {}).get("required") and body is None:
                unknown.append(f"{method} {path}: needs a body in BODIES")
                continue
            url = gateway.url + path.format(**values)
            allowed = PORTAL_REFUSALS if path.startswith(PORTAL_PATHS) else REFUSALS
            swept.add(f"{method} {path}")
            for role, headers in sessions.items():
                response = await http.request(method, url, headers=headers, json=body)
                assert_clean(response)
                if response.status_code not in allowed:
                    leaks.append(
                        f"{role} of org B: {method} {path} -> {response.status_code} {response.text[:200]}"
                    )
            for who, prefix in PORTAL_USERS_OF_B.items():
                if not path.startswith(prefix):
                    continue
                portal_swept.add(f"{who} {method} {path}")
                response = await http.request(method, url, headers=portal_users[who], json=body)
                assert_clean(response)
                if response.status_code != 404:
                    leaks.append(
                        f"{who} of org B: {method} {path} -> {response.status_code} {response.text[:200]}"
                    )
    assert not unknown, "routes with ids the sweep cannot fill:\n" + "\n".join(unknown)
    assert not leaks, "org B reached org A's objects:\n" + "\n".join(leaks)
    assert len(swept) >= 20, swept
    # The client's booking, the worker's job, and the worker's start/complete on it.
    assert len(portal_swept) >= 3, portal_swept
    await org_a_is_untouched(http, gateway.url, org_a, objects, worker_of_a)


async def worker_session_of(http: httpx.AsyncClient, url: str, org: Any, worker_id: str) -> dict[str, str]:
    """A portal session of one of the org's workers, as a bearer header (the link an owner mints)."""
    issued = await http.post(
        f"{url}/v1/admin/workers/{worker_id}/portal-link", headers=await owner(http, url, org)
    )
    assert issued.status_code == 200, issued.text
    confirmed = await http.post(f"{url}/worker/login/confirm", json={"token": issued.json()["token"]})
    assert confirmed.status_code == 200, confirmed.text
    http.cookies.clear()
    return {"Authorization": f"Bearer {confirmed.json()['session_token']}"}


async def org_a_is_untouched(
    http: httpx.AsyncClient, url: str, org: Any, objects: dict[str, str], worker_session: dict[str, str]
) -> None:
    jobs = await http.get(f"{url}/v1/worker/portal/jobs", headers=worker_session)
    assert jobs.status_code == 200, f"org A's worker lost their portal session: {jobs.text}"
    headers = await owner(http, url, org)
    booking = (await http.get(f"{url}/v1/admin/bookings/{objects['booking']}", headers=headers)).json()
    assert (booking["status"], booking["starts_at"][:19]) == ("pending", SOON.isoformat()[:19]), booking
    teams = (await http.get(f"{url}/v1/admin/teams", headers=headers)).json()
    assert {"id": objects["team"], "name": "Team of A", "active": True} in teams_of(teams)
    workers = (await http.get(f"{url}/v1/admin/workers", headers=headers)).text
    assert objects["worker"] in workers and "Worker of A" in workers
    blackouts = (await http.get(f"{url}/v1/admin/blackouts", headers=headers)).text
    assert objects["blackout"] in blackouts
    users = (await http.get(f"{url}/v1/iam/users", headers=headers)).json()["users"]
    assert any(u["id"] == objects["user"] and u["active"] for u in users)
    invoice = (await http.get(f"{url}/v1/admin/invoices/{objects['invoice']}", headers=headers)).json()
    assert (invoice["status"], invoice["paid_cents"], invoice["sent_at"], len(invoice["items"])) == (
        "PARTIAL",
        500,
        None,
        1,
    ), invoice
    expense = (
        await http.get(f"{url}/v1/admin/finance/expenses/{objects['expense']}", headers=headers)
    ).json()
    assert expense["vendor"] == "Vendor of A", expense
    instalment = await http.get(
        f"{url}/v1/admin/finance/tax-instalments/{objects['instalment']}", headers=headers
    )
    assert instalment.json()["reference"] == "of A", instalment.text


def fill(body: dict[str, Any] | None, objects: dict[str, str]) -> dict[str, Any] | None:
    if body is None:
        return None
    return {
        key: objects[value[1:-1]] if value in (f"{{{k}}}" for k in objects) else value
        for key, value in body.items()
    }


def teams_of(body: Any) -> list[dict[str, Any]]:
    return body["teams"] if isinstance(body, dict) else body  # type: ignore[no-any-return]


async def test_ids_in_bodies_of_the_data_protection_routes_stay_in_their_org(gateway, http, make_org) -> None:
    """The export and the deletion request name their person in the body (issue 13): org A's lead id
    sent by any role of org B is refused or not found, and org A's lead is left as it was."""
    org_a, org_b = await make_org("BOLA body A"), await make_org("BOLA body B")
    url = gateway.url
    lead = await http.post(
        f"{url}/v1/leads",
        json={
            "name": "Lead of A",
            "phone": "780-555-0000",
            "email": f"lead-{uuid.uuid4().hex[:8]}@example.com",
            "postal_code": "T5J0N3",
            "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
        },
        headers={"X-Test-Org": org_a.org_id},
    )
    assert lead.status_code == 201, lead.text
    lead_id = lead.json()["lead_id"]
    sessions = await sessions_of_org_b(http, url, org_b)
    leaks = []
    for path in ("/v1/admin/data/export", "/v1/admin/data-deletion/requests"):
        for role, headers in sessions.items():
            response = await http.post(f"{url}{path}", headers=headers, json={"lead_id": lead_id})
            assert_clean(response)
            if response.status_code not in REFUSALS:
                leaks.append(f"{role} of org B: POST {path} -> {response.status_code} {response.text[:200]}")
    assert not leaks, "org B reached org A's lead:\n" + "\n".join(leaks)
    a = await owner(http, url, org_a)
    assert (await http.get(f"{url}/v1/admin/data-deletion/requests", headers=a)).json()["requests"] == []
    kept = await http.get(f"{url}/v1/admin/leads/{lead_id}", headers=a)
    assert kept.status_code == 200 and kept.json()["name"] == "Lead of A", kept.text
