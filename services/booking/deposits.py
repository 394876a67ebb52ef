"""Deposits paid through billing's Stripe Checkout: booking's consumer of cws.billing.deposit.paid.

The event marks the booking's deposit paid exactly as a dispatcher's manual `deposit_paid` action
does (bookings.transition), which also confirms a pending booking and raises cws.booking.booking.
confirmed with reason deposit_paid. Booking keeps no deposit amount, so the event's amount and
payment intent are only logged.

Idempotent: the consumer's inbox drops a redelivered event id, and a deposit already marked paid (by
an earlier event for the same booking, or by hand) is left as it is, with no second event. A booking
that no longer exists (deleted meanwhile, or not in the event's org) is logged and the event
acknowledged: delivering it again could never find it.
"""

from __future__ import annotations

import uuid

from cws.billing.v1 import events_pb2 as billing_events

from libs.common.db import UnitOfWork
from libs.common.errors import NotFound
from libs.common.event_types import EventMeta
from libs.common.logs import get_logger

log = get_logger(__name__)


async def on_deposit_paid(uow: UnitOfWork, message: billing_events.DepositPaid, meta: EventMeta) -> None:
    """Consumer of cws.billing.deposit.paid: the booking's deposit paid, a pending booking confirmed."""
    # bookings imports events.py for its event constants, and events.py imports this module for its
    # consumers: importing bookings here, when the first event comes, keeps that cycle from biting.
    from services.booking import bookings

    org_id = uuid.UUID(message.org_id)
    if uow.org_id != org_id:  # the consumer set the org from the event's header; the payload's wins
        await uow.set_org(org_id)
    fields = {
        "event_id": meta.id,
        "org_id": message.org_id,
        "booking_id": message.booking_id,
        "amount_cents": message.amount_cents,
        "currency": message.currency,
        "payment_intent_id": message.payment_intent_id,
    }
    try:
        row = await bookings.get(uow, message.booking_id, for_update=True)
    except NotFound:
        log.warning("deposit_paid_unknown_booking", **fields)
        return
    if row.deposit_paid:
        log.info("deposit_paid_already", **fields)
        return
    updated, _ = await bookings.transition(uow, message.booking_id, "deposit_paid")
    log.info("deposit_paid_applied", status=updated.status, **fields)
