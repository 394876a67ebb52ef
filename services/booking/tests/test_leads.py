"""Seed 004 smoke tests and lead intake at the gateway: org resolution, validation, idempotency,
Turnstile (a local server stands in for the verify endpoint), and the org profile created from IAM's
org.created event."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import psycopg
import pytest

from services.booking.tests.helpers import applied_profile
from tools import testkit
from tools.devstack import free_port
from tools.testkit import assert_clean, assert_problem

LEAD = {
    "name": "Smoke Lead",
    "phone": "780-555-0000",
    "email": "lead@example.com",
    "postal_code": "T5J0N3",
    "structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "standard"},
}


async def test_seed_004_curl_lines_work_as_written_with_default_org(gateways, http, make_org):
    org = await make_org()
    gateway = gateways.get(DEFAULT_ORG_ID=org.org_id)
    estimate = await http.post(
        f"{gateway.url}/v1/estimate", json={"beds": 2, "baths": 1.5, "cleaning_type": "deep"}
    )
    assert estimate.status_code == 200, estimate.text
    body = estimate.json()
    assert uuid.UUID(body["pricing_config_id"])
    assert body["total_before_tax"] == body["total_before_tax_cents"] / 100 > 0
    assert sum(line["amount_cents"] for line in body["breakdown"]) == body["total_before_tax_cents"]

    lead = await http.post(f"{gateway.url}/v1/leads", json=LEAD)
    assert lead.status_code == 201, lead.text
    created = lead.json()
    assert uuid.UUID(created["lead_id"])
    assert created["phone"] == "+17805550000" and created["postal_code"] == "T5J 0N3"
    assert created["estimate"]["pricing_config_id"] == body["pricing_config_id"]

    owner = await testkit.owner(http, gateway.url, org)
    listed = await http.get(f"{gateway.url}/v1/admin/leads", headers=owner)
    assert [item["lead_id"] for item in listed.json()["leads"]] == [created["lead_id"]]
    one = await http.get(f"{gateway.url}/v1/admin/leads/{created['lead_id']}", headers=owner)
    assert one.status_code == 200 and one.json()["estimate"] == created["estimate"]


async def test_org_profile_comes_from_iam_event_and_public_key_selects_the_org(
    gateway, http, stack, make_org
):
    name = f"Edmonton Sparkle {uuid.uuid4().hex[:6]}"
    created = await make_org(name, time_zone="America/Edmonton")
    # The booking service consumes cws.iam.org.created.
    public_key, time_zone, stored_name = await applied_profile(stack, created.org_id)
    assert time_zone == "America/Edmonton" and stored_name == name
    assert public_key.startswith("edmonton-sparkle-")

    lead = await http.post(f"{gateway.url}/v1/leads", json=LEAD, headers={"X-Org-Key": public_key})
    assert lead.status_code == 201, lead.text
    with psycopg.connect(stack.admin_url) as conn:
        owner_org = conn.execute(
            "SELECT org_id FROM booking.leads WHERE id = %s", (lead.json()["lead_id"],)
        ).fetchone()
    assert str(owner_org[0]) == str(created.org_id)

    unknown = await http.post(
        f"{gateway.url}/v1/estimate",
        headers={"X-Org-Key": "no-such-org"},
        json={"beds": 1, "baths": 1, "cleaning_type": "standard"},
    )
    assert_problem(unknown, 404, "unknown_org")


async def test_public_endpoints_without_any_org_are_refused(gateway, http):
    response = await http.post(
        f"{gateway.url}/v1/estimate", json={"beds": 1, "baths": 1, "cleaning_type": "deep"}
    )
    assert_problem(response, 403, "org_required")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"beds": -1, "baths": 1, "cleaning_type": "deep"}, "beds"),
        ({"beds": 500, "baths": 1, "cleaning_type": "deep"}, "beds"),
        ({"beds": 1, "baths": 1.25, "cleaning_type": "deep"}, "baths"),
        ({"beds": 1, "baths": 1, "cleaning_type": "palace"}, "cleaning_type"),
        ({"beds": "two", "baths": 1, "cleaning_type": "deep"}, "beds"),
        ({"beds": 1, "baths": 1, "cleaning_type": "deep", "pets": 3}, "pets"),
    ],
)
async def test_estimate_bad_input_is_422_naming_the_field(gateway, http, make_org, payload, field):
    org = await make_org()
    response = await http.post(f"{gateway.url}/v1/estimate", json=payload, headers={"X-Test-Org": org.org_id})
    body = assert_problem(response, 422)
    assert any(field in error["field"] for error in body["errors"]), body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "not a phone"}, "phone"),
        ({"email": "nobody@"}, "email"),
        ({"postal_code": "12345"}, "postal_code"),
        ({"name": "x" * 201}, "name"),
        ({"notes": "n" * 2001}, "notes"),
        ({"structured_inputs": {"beds": 1, "baths": 1, "cleaning_type": "palace"}}, "cleaning_type"),
    ],
)
async def test_lead_bad_input_is_422_naming_the_field(gateway, http, make_org, change, field):
    org = await make_org()
    response = await http.post(
        f"{gateway.url}/v1/leads", json={**LEAD, **change}, headers={"X-Test-Org": org.org_id}
    )
    body = assert_problem(response, 422)
    assert any(field in error["field"] for error in body["errors"]), body


async def test_idempotency_key_returns_the_first_lead_even_under_concurrency(gateway, http, make_org):
    org = await make_org()
    headers = {"X-Test-Org": org.org_id, "Idempotency-Key": f"lead-{uuid.uuid4()}"}
    first = await http.post(f"{gateway.url}/v1/leads", json=LEAD, headers=headers)
    again = await http.post(f"{gateway.url}/v1/leads", json=LEAD, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers

    racing = {"X-Test-Org": org.org_id, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    results = await asyncio.gather(
        *(http.post(f"{gateway.url}/v1/leads", json=LEAD, headers=racing) for _ in range(8))
    )
    assert {r.status_code for r in results} == {201}
    assert len({r.json()["lead_id"] for r in results}) == 1

    owner = await testkit.owner(http, gateway.url, org)
    listed = await http.get(f"{gateway.url}/v1/admin/leads", headers=owner)
    assert listed.json()["total"] == 2


VICTIM = {
    "name": "Vera Victim",
    "phone": "780-555-0199",
    "email": "vera.victim@example.com",
    "postal_code": "T5J0N3",
    "notes": "gate code 4417, key under the mat",
    "structured_inputs": {"beds": 3, "baths": 2, "cleaning_type": "deep"},
}


@pytest.mark.parametrize(
    "attack",
    [
        LEAD,  # a whole other lead
        {**VICTIM, "notes": ""},  # everything but the notes, to read them back
        {**VICTIM, "name": "Vera Victim "},  # one character off
        {**VICTIM, "structured_inputs": {"beds": 3, "baths": 2.5, "cleaning_type": "deep"}},
    ],
)
async def test_someone_elses_idempotency_key_with_another_body_is_422_and_reveals_nothing(
    gateway, http, make_org, attack
):
    """Issue 9, hole 3: an anonymous caller who learns (or guesses) a key someone else used gets none
    of that person's lead back, only a 422 that the key was used for another request."""
    org = await make_org()
    key = f"lead-{uuid.uuid4()}"
    victim = await http.post(
        f"{gateway.url}/v1/leads", json=VICTIM, headers={"X-Test-Org": org.org_id, "Idempotency-Key": key}
    )
    assert victim.status_code == 201, victim.text

    stolen = await http.post(
        f"{gateway.url}/v1/leads", json=attack, headers={"X-Test-Org": org.org_id, "Idempotency-Key": key}
    )
    body = assert_problem(stolen, 422, "idempotency_key_reused")
    assert "idempotent-replayed" not in stolen.headers
    for secret in (
        "Vera",
        "Victim",
        "0199",
        "vera.victim",
        "4417",
        "under the mat",
        victim.json()["lead_id"],
    ):
        assert secret not in stolen.text, body

    # The victim's own retry is still answered with their lead, and nobody made a second one.
    retry = await http.post(
        f"{gateway.url}/v1/leads", json=VICTIM, headers={"X-Test-Org": org.org_id, "Idempotency-Key": key}
    )
    assert retry.status_code == 201 and retry.json() == victim.json()
    assert retry.headers.get("idempotent-replayed") == "true"
    owner = await testkit.owner(http, gateway.url, org)
    listed = await http.get(f"{gateway.url}/v1/admin/leads", headers=owner)
    assert [lead["lead_id"] for lead in listed.json()["leads"]] == [victim.json()["lead_id"]]


async def test_a_race_of_two_bodies_on_one_key_makes_one_lead_and_refuses_the_other_body(
    gateway, http, make_org
):
    """Both bodies race into the insert: the loser's ON CONFLICT path checks the fingerprint too."""
    org = await make_org()
    headers = {"X-Test-Org": org.org_id, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    bodies = [LEAD, VICTIM] * 4
    results = await asyncio.gather(
        *(http.post(f"{gateway.url}/v1/leads", json=body, headers=headers) for body in bodies)
    )
    won = [(body, r) for body, r in zip(bodies, results, strict=True) if r.status_code == 201]
    assert won, [r.text for r in results]
    assert len({r.json()["lead_id"] for _, r in won}) == 1
    assert len({body["name"] for body, _ in won}) == 1  # only the winner's body is ever answered
    for body, response in zip(bodies, results, strict=True):
        if body["name"] != won[0][0]["name"]:
            assert_problem(response, 422, "idempotency_key_reused")
            assert won[0][1].json()["lead_id"] not in response.text


async def test_a_lead_stored_before_fingerprints_is_never_replayed(gateway, http, stack, make_org):
    """Rows from before migration 0004 have no fingerprint: nothing proves the retry is the same
    request, so the key is refused rather than answered with the stored lead (docs/booking.md)."""
    org = await make_org()
    headers = {"X-Test-Org": org.org_id, "Idempotency-Key": f"legacy-{uuid.uuid4()}"}
    first = await http.post(f"{gateway.url}/v1/leads", json=VICTIM, headers=headers)
    assert first.status_code == 201, first.text
    # As superuser, behind booking's back: make the row look like one stored before the migration.
    await testkit.sql(
        stack.admin_url,
        "UPDATE booking.leads SET idempotency_fingerprint = NULL WHERE id = %s",
        (first.json()["lead_id"],),
    )
    again = await http.post(f"{gateway.url}/v1/leads", json=VICTIM, headers=headers)
    assert_problem(again, 422, "idempotency_key_reused")
    assert "vera.victim" not in again.text


class Turnstile:
    """A local server standing in for Cloudflare's siteverify endpoint."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                outer.seen.append(form)
                ok = form.get("response") == ["good-token"] and form.get("secret") == ["turnstile-secret"]
                payload = json.dumps({"success": ok}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_turnstile_captcha_when_enabled(gateways, http, make_org):
    turnstile = Turnstile()
    try:
        gateway = gateways.get(
            CAPTCHA_MODE="turnstile",
            TURNSTILE_SECRET_KEY="turnstile-secret",
            TURNSTILE_VERIFY_URL=f"http://127.0.0.1:{turnstile.port}/siteverify",
        )
        org = await make_org()
        headers = {"X-Test-Org": org.org_id}
        missing = await http.post(f"{gateway.url}/v1/leads", json=LEAD, headers=headers)
        assert_problem(missing, 400, "captcha_required")
        failed = await http.post(
            f"{gateway.url}/v1/leads", json={**LEAD, "captcha_token": "bad"}, headers=headers
        )
        assert_problem(failed, 400, "captcha_failed")
        passed = await http.post(
            f"{gateway.url}/v1/leads", json={**LEAD, "captcha_token": "good-token"}, headers=headers
        )
        assert passed.status_code == 201, passed.text
        via_header = await http.post(
            f"{gateway.url}/v1/leads", json=LEAD, headers={**headers, "CF-Turnstile-Response": "good-token"}
        )
        assert via_header.status_code == 201, via_header.text
        assert turnstile.seen[-1]["remoteip"] == ["127.0.0.1"]
    finally:
        turnstile.close()
    started = time.monotonic()
    down = await http.post(
        f"{gateway.url}/v1/leads", json={**LEAD, "captcha_token": "good-token"}, headers=headers
    )
    assert_problem(down, 503, "captcha_unavailable")
    assert time.monotonic() - started < 10
    assert_clean(down)


async def test_subdomain_of_public_base_domain_selects_the_org(gateways, http, stack, make_org):
    org = await make_org(f"Sub Domain {uuid.uuid4().hex[:6]}")
    key, _, _ = await applied_profile(stack, org.org_id)  # from IAM's org.created event
    gateway = gateways.get(PUBLIC_BASE_DOMAIN="cleaning.test")
    lead = await http.post(f"{gateway.url}/v1/leads", json=LEAD, headers={"Host": f"{key}.cleaning.test"})
    assert lead.status_code == 201, lead.text
    with psycopg.connect(stack.admin_url) as conn:
        owner_org = conn.execute(
            "SELECT org_id FROM booking.leads WHERE id = %s", (lead.json()["lead_id"],)
        ).fetchone()
    assert str(owner_org[0]) == org.org_id
    elsewhere = await http.post(
        f"{gateway.url}/v1/leads", json=LEAD, headers={"Host": "nobody.cleaning.test"}
    )
    assert_problem(elsewhere, 404, "unknown_org")
