"""What the suite's events turn into at billing. The consumers that run these handlers are declared
in events.py.

Each handler runs inside the DurableConsumer's unit of work, in the event's org, with the event id
already in the consumer's inbox: what it writes commits with that inbox row or not at all. A handler
that raises (booking away, say) rolls all of it back and the event is delivered again later.

- org created → the org's billing row (name and time zone): orgs.on_org_created, wired directly.
- booking completed → its DRAFT invoice (from_bookings.py), from the booking as booking's API
  returns it: the event carries no price."""

from __future__ import annotations

import uuid

from cws.booking.v1 import booking_pb2
from cws.booking.v1 import events_pb2 as booking_events

from libs.common.context import service_context
from libs.common.db import UnitOfWork
from libs.common.event_types import EventMeta
from libs.common.grpc_client import acting_as
from libs.common.logs import get_logger
from services.billing import from_bookings, orgs
from services.billing.peers import Peers
from services.billing.settings import BillingSettings

log = get_logger(__name__)


class Handlers:
    def __init__(self, settings: BillingSettings, peers: Peers) -> None:
        self.settings = settings
        self.peers = peers

    async def on_booking_completed(
        self, uow: UnitOfWork, event: booking_events.BookingChanged, meta: EventMeta
    ) -> None:
        org_id = uuid.UUID(event.org_id)
        if uow.org_id != org_id:
            await uow.set_org(org_id)
        if await from_bookings.has_invoice(uow, uuid.UUID(event.booking_id)):
            return  # the backfill got there first: no call to booking
        with acting_as(service_context("billing", event.org_id, meta.request_id)):
            found = await self.peers.booking.stub.GetBooking(
                booking_pb2.GetBookingRequest(booking_id=event.booking_id)
            )
        org = await orgs.get(uow, self.settings, self.peers)
        created = await from_bookings.draft_for_booking(
            uow, found.booking, org, orgs.today_in(found.booking.time_zone or org.time_zone)
        )
        log.info("draft_invoice_for_booking", booking_id=event.booking_id, created=created is not None)
