"""Seed 002's dunning-lite email, end to end: cws.billing.invoice.payment_failed published as billing's
outbox relay publishes it (billing's NATS user and stream, the same headers) → notify's consumer →
the outbox → the SMTP sink. One email per invoice, whatever the number of failures or deliveries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events

from libs.common.bus import event_headers, stream_name
from services.notify.events import BILLING_INVOICE_PAYMENT_FAILED
from services.notify.tests.support import outbox
from tools.testkit import eventually, sql

CONSUMER = "notify-invoice-payment-failed"
PORTAL = "https://portal.cws.test"  # the session notify's CLIENT_PORTAL_BASE_URL (conftest.notify_env)


def payment_failed(
    org_id: str, invoice_id: str, address: str, outstanding_cents: int
) -> billing_events.InvoicePaymentFailed:
    return billing_events.InvoicePaymentFailed(
        org_id=org_id,
        invoice_id=invoice_id,
        number="INV-2026-0042",
        client_email=address,
        client_name="Robin Client",
        currency="CAD",
        outstanding_cents=outstanding_cents,
    )


async def publish(
    stack: Any, message: billing_events.InvoicePaymentFailed, event_id: str = ""
) -> tuple[str, int]:
    """Publish as billing would; (event id, stream sequence). A repeated `event_id` gets a fresh
    Nats-Msg-Id so it passes JetStream's duplicate window, as a redelivery after a lost ack would."""
    event_id = event_id or str(uuid.uuid4())
    subject = BILLING_INVOICE_PAYMENT_FAILED.subject
    headers = event_headers(event_id, subject, "billing", datetime.now(UTC), message.org_id, "test")
    headers["Nats-Msg-Id"] = str(uuid.uuid4())
    nc = await stack.nats.connect_as("billing")
    try:
        ack = await nc.jetstream().publish(subject, message.SerializeToString(), headers=headers)
    finally:
        await nc.close()
    return event_id, ack.seq


async def wait_handled(stack: Any, seq: int) -> None:
    """Until notify has acknowledged every message of billing's stream up to `seq`."""
    nc = await stack.nats.connect_as("admin")  # notify's consumer is notify's: only admin may look

    async def acked() -> bool:
        info = await nc.jetstream().consumer_info(stream_name("billing"), CONSUMER)
        return bool(info.ack_floor.stream_seq >= seq)

    try:
        await eventually(acked, timeout=60, message=f"{CONSUMER} acknowledging up to {seq}")
    finally:
        await nc.close()


async def test_a_failed_invoice_payment_emails_the_client_once_with_a_retry_link(
    notify: Any, smtp_sink: Any, stack: Any, make_org: Any
) -> None:
    org = await make_org("Dunning Clean")
    address = f"dunning-{uuid.uuid4().hex[:10]}@example.com"
    invoice_id = str(uuid.uuid4())
    first = payment_failed(org.org_id, invoice_id, address, 15255)

    event_id, _ = await publish(stack, first)
    [message] = await smtp_sink.delivered(address, timeout=30)

    # The same event again (a redelivery), then a second failure of the same invoice.
    await publish(stack, first, event_id)
    second_id, last = await publish(stack, payment_failed(org.org_id, invoice_id, address, 9900))
    await wait_handled(stack, last)

    handled = await sql(
        stack.admin_url,
        "SELECT 1 FROM notify.event_inbox WHERE consumer = %s AND event_id = %s",
        (CONSUMER, second_id),
    )
    assert handled == [(1,)]  # the second failure was handled, and enqueued nothing
    [row] = outbox(stack.admin_url, org.org_id, f"invoice:{invoice_id}:dunning:payment_failed")
    payload = row["payload"]
    assert (row["kind"], row["target"]) == ("email", address)
    assert payload["email_type"] == "invoice_payment_failed" and payload["from_name"] == "Dunning Clean"
    assert len(smtp_sink.to(address)) == 1

    link = f"{PORTAL}/invoices/{invoice_id}"
    for text in (payload["text"], message.text):
        assert "INV-2026-0042" in text and "CAD 152.55" in text and link in text, text
        assert "CAD 99.00" not in text
        assert "token" not in text.lower() and "stripe" not in text.lower()
    assert "INV-2026-0042" in message.subject


async def test_each_invoice_gets_its_own_dunning_email(
    notify: Any, smtp_sink: Any, stack: Any, make_org: Any
) -> None:
    org = await make_org()
    address = f"dunning-{uuid.uuid4().hex[:10]}@example.com"
    invoices = [str(uuid.uuid4()), str(uuid.uuid4())]
    for invoice_id in invoices:
        await publish(stack, payment_failed(org.org_id, invoice_id, address, 5))

    received = await smtp_sink.delivered(address, count=2, timeout=30)
    links = sorted(f"{PORTAL}/invoices/{invoice_id}" in m.text for m in received for invoice_id in invoices)
    assert links == [False, False, True, True]
    assert all("CAD 0.05" in m.text for m in received)
