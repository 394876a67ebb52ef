"""qbo-sync and the payments recorded in the suite (here manual ones, finance's RecordManualPayment; a
Stripe payment takes the same path): each goes to QuickBooks once, as a Payment linked to the pushed
invoice, and is never pulled back as a second payment; the accountant's own payments still are, once.
Against the real billing service and the local QuickBooks (tools/fake_quickbooks.py)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import grpc
from cws.billing.v1 import billing_pb2
from cws.integrations.v1 import integrations_pb2 as pb

from services.integrations.tests.test_qbo_sync import HST_LINE, Setup, close
from services.integrations.tests.test_qbo_sync import setup as connected
from tools import testkit


async def pay(s: Setup, invoice: billing_pb2.Invoice, cents: int) -> billing_pb2.Invoice:
    paid = await s.billing.RecordManualPayment(
        billing_pb2.RecordManualPaymentRequest(
            invoice_id=invoice.id, amount_cents=cents, method="etransfer", reference="ET-1234"
        ),
        metadata=s.finance(),
    )
    return paid.invoice


def money(value: Any) -> Decimal:
    return Decimal(str(value))


def posts(s: Setup, path: str) -> list[dict[str, Any]]:
    return [r for r in s.requests() if r["method"] == "POST" and r["path"].endswith(path)]


async def pushed_rows(s: Setup, stack: Any) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = await testkit.sql(
        stack.admin_url,
        "SELECT outcome, amount_cents, payment_id::text, qbo_payment_id FROM integrations.qbo_payments"
        " WHERE org_id = %s ORDER BY created_at, qbo_payment_id",
        (s.user.org_id,),
    )
    return rows


async def test_a_paid_invoice_goes_up_with_its_payment_and_nothing_comes_back(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await connected(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        paid = await pay(s, invoice, invoice.total_cents)
        assert paid.status == "PAID"
        [payment] = paid.payments

        done = await s.sync()
        assert done.counts["invoices_created"] == 1 and done.counts["payments_pushed"] == 1
        assert not done.counts.get("payments_applied") and not done.counts.get("errors")
        qbo_invoice = s.qbo_invoice(invoice.number)
        [qbo_payment] = s.listed("payments")
        assert qbo_payment["CustomerRef"]["value"] == qbo_invoice["CustomerRef"]["value"]
        assert money(qbo_payment["TotalAmt"]) == Decimal(invoice.total_cents) / 100
        [line] = qbo_payment["Line"]
        assert line["LinkedTxn"] == [{"TxnId": qbo_invoice["Id"], "TxnType": "Invoice"}]
        assert money(line["Amount"]) == Decimal(invoice.total_cents) / 100
        assert payment.id in qbo_payment["PrivateNote"]
        assert qbo_payment["TxnDate"] == payment.received_at.ToDatetime().date().isoformat()
        assert money(qbo_invoice["Balance"]) == 0
        # Sent once, with a requestid (a retried create is answered with the first one).
        [create] = posts(s, "/payment")
        assert create["query"].get("requestid")
        assert await pushed_rows(s, stack) == [("pushed", invoice.total_cents, payment.id, qbo_payment["Id"])]

        # The next passes send nothing more and apply nothing back.
        before = len([r for r in s.requests() if r["method"] == "POST"])
        for _ in range(2):
            again = await s.sync()
            assert not again.counts.get("payments_pushed") and not again.counts.get("payments_applied")
            assert not again.counts.get("errors")
        assert len([r for r in s.requests() if r["method"] == "POST"]) == before
        assert len(s.listed("payments")) == 1
        found = await s.get(invoice.id)
        assert [(p.provider, p.amount_cents) for p in found.payments] == [("manual", invoice.total_cents)]
        assert (found.status, found.paid_cents) == ("PAID", invoice.total_cents)
    finally:
        await close(channels)


async def test_a_partial_payment_goes_up_and_the_accountants_rest_comes_back_once(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await connected(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await s.sync()  # the invoice first, open
        await pay(s, invoice, 5000)
        done = await s.sync()
        assert done.counts["payments_pushed"] == 1 and not done.counts.get("payments_applied")
        qbo_invoice = s.qbo_invoice(invoice.number)
        rest = Decimal(invoice.total_cents - 5000) / 100
        assert money(qbo_invoice["Balance"]) == rest

        # The accountant records the rest in QuickBooks: it comes back, once, beside the manual one.
        theirs = s.fake.control("payments", {"realm_id": s.realm, "invoice_id": qbo_invoice["Id"]})
        assert money(theirs["Payment"]["TotalAmt"]) == rest
        applied = await s.sync()
        assert applied.counts["payments_applied"] == 1 and not applied.counts.get("payments_pushed")
        again = await s.sync()
        assert not again.counts.get("payments_applied") and not again.counts.get("payments_pushed")
        found = await s.get(invoice.id)
        assert (found.status, found.paid_cents, found.outstanding_cents) == ("PAID", invoice.total_cents, 0)
        assert sorted((p.provider, p.amount_cents) for p in found.payments) == [
            ("manual", 5000),
            ("quickbooks", invoice.total_cents - 5000),
        ]
        assert len(s.listed("payments")) == 2 and money(s.qbo_invoice(invoice.number)["Balance"]) == 0
        assert sorted((o, c) for o, c, _, _ in await pushed_rows(s, stack)) == [
            ("applied", invoice.total_cents - 5000),
            ("pushed", 5000),
        ]
    finally:
        await close(channels)


async def test_a_lost_payment_create_answer_then_a_rerun_makes_no_second_payment(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await connected(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await s.sync()
        await pay(s, invoice, 5000)
        # QuickBooks creates the payment and the answer is lost: the pass fails, nothing recorded.
        s.fake.control(
            "faults", {"status": 503, "count": 1, "after": True, "method": "POST", "path": "/payment"}
        )
        await testkit.rpc_error(
            s.api.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md()),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert len(s.listed("payments")) == 1 and await pushed_rows(s, stack) == []
        await asyncio.sleep(1.1)  # the breaker (2 failures, 1 s) lets the next pass through
        done = await s.sync()
        assert done.counts.get("payments_pushed", 0) + done.counts.get("payments_adopted", 0) == 1
        assert not done.counts.get("payments_applied") and not done.counts.get("errors")
        [qbo_payment] = s.listed("payments")
        assert [(o, c, q) for o, c, _, q in await pushed_rows(s, stack)] == [
            ("pushed", 5000, qbo_payment["Id"])
        ]
        again = await s.sync()
        assert not again.counts.get("payments_pushed") and not again.counts.get("payments_applied")
        assert len(s.listed("payments")) == 1
        found = await s.get(invoice.id)
        assert [(p.provider, p.amount_cents) for p in found.payments] == [("manual", 5000)]
        assert money(s.qbo_invoice(invoice.number)["Balance"]) == Decimal(invoice.total_cents - 5000) / 100
    finally:
        await close(channels)


async def test_a_payment_of_ours_found_without_its_row_is_never_applied_back(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    """The pull alone (the invoice out of the push's window, our row gone): the payment's PrivateNote
    names our payment, so it is recorded as ours, not applied as a second payment."""
    channels: list[Any] = []
    try:
        s = await connected(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await pay(s, invoice, 5000)
        await s.sync()
        [(_, _, payment_id, qbo_payment_id)] = await pushed_rows(s, stack)
        await testkit.sql(
            stack.admin_url, "DELETE FROM integrations.qbo_payments WHERE org_id = %s", (s.user.org_id,)
        )
        await testkit.sql(
            stack.admin_url,
            "UPDATE billing.invoices SET updated_at = now() - interval '40 days' WHERE id = %s",
            (invoice.id,),
        )
        done = await s.sync()
        assert done.counts["payments_ours_seen"] == 1
        assert not done.counts.get("payments_applied") and not done.counts.get("payments_pushed")
        found = await s.get(invoice.id)
        assert [(p.provider, p.amount_cents) for p in found.payments] == [("manual", 5000)]
        assert await pushed_rows(s, stack) == [("pushed", 5000, payment_id, qbo_payment_id)]
        assert len(s.listed("payments")) == 1
    finally:
        await close(channels)


async def test_a_stripe_payment_goes_up_and_its_refund_is_reported_not_sent(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    """A card payment and a partial refund as billing's Stripe webhooks store them (rows written here
    through the superuser connection: the Stripe path itself is billing's tests' business). The payment
    goes up at its amount; the refund is not sent, and the pass says so."""
    channels: list[Any] = []
    try:
        s = await connected(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        intent = f"pi_{invoice.id[:8]}"
        await testkit.sql(
            stack.admin_url,
            "INSERT INTO billing.invoice_payments (id, org_id, invoice_id, provider, method, amount_cents,"
            " currency, status, provider_ref, recorded_by) VALUES (gen_random_uuid(), %s, %s, 'stripe',"
            " 'card', %s, 'CAD', 'succeeded', %s, 'stripe')",
            (s.user.org_id, invoice.id, invoice.total_cents, intent),
        )
        await testkit.sql(
            stack.admin_url,
            "INSERT INTO billing.invoice_refunds (id, org_id, invoice_id, stripe_refund_id,"
            " payment_intent_id, amount_cents, currency, status) VALUES (gen_random_uuid(), %s, %s,"
            " 're_1', %s, 2000, 'CAD', 'succeeded')",
            (s.user.org_id, invoice.id, intent),
        )
        await testkit.sql(
            stack.admin_url,
            "UPDATE billing.invoices SET status = 'PARTIAL', updated_at = now() WHERE id = %s",
            (invoice.id,),
        )
        found = await s.get(invoice.id)
        [payment] = found.payments
        assert (payment.provider, found.paid_cents) == ("stripe", invoice.total_cents - 2000)

        done = await s.sync()
        assert done.counts["payments_pushed"] == 1 and done.counts["refunds_not_pushed"] == 1
        [qbo_payment] = s.listed("payments")
        assert money(qbo_payment["TotalAmt"]) == Decimal(invoice.total_cents) / 100
        assert payment.id in qbo_payment["PrivateNote"] and intent in qbo_payment["PrivateNote"]
        assert money(s.qbo_invoice(invoice.number)["Balance"]) == 0  # the refund is not there
        state = await s.state()
        assert f"invoice {invoice.number}: a refund of 20 CAD is not sent to QuickBooks" in state.last_error
        again = await s.sync()
        assert not again.counts.get("payments_pushed") and len(s.listed("payments")) == 1
        assert [(p.provider, p.amount_cents) for p in (await s.get(invoice.id)).payments] == [
            ("stripe", invoice.total_cents)
        ]
    finally:
        await close(channels)
