"""The loop that processes stored Stripe events: woken at once by the webhook endpoint (same process),
and polling for due retries and for rows stored by another replica or before a restart.

Each round leases due rows across orgs (billing.claim_stripe_events, SKIP LOCKED, a lease so that a
replica that dies mid-way leaves them to another after STRIPE_EVENTS_LEASE_SECONDS), then processes
each in its own transaction in its org: the payment rows, the invoice's new status, the row marked
processed and the outbox events (deposit paid, payment failed, invoice paid) commit together or not at
all. A failure rolls that back and records `last_error` in a second transaction, with the next try
after an exponential backoff (webhooks.retry_delay). So a process killed after storing an event and
before processing it processes it once when it (or another replica) comes back."""

from __future__ import annotations

import asyncio
import uuid

from cws.billing.v1 import events_pb2

from libs.common.cancellation import wait_woken
from libs.common.db import Database, unit_of_work
from libs.common.logs import get_logger
from services.billing import orgs, webhooks
from services.billing.events import INVOICE_PAYMENT_FAILED
from services.billing.peers import Peers
from services.billing.settings import BillingSettings

log = get_logger(__name__)


class WebhookProcessor:
    def __init__(self, db: Database, settings: BillingSettings, peers: Peers, arrived: asyncio.Event) -> None:
        self.db = db
        self.settings = settings
        self.peers = peers
        self.arrived = arrived

    async def run(self) -> None:
        while True:
            try:
                handled = await self.round()
            except Exception as exc:  # the database away: wait and go on, never end the loop
                log.warning("stripe_events_round_failed", error=str(exc))
                handled = 0
            if handled:
                continue  # a full batch may mean more are due
            self.arrived.clear()
            await wait_woken(self.arrived, self.settings.stripe_events_poll_seconds)

    async def round(self) -> int:
        """Process the events due now; how many were tried."""
        due = await webhooks.claim_due(
            self.db, self.settings.stripe_events_batch_size, self.settings.stripe_events_lease_seconds
        )
        for event_id, org_id in due:
            await self.process_one(event_id, org_id)
        return len(due)

    async def process_one(self, event_id: str, org_id: uuid.UUID) -> None:
        try:
            async with unit_of_work(self.db, org_id) as uow:
                today = await orgs.today(uow, self.settings, self.peers)
                effects = await webhooks.process(uow, event_id, today)
                for notice in effects.dunning:
                    uow.add_event(
                        INVOICE_PAYMENT_FAILED,
                        events_pb2.InvoicePaymentFailed(
                            org_id=str(org_id),
                            invoice_id=str(notice.invoice_id),
                            number=notice.number,
                            client_email=notice.client_email,
                            client_name=notice.client_name,
                            currency=notice.currency,
                            outstanding_cents=notice.outstanding_cents,
                        ),
                    )
            log.info("stripe_event_processed", event_id=event_id, status=effects.processed_status)
        except Exception as exc:
            log.warning("stripe_event_failed", event_id=event_id, error=str(exc))
            async with unit_of_work(self.db, org_id) as uow:
                await webhooks.record_failure(uow, event_id, _describe(exc))


def _describe(exc: Exception) -> str:
    """The error as finance sees it in the events view: its kind and message, never a payload."""
    return f"{type(exc).__name__}: {exc}"[:1000]
