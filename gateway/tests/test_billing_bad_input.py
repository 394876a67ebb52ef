"""Billing's refusals at the gateway: each bad input a clear 4xx Problem+JSON naming what is wrong, and
nothing written; the roles of seed 002 (finance or higher, Basic Auth's accountant pair); a client of
the same org never reaching another client's invoice; and the webhook refusing what Stripe did not
sign, with this secret, lately, as JSON."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

import httpx

from conftest import STRIPE_TEST_WEBHOOK_SECRET
from gateway.tests.test_billing_routes import CLEAN, issued_invoice, new_invoice
from tools.stripe_local import sign
from tools.testkit import assert_problem, owner, sql, staff

STRONG = "Strong-accountant-pass-" + "7c1e9a2b"


def fields(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors") or []}


async def test_bad_invoices_and_payments_are_refused_and_change_nothing(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    body = {"client_name": "Ada", "client_email": "ada@example.com", "items": [CLEAN]}

    unknown = await http.post(f"{url}/v1/admin/invoices", headers=headers, json={**body, "currency": "XYZ"})
    assert "currency" in fields(assert_problem(unknown, 422))
    bad_line = {**CLEAN, "quantity": "lots", "tax_rate": "101"}
    lines = await http.post(f"{url}/v1/admin/invoices", headers=headers, json={**body, "items": [bad_line]})
    assert {"items.0.quantity", "items.0.tax_rate"} <= fields(assert_problem(lines, 422))
    none = await http.post(f"{url}/v1/admin/invoices", headers=headers, json={**body, "items": []})
    assert_problem(none, 422)
    bad_date = await http.post(
        f"{url}/v1/admin/invoices", headers=headers, json={**body, "due_date": "tomorrow"}
    )
    assert_problem(bad_date, 422)
    assert await sql(
        stack.admin_url, "SELECT count(*) FROM billing.invoices WHERE org_id = %s", (org.org_id,)
    ) == [(0,)], "no refused invoice was written"

    invoice = await issued_invoice(http, url, headers)
    pay = f"{url}/v1/admin/invoices/{invoice['id']}/payments"
    for amount in (0, -100):
        refused = await http.post(pay, headers=headers, json={"amount_cents": amount, "method": "cash"})
        assert "amount_cents" in str(assert_problem(refused, 422)), refused.text
    card = await http.post(pay, headers=headers, json={"amount_cents": 100, "method": "card"})
    assert_problem(card, 422)
    future = await http.post(
        pay,
        headers=headers,
        json={"amount_cents": 100, "method": "cash", "received_at": "2999-01-01T00:00:00Z"},
    )
    assert "received_at" in fields(assert_problem(future, 422))
    assert await sql(
        stack.admin_url, "SELECT count(*) FROM billing.invoice_payments WHERE org_id = %s", (org.org_id,)
    ) == [(0,)], "no refused payment was written"

    void = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/void", headers=headers)
    assert void.status_code == 200, void.text
    on_void = await http.post(pay, headers=headers, json={"amount_cents": 100, "method": "cash"})
    assert_problem(on_void, 409, "invoice_not_payable")
    send_void = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/send", headers=headers)
    assert_problem(send_void, 409, "invoice_not_sendable")
    draft = await new_invoice(http, url, headers)
    pdf = await http.get(f"{url}/v1/admin/invoices/{draft['id']}/pdf", headers=headers)
    assert_problem(pdf, 409, "invoice_not_issued")
    link = await http.post(f"{url}/v1/admin/invoices/{draft['id']}/checkout", headers=headers)
    assert_problem(link, 409, "invoice_not_payable")
    assert_problem(await http.get(f"{url}/v1/admin/invoices/not-an-id", headers=headers), 422)
    assert_problem(await http.get(f"{url}/v1/admin/invoices/{uuid.uuid4()}", headers=headers), 404)
    queue = await http.get(f"{url}/v1/admin/queue/invoices", headers=headers, params={"status": "late"})
    assert_problem(queue, 422)


async def test_finance_roles_and_the_accountant_pair(gateways, gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    invoice = await issued_invoice(http, url, headers)
    finance = await staff(http, url, headers, "FINANCE")
    seen = await http.get(f"{url}/v1/admin/invoices/{invoice['id']}", headers=finance)
    assert seen.status_code == 200, seen.text
    for role in ("DISPATCHER", "VIEWER"):
        other = await staff(http, url, headers, role)
        refused = await http.get(f"{url}/v1/admin/queue/invoices", headers=other)
        assert_problem(refused, 403, "forbidden_role")
    # The seed's Basic Auth finance pair (ACCOUNTANT_BASIC_*): FINANCE in the org it acts in.
    basic_gw = gateways.get(
        ACCOUNTANT_BASIC_USERNAME="accountant",
        ACCOUNTANT_BASIC_PASSWORD=STRONG,
        LEGACY_BASIC_AUTH_ENABLED="true",
    )
    pair = {
        "Authorization": "Basic " + base64.b64encode(f"accountant:{STRONG}".encode()).decode(),
        "X-Test-Org": org.org_id,
    }
    queue = await http.get(
        f"{basic_gw.url}/v1/admin/queue/invoices", headers=pair, params={"status": "unpaid"}
    )
    assert queue.status_code == 200, queue.text
    assert [i["id"] for i in queue.json()["items"]] == [invoice["id"]]
    mismatches = await http.get(f"{basic_gw.url}/v1/admin/finance/reconcile/invoices", headers=pair)
    assert mismatches.status_code == 200 and mismatches.json()["items"] == [], mismatches.text


async def test_a_client_sees_only_their_own_issued_invoices(gateway, http, make_org, smtp_sink):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    mine = f"mine-{uuid.uuid4().hex[:8]}@example.com"
    own = await issued_invoice(http, url, headers, client_email=mine)
    await new_invoice(http, url, headers, client_email=mine)  # a draft: not shown to the client
    theirs = await issued_invoice(http, url, headers)
    requested = await http.post(
        f"{url}/client/login/request", json={"email": mine}, headers={"X-Test-Org": org.org_id}
    )
    assert requested.status_code == 202, requested.text
    [mail] = await smtp_sink.delivered(mine)
    token = re.search(r"token=([^\s&]+)", mail.text).group(1)  # type: ignore[union-attr]
    confirmed = await http.post(f"{url}/client/login/confirm", json={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    http.cookies.clear()
    client = {"Authorization": f"Bearer {confirmed.json()['session_token']}"}

    listed = await http.get(f"{url}/v1/client/portal/invoices", headers=client)
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()["invoices"]] == [own["id"]]
    assert "reference" not in str(listed.json()["invoices"][0]["payments"])
    one = await http.get(f"{url}/v1/client/portal/invoices/{own['id']}", headers=client)
    assert one.status_code == 200 and one.json()["number"] == own["number"], one.text
    pdf = await http.get(f"{url}/v1/client/portal/invoices/{own['id']}/pdf", headers=client)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    pay = await http.post(f"{url}/v1/client/portal/invoices/{own['id']}/checkout", headers=client)
    assert pay.status_code == 200 and pay.json()["amount_cents"] == own["total_cents"], pay.text
    for path in (f"invoices/{theirs['id']}", f"invoices/{theirs['id']}/pdf"):
        assert_problem(await http.get(f"{url}/v1/client/portal/{path}", headers=client), 404)
    assert_problem(
        await http.post(f"{url}/v1/client/portal/invoices/{theirs['id']}/checkout", headers=client), 404
    )
    # Staff credentials are not a client session.
    assert_problem(await http.get(f"{url}/v1/client/portal/invoices", headers=headers), 401)


def stripe_event(org_id: str, invoice_id: str) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": f"pi_{uuid.uuid4().hex[:24]}",
                "object": "payment_intent",
                "amount": 100,
                "amount_received": 100,
                "currency": "cad",
                "status": "succeeded",
                "metadata": {"org_id": org_id, "invoice_id": invoice_id, "purpose": "invoice"},
            }
        },
    }


async def test_the_webhook_refuses_what_stripe_did_not_sign(gateway, http, make_org, stack):
    url = f"{gateway.url}/v1/webhooks/stripe"
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    invoice = await issued_invoice(http, gateway.url, headers)
    payload = json.dumps(stripe_event(org.org_id, invoice["id"])).encode()

    async def deliver(body: bytes, signature: str | None) -> httpx.Response:
        extra = {"Stripe-Signature": signature} if signature is not None else {}
        return await http.post(url, content=body, headers={"Content-Type": "application/json", **extra})

    missing = await deliver(payload, None)
    assert "Stripe-Signature" in fields(assert_problem(missing, 400, "webhook_rejected"))
    other = await deliver(payload, sign(payload, "whsec_someone_else"))
    assert "signature does not match" in assert_problem(other, 400, "webhook_rejected")["detail"]
    stale = await deliver(payload, sign(payload, STRIPE_TEST_WEBHOOK_SECRET, int(time.time()) - 1000))
    assert "tolerance" in assert_problem(stale, 400, "webhook_rejected")["detail"]
    changed = await deliver(
        payload.replace(b'"amount": 100', b'"amount": 999'), sign(payload, STRIPE_TEST_WEBHOOK_SECRET)
    )
    assert_problem(changed, 400, "webhook_rejected")
    not_json = b"amount=100&currency=cad"
    refused = await deliver(not_json, sign(not_json, STRIPE_TEST_WEBHOOK_SECRET))
    assert "not JSON" in assert_problem(refused, 400, "webhook_rejected")["detail"]
    assert await sql(
        stack.admin_url, "SELECT count(*) FROM billing.stripe_events WHERE org_id = %s", (org.org_id,)
    ) == [(0,)], "nothing refused was stored"
    # The same body, signed right: stored, and a second delivery is a duplicate.
    good = sign(payload, STRIPE_TEST_WEBHOOK_SECRET)
    first, second = await deliver(payload, good), await deliver(payload, good)
    assert (first.status_code, first.json()["duplicate"], second.json()["duplicate"]) == (200, False, True)
    # Not ours (no org in its metadata): acknowledged, not stored.
    foreign = json.dumps(
        {**stripe_event(org.org_id, invoice["id"]), "data": {"object": {"id": "pi_x", "metadata": {}}}}
    ).encode()
    ignored = await deliver(foreign, sign(foreign, STRIPE_TEST_WEBHOOK_SECRET))
    assert ignored.status_code == 200 and ignored.json()["outcome"] == "ignored", ignored.text


async def test_the_orgs_invoicing_settings(gateway, http, make_org):
    url = f"{gateway.url}/v1/admin/finance/settings"
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    defaults = await http.get(url, headers=headers)
    assert defaults.status_code == 200, defaults.text
    assert defaults.json() == {
        "tax_rate": "0",
        "payment_terms_days": 14,
        "currency": "CAD",
        "tax_rate_is_default": True,
        "payment_terms_days_is_default": True,
        "currency_is_default": True,
    }
    for bad, field in (
        ({"tax_rate": "101"}, "tax_rate"),
        ({"currency": "XYZ"}, "currency"),
        ({}, "settings"),
    ):
        assert field in fields(assert_problem(await http.put(url, headers=headers, json=bad), 422)), bad
    saved = await http.put(
        url, headers=headers, json={"tax_rate": "9.975", "payment_terms_days": 30, "currency": "usd"}
    )
    assert saved.status_code == 200, saved.text
    assert (saved.json()["tax_rate"], saved.json()["payment_terms_days"], saved.json()["currency"]) == (
        "9.9750",
        30,
        "USD",
    )
    # A hand-made invoice without a currency takes the org's.
    assert (await new_invoice(http, gateway.url, headers))["currency"] == "USD"
