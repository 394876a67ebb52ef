"""Stripe webhook events against real Postgres: extract keeps facts and drops personal and card data,
store keeps an event once however often it is delivered, process applies it once, any delivery order of
a realistic sequence ends in the same state, failures are retried with backoff, the finance list never
shows facts, and the cross-org lease hands a row to one worker at a time. The event dicts are shaped as
Stripe's API sends them (event -> data.object), built by hand."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import APP_ROLE
from libs.common.db import Database, unit_of_work
from libs.common.errors import InvalidArgument, NotFound
from libs.common.migrate import migrate
from services.billing import payments, webhooks
from services.billing.events import DEPOSIT_PAID, INVOICE_PAID, INVOICE_REFUNDED
from services.billing.models import checkout_sessions
from services.billing.status import InvoiceStatus, Settlement
from services.billing.tests.test_payments import (
    TODAY,
    TOTAL,
    admin_rows,
    db,
    issued,
    outbox,
    payment_rows,
    status_of,
)
from tools.devstack import drop_database, ensure_database, with_user

__all__ = ["db"]  # the fixture, shared with test_payments


@dataclass(frozen=True)
class OwnDatabase:
    admin_url: str  # superuser
    app_url: str  # the runtime role


@pytest.fixture(scope="module")
def stack(pg_server_admin_url: str) -> Iterator[OwnDatabase]:
    """This module's own database, with billing's schema only. The session's billing process (started
    by test_service.py) runs the webhook loop on the shared database: it would claim and process these
    tests' events itself, so which side applied an event, and what claim_due finds, would be a race."""
    name = f"cws_test_webhooks_{secrets.token_hex(4)}"
    admin_url = ensure_database(pg_server_admin_url, name)
    migrate(admin_url, APP_ROLE, None, only=["billing"])
    yield OwnDatabase(admin_url=admin_url, app_url=with_user(admin_url, APP_ROLE))
    drop_database(pg_server_admin_url, name)


EMAIL = "planted.person@example.test"
NAME = "Plantedname Person"
LAST4 = "4242"
STREET = "1 Planted Street"
CREATED = 1_764_680_000  # 2025-12-02


def metadata(org: uuid.UUID, invoice_id: uuid.UUID | None = None, **more: str) -> dict[str, str]:
    data = {"org_id": str(org), "purpose": "invoice", **more}
    if invoice_id:
        data["invoice_id"] = str(invoice_id)
    return data


def envelope(event_id: str, kind: str, obj: dict[str, Any], created: int = CREATED) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }


BILLING_DETAILS = {
    "address": {"city": "Toronto", "country": "CA", "line1": STREET, "postal_code": "M5V 1A1"},
    "email": EMAIL,
    "name": NAME,
    "phone": "+14165550100",
}


def checkout_completed(
    event_id: str, meta: dict[str, str], intent: str, amount: int, session: str
) -> dict[str, Any]:
    return envelope(
        event_id,
        "checkout.session.completed",
        {
            "id": session,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": "cad",
            "customer": "cus_123",
            "customer_details": {**BILLING_DETAILS, "tax_exempt": "none", "tax_ids": []},
            "customer_email": EMAIL,
            "metadata": meta,
            "mode": "payment",
            "payment_intent": intent,
            "payment_status": "paid",
            "status": "complete",
            "url": None,
        },
    )


def intent_event(event_id: str, kind: str, meta: dict[str, str], intent: str, amount: int) -> dict[str, Any]:
    succeeded = kind == "payment_intent.succeeded"
    return envelope(
        event_id,
        kind,
        {
            "id": intent,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount if succeeded else 0,
            "currency": "cad",
            "customer": "cus_123",
            "latest_charge": "ch_1",
            "last_payment_error": None
            if succeeded
            else {
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "payment_method": {
                    "id": "pm_1",
                    "billing_details": BILLING_DETAILS,
                    "card": {"brand": "visa", "exp_month": 12, "exp_year": 2030, "last4": LAST4},
                },
            },
            "metadata": meta,
            "receipt_email": EMAIL,
            "shipping": {"address": BILLING_DETAILS["address"], "name": NAME},
            "status": "succeeded" if succeeded else "requires_payment_method",
        },
    )


def charge_refunded(
    event_id: str, meta: dict[str, str], intent: str, amount: int, refunds: list[tuple[str, int]]
) -> dict[str, Any]:
    return envelope(
        event_id,
        "charge.refunded",
        {
            "id": "ch_1",
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": sum(cents for _, cents in refunds),
            "billing_details": BILLING_DETAILS,
            "currency": "cad",
            "metadata": {},  # a charge carries none of ours; the refunds billing asked for do
            "payment_intent": intent,
            "payment_method_details": {
                "card": {"brand": "visa", "last4": LAST4, "exp_month": 12, "exp_year": 2030},
                "type": "card",
            },
            "receipt_email": EMAIL,
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [
                    {
                        "id": refund_id,
                        "object": "refund",
                        "amount": cents,
                        "charge": "ch_1",
                        "currency": "cad",
                        "metadata": meta,
                        "payment_intent": intent,
                        "reason": "requested_by_customer",
                        "status": "succeeded",
                    }
                    for refund_id, cents in refunds
                ],
                "has_more": False,
            },
            "status": "succeeded",
        },
    )


def refund_event(
    event_id: str, kind: str, meta: dict[str, str], intent: str, refund_id: str, amount: int, status: str
) -> dict[str, Any]:
    return envelope(
        event_id,
        kind,
        {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "charge": "ch_1",
            "currency": "cad",
            "metadata": meta,
            "payment_intent": intent,
            "reason": None,
            "status": status,
        },
    )


async def deliver(db: Database, event: dict[str, Any]) -> bool:
    stored = webhooks.extract(event)
    assert stored is not None
    async with unit_of_work(db) as uow:
        return await webhooks.store(uow, stored)


async def process(db: Database, org: uuid.UUID, event_id: str) -> webhooks.Effects:
    async with unit_of_work(db, org) as uow:
        return await webhooks.process(uow, event_id, TODAY)


async def process_or_fail(db: Database, org: uuid.UUID, event_id: str) -> webhooks.Effects | None:
    """What the processing loop does: apply, or record the failure in a new transaction."""
    try:
        return await process(db, org, event_id)
    except Exception as error:
        async with unit_of_work(db, org) as uow:
            await webhooks.record_failure(uow, event_id, str(error))
        return None


def event_row(stack: Any, event_id: str) -> tuple[Any, ...]:
    return admin_rows(
        stack,
        "SELECT processed_status, attempts, last_error, next_attempt_at - now(), processed_at "
        "FROM billing.stripe_events WHERE event_id = %s",
        event_id,
    )[0]


def test_extract_keeps_facts_and_drops_personal_and_card_data() -> None:
    org, invoice_id = uuid.uuid4(), uuid.uuid4()
    meta = metadata(org, invoice_id, client_note=EMAIL, booking_id="not-a-uuid")
    events = [
        checkout_completed("evt_1", meta, "pi_1", 5000, "cs_1"),
        intent_event("evt_2", "payment_intent.payment_failed", meta, "pi_1", 5000),
        intent_event("evt_3", "payment_intent.succeeded", meta, "pi_1", 5000),
        charge_refunded("evt_4", meta, "pi_1", 5000, [("re_1", 2000)]),
        refund_event("evt_5", "refund.updated", meta, "pi_1", "re_1", 2000, "succeeded"),
    ]
    for event in events:
        stored = webhooks.extract(event)
        assert stored is not None, event["type"]
        dumped = json.dumps(stored.facts)  # JSON-safe
        for planted in (EMAIL, NAME, LAST4, STREET, "Toronto", "insufficient", "cus_123", "+1416"):
            assert planted not in dumped, (event["type"], planted)
        assert stored.org_id == org and stored.invoice_id == invoice_id and stored.booking_id is None
        assert stored.created_at == datetime.fromtimestamp(CREATED, UTC)
        assert stored.facts["payment_intent"] == "pi_1" and stored.facts["purpose"] == "invoice"
        assert stored.facts["currency"] == "CAD"
    session = webhooks.extract(events[0])
    assert session is not None and session.facts["amount_total"] == 5000
    assert session.facts["payment_status"] == "paid" and session.facts["object_id"] == "cs_1"
    charge = webhooks.extract(events[3])
    assert charge is not None and charge.facts["amount_refunded"] == 2000
    assert charge.facts["refunds"] == [
        {
            "id": "re_1",
            "amount": 2000,
            "currency": "CAD",
            "status": "succeeded",
            "payment_intent": "pi_1",
            "reason": "requested_by_customer",
        }
    ]
    # Not ours: no org in our metadata, or a bad one; not an event at all.
    assert webhooks.extract(intent_event("evt_x", "payment_intent.succeeded", {}, "pi_9", 100)) is None
    assert (
        webhooks.extract(intent_event("evt_y", "payment_intent.succeeded", {"org_id": "x"}, "pi_9", 100))
        is None
    )
    assert webhooks.extract({"id": "evt_z", "type": "ping"}) is None


async def test_an_event_delivered_100_times_is_one_row_and_one_payment(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    event = intent_event(
        "evt_dup_" + org.hex, "payment_intent.succeeded", metadata(org, invoice_id), "pi_dup", TOTAL
    )
    first = await deliver(db, event)
    gate = asyncio.Semaphore(10)  # concurrent, but within the connection pool

    async def redeliver() -> bool:
        async with gate:
            return await deliver(db, event)

    again = await asyncio.gather(*(redeliver() for _ in range(99)))
    assert first is True and not any(again)
    assert admin_rows(stack, "SELECT count(*) FROM billing.stripe_events WHERE org_id = %s", org) == [(1,)]
    effects = await asyncio.gather(*(process(db, org, event["id"]) for _ in range(5)), return_exceptions=True)
    assert [e.processed_status for e in effects if isinstance(e, webhooks.Effects)].count("processed") == 1
    assert all(isinstance(e, webhooks.Effects) for e in effects)
    assert payment_rows(stack, invoice_id) == [("stripe", "card", TOTAL, "CAD", "succeeded", "pi_dup", "")]
    assert outbox(stack, org, INVOICE_PAID.subject) == 1
    status, attempts, last_error, _, processed_at = event_row(stack, event["id"])
    assert (status, attempts, last_error) == ("processed", 1, None) and processed_at is not None


async def test_any_delivery_order_ends_in_the_same_state(db: Database, stack: Any) -> None:
    """Checkout completed, its intent succeeded, a partial refund, and a late 'payment_failed' of the
    same intent (plus an earlier failed attempt of another one), in several shuffled orders."""
    org = uuid.uuid4()
    finals = []
    for seed in range(6):
        invoice_id = await issued(db, org)
        meta = metadata(org, invoice_id)
        tag = f"{seed}_{org.hex[:8]}"
        intent = f"pi_ok_{tag}"
        sequence = [
            intent_event(f"evt_f0_{tag}", "payment_intent.payment_failed", meta, f"pi_bad_{tag}", TOTAL),
            checkout_completed(f"evt_cs_{tag}", meta, intent, TOTAL, f"cs_{tag}"),
            intent_event(f"evt_ok_{tag}", "payment_intent.succeeded", meta, intent, TOTAL),
            charge_refunded(f"evt_rf_{tag}", meta, intent, TOTAL, [(f"re_{tag}", 5000)]),
            refund_event(f"evt_ru_{tag}", "refund.updated", meta, intent, f"re_{tag}", 5000, "pending"),
            intent_event(f"evt_late_{tag}", "payment_intent.payment_failed", meta, intent, TOTAL),
        ]
        random.Random(seed).shuffle(sequence)
        for event in sequence:
            await deliver(db, event)
            await process_or_fail(db, org, event["id"])
        async with unit_of_work(db, org) as uow:
            paid, refunds = await payments.payments_of(uow, invoice_id)
            _, after = await payments.settle(uow, invoice_id, TODAY)
        finals.append(
            (
                sorted((p.provider_ref.replace(tag, ""), p.amount_cents, p.status) for p in paid),
                [(r.stripe_refund_id.replace(tag, ""), r.amount_cents, r.status) for r in refunds],
                after,
                await status_of(db, org, invoice_id),
            )
        )
    assert finals[0] == (
        [("pi_bad_", TOTAL, "failed"), ("pi_ok_", TOTAL, "succeeded")],
        [("re_", 5000, "succeeded")],
        Settlement(InvoiceStatus.PARTIAL, TOTAL - 5000, 5000, 1),
        InvoiceStatus.PARTIAL,
    )
    assert all(final == finals[0] for final in finals), finals
    statuses = admin_rows(
        stack,
        "SELECT processed_status, count(*) FROM billing.stripe_events WHERE org_id = %s GROUP BY 1",
        org,
    )
    assert statuses == [("processed", 36)]
    assert outbox(stack, org, INVOICE_REFUNDED.subject) == 6


async def test_payment_failed_dunning_once_per_invoice_by_its_key(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    meta = metadata(org, invoice_id)
    notices = []
    for n in range(3):
        event = intent_event(
            f"evt_fail_{n}_{org.hex}", "payment_intent.payment_failed", meta, f"pi_f{n}", TOTAL
        )
        await deliver(db, event)
        notices.extend((await process(db, org, event["id"])).dunning)
        assert (await process(db, org, event["id"])).dunning == []  # the same event: no second effect
    assert len(notices) == 3 and len({webhooks.dunning_dedupe_key(n.invoice_id) for n in notices}) == 1
    assert webhooks.dunning_dedupe_key(invoice_id) == f"invoice:{invoice_id}:dunning:payment_failed"
    assert notices[0] == webhooks.DunningNotice(
        invoice_id, "INV-000001", "ada@example.com", "Ada Client", "CAD", TOTAL
    )
    assert [r[4] for r in payment_rows(stack, invoice_id)] == ["failed"] * 3
    # Once paid, a failure (of a new attempt, or late for the paid one) sends nothing.
    paid = intent_event(f"evt_paid_{org.hex}", "payment_intent.succeeded", meta, "pi_f1", TOTAL)
    late = intent_event(f"evt_late_{org.hex}", "payment_intent.payment_failed", meta, "pi_f9", TOTAL)
    for event in (paid, late):
        await deliver(db, event)
    assert (await process(db, org, paid["id"])).payment_changed
    effects = await process(db, org, late["id"])
    assert effects.dunning == [] and effects.processed_status == "processed"
    assert await status_of(db, org, invoice_id) is InvoiceStatus.PAID

    # Still owed in part: a 'failed' delivered after its intent succeeded writes to nobody.
    partial = await issued(db, org)
    meta = metadata(org, partial)
    ok = intent_event(f"evt_pok_{org.hex}", "payment_intent.succeeded", meta, "pi_p", 1000)
    late_fail = intent_event(f"evt_pfail_{org.hex}", "payment_intent.payment_failed", meta, "pi_p", 1000)
    for event in (ok, late_fail):
        await deliver(db, event)
    await process(db, org, ok["id"])
    effects = await process(db, org, late_fail["id"])
    assert effects.dunning == [] and not effects.payment_changed
    assert await status_of(db, org, partial) is InvoiceStatus.PARTIAL


async def test_a_deposit_checkout_raises_deposit_paid_once_and_completes_the_session(
    db: Database, stack: Any
) -> None:
    org, booking = uuid.uuid4(), uuid.uuid4()
    session_id = f"cs_dep_{org.hex}"
    async with unit_of_work(db, org) as uow:
        await uow.session.execute(
            checkout_sessions.insert().values(
                id=session_id,
                org_id=org,
                purpose="deposit",
                booking_id=booking,
                amount_cents=2500,
                currency="CAD",
                url="https://checkout.stripe.test/c/pay/x",
            )
        )
    meta = {"org_id": str(org), "booking_id": str(booking), "purpose": "deposit"}
    event = checkout_completed(f"evt_dep_{org.hex}", meta, "pi_dep", 2500, session_id)
    intent = intent_event(f"evt_dep_pi_{org.hex}", "payment_intent.succeeded", meta, "pi_dep", 2500)
    for e in (event, event, intent):
        await deliver(db, e)
    effects = await process(db, org, event["id"])
    assert effects.deposit_paid == webhooks.DepositPayment(booking, 2500, "CAD", "pi_dep")
    assert (await process(db, org, event["id"])).deposit_paid is None
    assert (await process(db, org, intent["id"])).processed_status == "ignored"  # booking's money, not ours
    assert outbox(stack, org, DEPOSIT_PAID.subject) == 1
    assert admin_rows(stack, "SELECT status FROM billing.checkout_sessions WHERE id = %s", session_id) == [
        ("complete",)
    ]
    assert admin_rows(stack, "SELECT count(*) FROM billing.invoice_payments WHERE org_id = %s", org) == [(0,)]


async def test_an_unknown_invoice_fails_with_backoff_then_succeeds(db: Database, stack: Any) -> None:
    org, other_org = uuid.uuid4(), uuid.uuid4()
    elsewhere = await issued(db, other_org)  # exists, but in another org
    event = intent_event(
        f"evt_nf_{org.hex}", "payment_intent.succeeded", metadata(org, elsewhere), "pi_nf", TOTAL
    )
    await deliver(db, event)
    for attempt, wait in ((1, 30), (2, 60), (3, 120)):
        with pytest.raises(NotFound):
            await process(db, org, event["id"])
        async with unit_of_work(db, org) as uow:
            await webhooks.record_failure(uow, event["id"], "invoice not found " + "x" * 2000)
        status, attempts, last_error, delay, _ = event_row(stack, event["id"])
        assert (status, attempts, len(last_error)) == ("failed", attempt, webhooks.MAX_ERROR)
        assert timedelta(seconds=wait - 5) < delay <= timedelta(seconds=wait)
    assert webhooks.retry_delay(30) == timedelta(seconds=webhooks.RETRY_MAX_SECONDS)
    assert payment_rows(stack, elsewhere) == []
    # Another org cannot process (or see) this org's event.
    with pytest.raises(NotFound):
        await process(db, other_org, event["id"])
    # Once the invoice is visible (here: the event names one of this org), processing succeeds.
    mine = await issued(db, org)
    admin_rows(
        stack,
        "UPDATE billing.stripe_events SET invoice_id = %s WHERE event_id = %s RETURNING 1",
        mine,
        event["id"],
    )
    assert (await process(db, org, event["id"])).processed_status == "processed"
    status, attempts, last_error, _, _ = event_row(stack, event["id"])
    assert (status, attempts, last_error) == ("processed", 4, None)
    # A failure recorded late (another worker processed it meanwhile) does not undo that.
    async with unit_of_work(db, org) as uow:
        await webhooks.record_failure(uow, event["id"], "stale worker")
    assert event_row(stack, event["id"])[:3] == ("processed", 4, None)


async def test_unknown_types_are_ignored_and_refunds_without_invoice_wait(db: Database, stack: Any) -> None:
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    other = envelope(
        f"evt_cust_{org.hex}",
        "customer.updated",
        {"id": "cus_1", "object": "customer", "email": EMAIL, "metadata": {"org_id": str(org)}},
    )
    await deliver(db, other)
    assert (await process(db, org, other["id"])).processed_status == "ignored"
    # A refund with our org but no invoice named: its payment names the invoice once it is recorded.
    bare = refund_event(
        f"evt_bare_{org.hex}", "refund.created", {"org_id": str(org)}, "pi_b", "re_b", 100, "succeeded"
    )
    await deliver(db, bare)
    assert await process_or_fail(db, org, bare["id"]) is None
    assert event_row(stack, bare["id"])[0] == "failed"
    paid = intent_event(
        f"evt_b_{org.hex}", "payment_intent.succeeded", metadata(org, invoice_id), "pi_b", 1000
    )
    await deliver(db, paid)
    await process(db, org, paid["id"])
    assert (await process(db, org, bare["id"])).payment_changed
    async with unit_of_work(db, org) as uow:
        assert (await payments.summaries(uow, [invoice_id]))[invoice_id].paid_cents == 900


async def test_list_events_filters_and_never_returns_facts(db: Database) -> None:
    org, other_org = uuid.uuid4(), uuid.uuid4()
    first, second = await issued(db, org), await issued(db, org)
    booking = uuid.uuid4()
    events = [
        intent_event(f"evt_l1_{org.hex}", "payment_intent.succeeded", metadata(org, first), "pi_l1", 100),
        intent_event(
            f"evt_l2_{org.hex}", "payment_intent.payment_failed", metadata(org, second), "pi_l2", 100
        ),
        checkout_completed(
            f"evt_l3_{org.hex}",
            {"org_id": str(org), "booking_id": str(booking), "purpose": "deposit"},
            "pi_l3",
            100,
            "cs_l3",
        ),
    ]
    for n, event in enumerate(events):
        event["created"] = CREATED + n
        await deliver(db, event)
    await process(db, org, events[0]["id"])
    async with unit_of_work(db, org) as uow:
        everything, total = await webhooks.list_events(uow, None, None, None, 0, 0)
        by_invoice, _ = await webhooks.list_events(uow, str(first), None, None, 10, 0)
        by_booking, _ = await webhooks.list_events(uow, None, booking, "", 10, 0)
        pending, pending_total = await webhooks.list_events(uow, None, None, "pending", 1, 0)
        nothing = await webhooks.list_events(uow, uuid.uuid4(), None, None, 10, 0)
    assert total == 3 and [e.event_id for e in everything] == [e["id"] for e in reversed(events)]
    assert [e.event_id for e in by_invoice] == [events[0]["id"]] and by_invoice[
        0
    ].processed_status == "processed"
    assert [e.event_id for e in by_booking] == [events[2]["id"]] and by_booking[0].invoice_id is None
    assert pending_total == 2 and [e.event_id for e in pending] == [events[2]["id"]]
    assert nothing == ([], 0)
    assert not hasattr(everything[0], "facts") and "pi_l" not in repr(everything)
    assert {e.org_id for e in everything} == {org}
    with pytest.raises(InvalidArgument) as bad:
        async with unit_of_work(db, org) as uow:
            await webhooks.list_events(uow, "nope", "also-nope", "done", 10, 0)
    assert [v.field for v in bad.value.violations] == ["invoice_id", "booking_id", "status"]
    async with unit_of_work(db, other_org) as uow:
        assert await webhooks.list_events(uow, None, None, None, 10, 0) == ([], 0)


async def test_claim_due_leases_across_orgs_once_per_lease(db: Database, stack: Any) -> None:
    orgs = [uuid.uuid4(), uuid.uuid4()]
    mine = {}
    for org in orgs:
        invoice_id = await issued(db, org)
        event = intent_event(
            f"evt_claim_{org.hex}", "payment_intent.succeeded", metadata(org, invoice_id), "pi_c", 100
        )
        await deliver(db, event)
        mine[event["id"]] = org
    done = intent_event(f"evt_done_{orgs[0].hex}", "payment_intent.succeeded", metadata(orgs[0]), "pi_d", 100)
    await deliver(db, done)
    await process(db, orgs[0], done["id"])

    async def claimed() -> dict[str, uuid.UUID]:
        found: dict[str, uuid.UUID] = {}
        while batch := await webhooks.claim_due(db, 500, 60):  # earlier tests' rows may be due too
            found.update(batch)
        return found

    first = await claimed()
    assert {k: v for k, v in first.items() if k in mine} == mine
    assert done["id"] not in first
    assert not set(await claimed()) & set(mine)  # leased: not claimed again
    # Concurrent claimers never share a row.
    admin_rows(
        stack,
        "UPDATE billing.stripe_events SET next_attempt_at = now() - interval '1 second' "
        "WHERE event_id = ANY(%s) RETURNING 1",
        list(mine),
    )
    racing = await asyncio.gather(*(webhooks.claim_due(db, 1, 60) for _ in range(6)))
    taken = [event_id for batch in racing for event_id, _ in batch if event_id in mine]
    assert len(taken) == len(set(taken))
    # The lease runs out: due again.
    admin_rows(
        stack,
        "UPDATE billing.stripe_events SET next_attempt_at = now() - interval '1 second' "
        "WHERE event_id = ANY(%s) RETURNING 1",
        list(mine),
    )
    assert set(mine) <= set(await claimed())
    with pytest.raises(InvalidArgument):
        await webhooks.claim_due(db, 0, 60)


async def test_claimed_events_come_back_in_stripe_order(db: Database, stack: Any) -> None:
    """A payment's later failure stored first must not be processed before the success Stripe sent
    earlier (a dunning email to a client who paid): a lease hands events back by Stripe's event time."""
    org = uuid.uuid4()
    invoice_id = await issued(db, org)
    # Drain what earlier tests left due, so this batch holds only these three.
    while await webhooks.claim_due(db, 500, 60):
        pass
    events = [
        envelope(
            f"evt_order_{n}_{org.hex}",
            "payment_intent.succeeded",
            {"id": f"pi_o{n}", "object": "payment_intent", "metadata": metadata(org, invoice_id)},
            CREATED + offset,
        )
        for n, offset in ((0, 30), (1, 10), (2, 20))
    ]
    for event in events:
        await deliver(db, event)
    claimed = [event_id for event_id, _ in await webhooks.claim_due(db, 10, 60)]
    assert claimed == [events[1]["id"], events[2]["id"], events[0]["id"]]
