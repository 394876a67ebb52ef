"""Billing's ViewsService through its gRPC API, against real Postgres and the session's billing process
(issue 13): an invoice's timeline with a Stripe payment (delivered as a signed webhook, processed by
the service's own loop), a booking's timeline, caps, tenancy, roles and bad input; the money metrics
per currency for a period."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf import json_format

from conftest import STRIPE_TEST_WEBHOOK_SECRET
from libs.common import context as request_context
from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.privacy import PII_KEYS
from services.billing import payments
from services.billing.models import SCHEMA, event_tables
from tools.stripe_local import sign
from tools.testkit import as_role, eventually, rpc_error, signed, signing_channel, sql

TOTAL, TAX = 15255, 1755  # 3 x 45.00 + 13 %


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.billing = billing_pb2_grpc.BillingServiceStub(channel)
        self.views = views_pb2_grpc.ViewsServiceStub(channel)


@pytest.fixture
async def stubs(billing: Any) -> AsyncIterator[Stubs]:
    async with signing_channel(billing.target) as channel:
        yield Stubs(channel)


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=4)
    yield database
    await database.dispose()


async def invoice(
    stubs: Stubs, org: str, *, booking_id: str = "", currency: str = "", email: str = "ada@example.com"
) -> str:
    created = await stubs.billing.CreateInvoice(
        billing_pb2.CreateInvoiceRequest(
            client_name="Ada Client",
            client_email=email,
            booking_id=booking_id,
            currency=currency,
            items=[
                billing_pb2.LineItem(
                    description="Deep clean", quantity="3", unit_price_cents=4500, tax_rate="13"
                )
            ],
        ),
        metadata=as_role(org, "FINANCE"),
    )
    await stubs.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(invoice_id=created.invoice.id), metadata=as_role(org, "FINANCE")
    )
    return str(created.invoice.id)


async def pay_by_card(stubs: Stubs, org: str, invoice_id: str, booking_id: str) -> tuple[str, str]:
    """Stripe reports the invoice paid (a signed payment_intent.succeeded, as Stripe sends it), and the
    service's loop records the payment: (event id, payment intent id)."""
    event_id, intent = f"evt_{uuid.uuid4().hex[:20]}", f"pi_{uuid.uuid4().hex[:20]}"
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": intent,
                    "object": "payment_intent",
                    "amount": TOTAL,
                    "amount_received": TOTAL,
                    "currency": "cad",
                    "receipt_email": "ada@example.com",
                    "status": "succeeded",
                    "metadata": {
                        "org_id": org,
                        "invoice_id": invoice_id,
                        "booking_id": booking_id,
                        "purpose": "invoice",
                    },
                }
            },
        }
    ).encode()
    anonymous = signed(request_context.RequestContext(request_id=f"test-{uuid.uuid4().hex[:12]}"))
    accepted = await stubs.billing.AcceptStripeWebhook(
        billing_pb2.AcceptStripeWebhookRequest(
            payload=body, signature=sign(body, STRIPE_TEST_WEBHOOK_SECRET)
        ),
        metadata=anonymous,
    )
    assert accepted.outcome == "stored"

    async def paid() -> str:
        got = await stubs.billing.GetInvoice(
            billing_pb2.GetInvoiceRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
        )
        assert got.invoice.status == "PAID", got.invoice.status
        return str(got.invoice.status)

    status: str = await eventually(paid, timeout=15, message="the card payment recorded")
    assert status == "PAID"
    return event_id, intent


async def timeline(
    stubs: Stubs, org: str, role: str = "VIEWER", **subject: str
) -> views_pb2.GetTimelineResponse:
    return await stubs.views.GetTimeline(views_pb2.GetTimelineRequest(**subject), metadata=as_role(org, role))


def no_personal_data_outside_details(entries: Any, *values: str) -> None:
    for entry in entries:
        for text in (entry.summary, entry.kind, entry.actor, entry.source):
            assert not any(v.lower() in text.lower() for v in values), text
        details = json_format.MessageToDict(entry.details)
        for key, value in details.items():
            if isinstance(value, str) and any(v.lower() in value.lower() for v in values):
                assert key in PII_KEYS, (key, value)


# --- timeline -------------------------------------------------------------------------------------


async def test_an_invoice_timeline_with_a_stripe_payment(stubs: Stubs) -> None:
    org = str(uuid.uuid4())
    booking_id = str(uuid.uuid4())
    invoice_id = await invoice(stubs, org, booking_id=booking_id)
    await stubs.billing.SendInvoice(
        billing_pb2.SendInvoiceRequest(invoice_id=invoice_id), metadata=as_role(org, "FINANCE")
    )
    event_id, intent = await pay_by_card(stubs, org, invoice_id, booking_id)

    answer = await timeline(stubs, org, invoice_id=invoice_id)

    assert not answer.truncated
    kinds = [e.kind for e in answer.entries]
    assert set(kinds) == {
        "invoice.created",
        "invoice.issued",
        "invoice.sent",
        "invoice.paid",
        "payment.succeeded",
        "stripe.payment_intent.succeeded",
    }
    stamps = [e.at.ToDatetime() for e in answer.entries]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    by_kind = {e.kind: e for e in answer.entries}
    issued = json_format.MessageToDict(by_kind["invoice.issued"].details)
    assert (issued["number"], issued["total_cents"], issued["currency"]) == ("INV-000001", TOTAL, "CAD")
    payment = by_kind["payment.succeeded"]
    assert (payment.source, payment.actor) == ("payment", "stripe")
    details = json_format.MessageToDict(payment.details)
    assert (details["amount_cents"], details["currency"], details["method"], details["provider"]) == (
        TOTAL,
        "CAD",
        "card",
        "stripe",
    )
    assert details["provider_ref"] == intent
    stripe = by_kind["stripe.payment_intent.succeeded"]
    assert (stripe.source, stripe.actor, stripe.id) == ("stripe_event", "stripe", event_id)
    # The event's processing status, never its facts (amounts, intents, metadata).
    stripe_details = json_format.MessageToDict(stripe.details)
    assert stripe_details["processed_status"] == "processed"
    assert not {"amount", "facts", "payment_intent", "currency"} & set(stripe_details)
    created = json_format.MessageToDict(by_kind["invoice.created"].details)
    assert (created["client_name"], created["client_email"]) == ("Ada Client", "ada@example.com")
    no_personal_data_outside_details(answer.entries, "Ada Client", "ada@example.com")

    # The booking's timeline shows the same, to any staff role; a booking billing knows nothing of is
    # empty, not an error (booking owns bookings).
    by_booking = await timeline(stubs, org, "DISPATCHER", booking_id=booking_id)
    assert sorted(e.kind for e in by_booking.entries) == sorted(kinds)
    assert list((await timeline(stubs, org, booking_id=str(uuid.uuid4()))).entries) == []


async def test_timeline_tenancy_roles_and_bad_input(stubs: Stubs) -> None:
    org = str(uuid.uuid4())
    booking_id = str(uuid.uuid4())
    invoice_id = await invoice(stubs, org, booking_id=booking_id)
    other = str(uuid.uuid4())
    # Another org's invoice does not exist for this one; its booking holds nothing here.
    await rpc_error(timeline(stubs, other, invoice_id=invoice_id), grpc.StatusCode.NOT_FOUND)
    await rpc_error(timeline(stubs, org, invoice_id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND)
    assert list((await timeline(stubs, other, booking_id=booking_id)).entries) == []
    for role in ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER"):
        assert (await timeline(stubs, org, role, invoice_id=invoice_id)).entries
    for role in ("WORKER", "CLIENT"):
        await rpc_error(timeline(stubs, org, role, invoice_id=invoice_id), grpc.StatusCode.PERMISSION_DENIED)
    for subject in (
        {"invoice_id": "not-a-uuid"},
        {"booking_id": "42"},
        {},
        {"invoice_id": invoice_id, "booking_id": booking_id},
    ):
        await rpc_error(timeline(stubs, org, **subject), grpc.StatusCode.INVALID_ARGUMENT)


async def test_each_source_is_capped_newest_first_and_marked_truncated(stubs: Stubs, stack: Any) -> None:
    org = str(uuid.uuid4())
    invoice_id = await invoice(stubs, org)
    # 60 Stripe events for the invoice, written behind the service's back (superuser): one a minute.
    start = datetime.now(UTC) - timedelta(hours=2)
    for n in range(60):
        await sql(
            stack.admin_url,
            "INSERT INTO billing.stripe_events (event_id, org_id, type, created_at, invoice_id, processed_status)"
            " VALUES (%s, %s, 'charge.updated', %s, %s, 'ignored')",
            (
                f"evt_cap_{org[:8]}_{n:02d}",
                uuid.UUID(org),
                start + timedelta(minutes=n),
                uuid.UUID(invoice_id),
            ),
        )

    answer = await timeline(stubs, org, invoice_id=invoice_id)

    assert answer.truncated
    events = [e for e in answer.entries if e.source == "stripe_event"]
    assert len(events) == 50
    assert events[0].id == f"evt_cap_{org[:8]}_59" and events[-1].id == f"evt_cap_{org[:8]}_10"


# --- metrics --------------------------------------------------------------------------------------


def period(start: datetime, end: datetime) -> views_pb2.GetMetricsRequest:
    return views_pb2.GetMetricsRequest(**{"from": to_ts(start), "to": to_ts(end)})


async def metrics(
    stubs: Stubs, org: str, request: views_pb2.GetMetricsRequest, role: str = "FINANCE"
) -> dict[str, float]:
    answer = await stubs.views.GetMetrics(request, metadata=as_role(org, role))
    return {(f"{m.name}:{m.currency}" if m.currency else m.name): m.value for m in answer.metrics}


async def test_metrics_per_currency_for_the_period(stubs: Stubs, db: Database) -> None:
    org = str(uuid.uuid4())
    cad = await invoice(stubs, org)
    usd = await invoice(stubs, org, currency="USD")
    voided = await invoice(stubs, org)
    await stubs.billing.VoidInvoice(
        billing_pb2.VoidInvoiceRequest(invoice_id=voided), metadata=as_role(org, "FINANCE")
    )
    await stubs.billing.RecordManualPayment(
        billing_pb2.RecordManualPaymentRequest(invoice_id=cad, amount_cents=TOTAL, method="cash"),
        metadata=as_role(org, "FINANCE"),
    )
    # A card payment of the USD invoice and a partial refund of it, as the webhooks record them.
    today = datetime.now(UTC).date()
    intent = f"pi_{uuid.uuid4().hex[:16]}"
    async with unit_of_work(db, org) as uow:
        await payments.record_stripe_payment(
            uow,
            invoice_id=uuid.UUID(usd),
            payment_intent_id=intent,
            amount_cents=TOTAL,
            currency="usd",
            status="succeeded",
            today=today,
        )
    async with unit_of_work(db, org) as uow:
        await payments.record_refund(
            uow,
            invoice_id=uuid.UUID(usd),
            stripe_refund_id=f"re_{uuid.uuid4().hex[:16]}",
            payment_intent_id=intent,
            amount_cents=2000,
            currency="USD",
            status="succeeded",
            reason="requested_by_customer",
            requested_by="user:finance",
            today=today,
        )
    now = datetime.now(UTC)

    found = await metrics(stubs, org, period(now - timedelta(days=1), now + timedelta(days=1)))

    assert found == {
        "invoices_issued": 3,  # the voided one was issued too
        "revenue_cents:CAD": TOTAL,  # not the voided one
        "revenue_cents:USD": TOTAL,
        "tax_cents:CAD": TAX,
        "tax_cents:USD": TAX,
        "payments_succeeded": 2,
        "payments_cents:CAD": TOTAL,
        "payments_cents:USD": TOTAL,
        "refunds_cents:USD": 2000,
    }
    # A period before any of it: zeros, money in the org's currency.
    empty = {
        "invoices_issued": 0,
        "revenue_cents:CAD": 0,
        "tax_cents:CAD": 0,
        "payments_succeeded": 0,
        "payments_cents:CAD": 0,
        "refunds_cents:CAD": 0,
    }
    assert await metrics(stubs, org, period(now - timedelta(days=30), now - timedelta(days=2))) == empty
    # Another org sees none of it; ANALYSTS only.
    assert (
        await metrics(stubs, str(uuid.uuid4()), period(now - timedelta(days=1), now + timedelta(days=1)))
        == empty
    )
    for role in ("OWNER", "ADMIN"):
        assert (await metrics(stubs, org, period(now - timedelta(days=1), now + timedelta(days=1)), role))[
            "invoices_issued"
        ] == 3
    for role in ("DISPATCHER", "VIEWER", "WORKER"):
        await rpc_error(
            metrics(stubs, org, period(now - timedelta(days=1), now), role), grpc.StatusCode.PERMISSION_DENIED
        )


async def test_metrics_refuse_a_bad_period(stubs: Stubs) -> None:
    org = str(uuid.uuid4())
    now = datetime.now(UTC)
    for request in (
        period(now, now),
        period(now, now - timedelta(days=1)),
        period(now - timedelta(days=367), now),
        views_pb2.GetMetricsRequest(to=to_ts(now)),
        views_pb2.GetMetricsRequest(**{"from": to_ts(now)}),
    ):
        await rpc_error(metrics(stubs, org, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert (await metrics(stubs, org, period(now - timedelta(days=366), now)))["invoices_issued"] == 0
