"""Billing through the gateway over HTTP, in front of the real services and the local Stripe: an
invoice's life (draft, items, issue, send with a public link, PDF, manual payment, queue), card
payment through Checkout and Stripe's webhook, reconcile with its audit, and a completed booking
becoming a draft invoice."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pypdf import PdfReader

from tools.testkit import assert_problem, eventually, owner, sql

CLEAN = {"description": "Deep clean", "quantity": "3", "unit_price_cents": 4500, "tax_rate": "13"}


async def new_invoice(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], **extra: Any
) -> dict[str, Any]:
    body = {
        "client_name": "Ada Client",
        "client_email": f"ada-{uuid.uuid4().hex[:8]}@example.com",
        "items": [CLEAN],
    }
    created = await http.post(f"{url}/v1/admin/invoices", headers=headers, json={**body, **extra})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def issued_invoice(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], **extra: Any
) -> dict[str, Any]:
    invoice = await new_invoice(http, url, headers, **extra)
    issued = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/issue", headers=headers)
    assert issued.status_code == 200, issued.text
    return dict(issued.json())


async def test_an_invoice_from_draft_to_paid_by_hand(gateway, http, make_org, smtp_sink, stack):
    url = gateway.url
    org = await make_org(name="Sparkle & Co")
    headers = await owner(http, url, org)
    draft = await new_invoice(http, url, headers)
    assert (draft["status"], draft["number"], draft["currency"]) == ("DRAFT", None, "CAD")
    assert (draft["subtotal_cents"], draft["tax_cents"], draft["total_cents"]) == (13500, 1755, 15255)

    edited = await http.put(
        f"{url}/v1/admin/invoices/{draft['id']}/items",
        headers=headers,
        json={
            "items": [
                CLEAN,
                {"description": "Supplies", "quantity": 1, "unit_price_cents": 1000, "tax_rate": "0"},
            ]
        },
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["subtotal_cents"], edited.json()["taxable_subtotal_cents"]) == (14500, 13500)
    issued = await http.post(f"{url}/v1/admin/invoices/{draft['id']}/issue", headers=headers)
    assert issued.status_code == 200, issued.text
    invoice = issued.json()
    assert (invoice["status"], invoice["number"], invoice["total_cents"]) == ("SENT", "INV-000001", 16255)
    frozen = await http.put(
        f"{url}/v1/admin/invoices/{draft['id']}/items", headers=headers, json={"items": [CLEAN]}
    )
    assert_problem(frozen, 409, "invoice_not_draft")

    # Send: an email with a public link; the link opens the invoice and its PDF without signing in.
    sent = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/send", headers=headers)
    assert sent.status_code == 200, sent.text
    assert sent.json()["sent_at"] and sent.json()["outbox_event_id"]
    [mail] = await smtp_sink.delivered(invoice["client_email"])
    assert "INV-000001" in mail.subject and "CAD 162.55" in mail.text
    token = re.search(r"/v1/public/invoices/([A-Za-z0-9_-]{43})", mail.text).group(1)  # type: ignore[union-attr]
    public = await http.get(f"{url}/v1/public/invoices/{token}")
    assert public.status_code == 200, public.text
    assert public.json()["number"] == "INV-000001" and public.json()["outstanding_cents"] == 16255
    pdf = await http.get(f"{url}/v1/public/invoices/{token}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "INV-000001" in text and "Sparkle & Co" in text and "CAD 162.55" in text
    assert_problem(await http.get(f"{url}/v1/public/invoices/{'x' * 43}"), 404)
    # The link also pays: a Checkout link for what is owed, no sign-in needed.
    pay = await http.post(f"{url}/v1/public/invoices/{token}/checkout")
    assert pay.status_code == 200, pay.text
    assert pay.json()["amount_cents"] == 16255 and pay.json()["checkout_url"].startswith("http")

    # Part, then the rest, by hand; more than is owed is refused and changes nothing.
    part = await http.post(
        f"{url}/v1/admin/invoices/{invoice['id']}/payments",
        headers=headers,
        json={"amount_cents": 10000, "method": "etransfer", "reference": "ET-1"},
    )
    assert part.status_code == 201, part.text
    assert (part.json()["status"], part.json()["outstanding_cents"]) == ("PARTIAL", 6255)
    too_much = await http.post(
        f"{url}/v1/admin/invoices/{invoice['id']}/payments",
        headers=headers,
        json={"amount_cents": 6256, "method": "cash"},
    )
    problem = assert_problem(too_much, 422)
    assert "6255" in problem["detail"]
    queue = await http.get(f"{url}/v1/admin/queue/invoices", headers=headers, params={"status": "unpaid"})
    assert [i["id"] for i in queue.json()["items"]] == [invoice["id"]]
    rest = await http.post(
        f"{url}/v1/admin/invoices/{invoice['id']}/payments",
        headers=headers,
        json={"amount_cents": 6255, "method": "cash"},
    )
    assert (rest.json()["status"], rest.json()["paid_cents"]) == ("PAID", 16255)
    queue = await http.get(f"{url}/v1/admin/queue/invoices", headers=headers)
    assert queue.json()["items"] == []
    void = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/void", headers=headers)
    assert_problem(void, 409, "invoice_not_voidable")


async def test_reconcile_repairs_a_status_and_is_audited(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    invoice = await issued_invoice(http, url, headers)
    # Behind billing's back: the invoice says PAID with nothing paid (the seed's mismatch).
    await sql(stack.admin_url, "UPDATE billing.invoices SET status = 'PAID' WHERE id = %s", (invoice["id"],))
    listed = await http.get(f"{url}/v1/admin/finance/reconcile/invoices", headers=headers)
    assert listed.status_code == 200, listed.text
    [row] = listed.json()["items"]
    assert (row["invoice_id"], row["status"], row["expected_status"], row["mismatch"]) == (
        invoice["id"],
        "PAID",
        "SENT",
        True,
    )
    assert row["actions"]["reconcile"] == f"/v1/admin/finance/invoices/{invoice['id']}/reconcile"
    fixed = await http.post(url + row["actions"]["reconcile"], headers=headers)
    assert fixed.status_code == 200, fixed.text
    assert (fixed.json()["before"]["status"], fixed.json()["after"]["status"], fixed.json()["changed"]) == (
        "PAID",
        "SENT",
        True,
    )
    again = await http.post(url + row["actions"]["reconcile"], headers=headers)
    assert again.json()["changed"] is False
    assert (await http.get(f"{url}/v1/admin/finance/reconcile/invoices", headers=headers)).json()[
        "items"
    ] == []

    async def audited() -> list[dict[str, Any]]:
        logs = await http.get(
            f"{url}/v1/admin/audit-logs", headers=headers, params={"action": "billing.ReconcileInvoice"}
        )
        assert logs.status_code == 200, logs.text
        found = list(logs.json())
        assert len(found) >= 2, found
        return found

    entries = await eventually(audited)
    changed = [e for e in entries if e["before"]["status"] == "PAID"]
    assert changed and changed[0]["after"] == {
        "status": "SENT",
        "paid_cents": 0,
        "outstanding_cents": invoice["total_cents"],
        "succeeded_payments": 0,
    }


async def test_a_card_payment_through_checkout_and_the_webhook(gateway, http, make_org, local_stripe, stack):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    invoice = await issued_invoice(http, url, headers)
    link = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/checkout", headers=headers)
    assert link.status_code == 200, link.text
    assert link.json()["amount_cents"] == 15255
    again = await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/checkout", headers=headers)
    assert again.json()["session_id"] == link.json()["session_id"], "an open session is reused"

    paid = await http.post(link.json()["checkout_url"], follow_redirects=False)
    assert paid.status_code == 303, paid.text

    async def paid_in_full() -> bool:
        found = await http.get(f"{url}/v1/admin/invoices/{invoice['id']}", headers=headers)
        return bool(found.json()["status"] == "PAID")

    await eventually(paid_in_full, timeout=20)
    found = (await http.get(f"{url}/v1/admin/invoices/{invoice['id']}", headers=headers)).json()
    [payment] = found["payments"]
    assert (payment["provider"], payment["amount_cents"], payment["status"]) == ("stripe", 15255, "succeeded")
    events = await http.get(
        f"{url}/v1/admin/finance/reconcile/stripe-events",
        headers=headers,
        params={"invoice_id": invoice["id"]},
    )
    assert events.status_code == 200, events.text
    types = {e["type"] for e in events.json()["items"]}
    assert "checkout.session.completed" in types
    assert all(e["processed_status"] in ("processed", "ignored") for e in events.json()["items"])
    assert all("facts" not in e and "payload" not in e for e in events.json()["items"])

    # A partial refund through Stripe: the invoice is PARTIAL again.
    refund = await http.post(
        f"{url}/v1/admin/invoices/{invoice['id']}/payments/{payment['id']}/refund",
        headers=headers,
        json={"amount_cents": 5255, "reason": "one room skipped"},
    )
    assert refund.status_code == 200, refund.text
    assert (refund.json()["status"], refund.json()["paid_cents"]) == ("PARTIAL", 10000)


async def test_a_completed_booking_becomes_a_draft_invoice(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    email = f"robin-{uuid.uuid4().hex[:8]}@example.com"
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": starts.isoformat(),
            "duration_minutes": 90,
            "client_name": "Robin",
            "client_email": email,
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
    )
    assert created.status_code == 201, created.text
    booking = created.json()
    for action in ("confirm", "start", "complete"):
        done = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/{action}", headers=headers)
        assert done.status_code == 200, done.text

    async def drafts() -> list[dict[str, Any]]:
        found = await http.get(f"{url}/v1/admin/invoices", headers=headers, params={"status": "DRAFT"})
        return list(found.json()["items"])

    [invoice] = await eventually(drafts, timeout=20)
    assert (invoice["booking_id"], invoice["client_email"]) == (booking["id"], email)
    assert invoice["subtotal_cents"] == booking["total_before_tax_cents"] > 0
    # Due after the default payment terms (14 days), counted in the org's zone (UTC here).
    assert invoice["due_date"] == (datetime.now(UTC).date() + timedelta(days=14)).isoformat()
    # The backfill finds the booking invoiced already: nothing twice.
    backfill = await http.post(f"{url}/v1/admin/invoices/backfill", headers=headers)
    assert backfill.status_code == 200, backfill.text
    assert backfill.json() == {"scanned": 1, "created": 0}
    # A booking completed before billing ran (its draft never made): the backfill makes it, once.
    await sql(stack.admin_url, "DELETE FROM billing.invoices WHERE id = %s", (invoice["id"],))
    again = await http.post(f"{url}/v1/admin/invoices/backfill", headers=headers)
    assert again.json() == {"scanned": 1, "created": 1}, again.text
    [made] = await drafts()
    assert (made["booking_id"], made["subtotal_cents"]) == (booking["id"], invoice["subtotal_cents"])


async def test_a_declined_card_sends_one_dunning_email(gateway, http, make_org, smtp_sink):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    invoice = await issued_invoice(http, url, headers)
    link = (await http.post(f"{url}/v1/admin/invoices/{invoice['id']}/checkout", headers=headers)).json()
    for _ in range(2):  # the client tries twice; both cards are declined
        declined = await http.post(link["checkout_url"] + "?outcome=fail", follow_redirects=False)
        assert declined.status_code == 402, declined.text
    [mail] = await smtp_sink.delivered(invoice["client_email"], timeout=20)
    assert invoice["number"] in mail.text and "CAD 152.55" in mail.text
    assert f"/invoices/{invoice['id']}" in mail.text, "the retry link"

    async def failures_processed() -> bool:
        events = await http.get(
            f"{url}/v1/admin/finance/reconcile/stripe-events",
            headers=headers,
            params={"invoice_id": invoice["id"], "status": "processed"},
        )
        types = [e["type"] for e in events.json()["items"]]
        return types.count("payment_intent.payment_failed") == 2

    await eventually(failures_processed, timeout=20)
    assert len(smtp_sink.to(invoice["client_email"])) == 1, "one dunning email per invoice"
    found = (await http.get(f"{url}/v1/admin/invoices/{invoice['id']}", headers=headers)).json()
    assert found["status"] == "SENT" and found["paid_cents"] == 0


async def test_a_deposit_paid_by_card_confirms_the_booking(gateway, http, make_org):
    url = gateway.url
    org = await make_org()
    headers = await owner(http, url, org)
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    created = await http.post(
        f"{url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": starts.isoformat(),
            "duration_minutes": 120,
            "client_name": "Robin",
            "client_email": f"robin-{uuid.uuid4().hex[:8]}@example.com",
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
            "deposit_required": True,
        },
    )
    assert created.status_code == 201, created.text
    booking = created.json()
    waits = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/confirm", headers=headers)
    assert_problem(waits, 409, "deposit_required")
    link = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/deposit/checkout", headers=headers)
    assert link.status_code == 200, link.text
    # DEPOSIT_PERCENT (25) of the price, at least DEPOSIT_MIN_CENTS (5000), never above the price.
    price = booking["total_before_tax_cents"]
    assert link.json()["amount_cents"] == min(price, max((price * 25 * 2 + 100) // 200, 5000))
    paid = await http.post(link.json()["checkout_url"], follow_redirects=False)
    assert paid.status_code == 303, paid.text

    async def confirmed() -> bool:
        found = (await http.get(f"{url}/v1/admin/bookings/{booking['id']}", headers=headers)).json()
        return bool(found["deposit_paid"] and found["status"] == "confirmed")

    await eventually(confirmed, timeout=20)
    again = await http.post(f"{url}/v1/admin/bookings/{booking['id']}/deposit/checkout", headers=headers)
    assert_problem(again, 409, "deposit_not_due")


async def test_an_org_billing_has_not_heard_of_is_named_from_iam(gateway, http, make_org, stack):
    """Its org.created event not (yet) consumed: the PDF still names the org, asked of IAM once."""
    url = gateway.url
    org = await make_org(name="Late Event Cleaners", time_zone="America/Edmonton")
    headers = await owner(http, url, org)
    invoice = await issued_invoice(http, url, headers)
    await sql(stack.admin_url, "DELETE FROM billing.org_settings WHERE org_id = %s", (org.org_id,))
    pdf = await http.get(f"{url}/v1/admin/invoices/{invoice['id']}/pdf", headers=headers)
    assert pdf.status_code == 200, pdf.text
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Late Event Cleaners" in text
    assert await sql(
        stack.admin_url, "SELECT name, time_zone FROM billing.org_settings WHERE org_id = %s", (org.org_id,)
    ) == [("Late Event Cleaners", "America/Edmonton")], "remembered"
