"""Booking's events as code: what it publishes (subject paired with message type), what it consumes,
and what every replica hears for its in-process cache.

Published events leave through the outbox: `uow.add_event(BOOKING_CONFIRMED, message)` writes them in
the transaction that caused them. Consumed events are re-declared here exactly as their producer
declares them (services never import each other; tests/test_event_catalogue.py keeps the two equal).

The domain modules import the constants from here, and this module imports `orgs`, `deposits` and
`entitlements` for their handlers: none of them may import this module at import time (deposits
imports `bookings`, which does, inside its handler only).
"""

from __future__ import annotations

from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events

from libs.common.event_types import Broadcast, Consumer, Event, audit_event
from services.booking import deposits, entitlements, orgs

# --- published ----------------------------------------------------------------------------------

BOOKING_LEAD_CREATED = Event(
    "cws.booking.lead.created",
    booking_events.LeadCreated,
    doc="a lead came in through the public form, with the estimate it was quoted",
)
BOOKING_CREATED = Event(
    "cws.booking.booking.created",
    booking_events.BookingChanged,
    doc="a booking was made, from a lead or by a dispatcher; it is pending",
)
BOOKING_CONFIRMED = Event(
    "cws.booking.booking.confirmed",
    booking_events.BookingChanged,
    doc="a booking was confirmed by a dispatcher, or by its deposit being paid (reason deposit_paid)",
)
BOOKING_STARTED = Event(
    "cws.booking.booking.started",
    booking_events.BookingChanged,
    doc="the crew started the job (in progress)",
)
BOOKING_RESCHEDULED = Event(
    "cws.booking.booking.rescheduled",
    booking_events.BookingChanged,
    doc="a booking moved to another time; its team and workers moved with it",
)
BOOKING_CANCELLED = Event(
    "cws.booking.booking.cancelled",
    booking_events.BookingChanged,
    doc="a booking was cancelled (reason given); its team and workers are free again",
)
BOOKING_COMPLETED = Event(
    "cws.booking.booking.completed",
    booking_events.BookingChanged,
    doc="the job is done; an NPS survey was issued for it",
)
BOOKING_DELETED = Event(
    "cws.booking.booking.deleted",
    booking_events.BookingChanged,
    doc="a pending booking nobody confirmed or paid a deposit for was deleted by the cleanup (reason pending_expired)",
)
BOOKING_ASSIGNED = Event(
    "cws.booking.booking.assigned",
    booking_events.BookingChanged,
    doc="a booking was assigned to a team and/or workers (worker_ids), replacing its previous assignment",
)
BOOKING_NPS_SUBMITTED = Event(
    "cws.booking.nps.submitted",
    booking_events.NpsSubmitted,
    doc="a client answered the NPS survey of a completed booking",
)
BOOKING_WORKER_DEACTIVATED = Event(
    "cws.booking.worker.deactivated",
    booking_events.WorkerDeactivated,
    doc="a worker was deactivated or deleted (was_active: they were active until then): portal access ends",
)
BOOKING_WORKER_ADDED = Event(
    "cws.booking.worker.added",
    booking_events.WorkerAdded,
    doc="a worker was created, or an inactive worker reactivated: one more active worker",
)
# Raised by the unit of work for every admin write (Database(audit_admin_writes=True)), not by a module.
AUDIT_RECORDED = audit_event("booking")

PUBLISHED: tuple[Event[Any], ...] = (
    BOOKING_LEAD_CREATED,
    BOOKING_CREATED,
    BOOKING_CONFIRMED,
    BOOKING_STARTED,
    BOOKING_RESCHEDULED,
    BOOKING_CANCELLED,
    BOOKING_COMPLETED,
    BOOKING_DELETED,
    BOOKING_ASSIGNED,
    BOOKING_NPS_SUBMITTED,
    BOOKING_WORKER_DEACTIVATED,
    BOOKING_WORKER_ADDED,
    AUDIT_RECORDED,
)

# --- consumed -----------------------------------------------------------------------------------

IAM_ORG_CREATED = Event(
    "cws.iam.org.created",
    iam_events.OrgCreated,
    doc="an org was created, with its name, owner and time zone (the profile follows it if sent again)",
)
BILLING_DEPOSIT_PAID = Event(
    "cws.billing.deposit.paid",
    billing_events.DepositPaid,
    doc="a booking's deposit was paid through Stripe Checkout; booking marks it paid",
)
BILLING_SUBSCRIPTION_PAUSED = Event(
    "cws.billing.subscription.paused",
    billing_events.SubscriptionChanged,
    doc="an org's subscription was paused (reason code given); creating bookings, workers and photos stops",
)
BILLING_SUBSCRIPTION_RESUMED = Event(
    "cws.billing.subscription.resumed",
    billing_events.SubscriptionChanged,
    doc="an org's paused subscription was resumed (reason code given); creating work is allowed again",
)

# Unannotated, so that mypy checks each handler against its event's message type.
CONSUMERS = (
    Consumer(
        "booking-org-created",
        IAM_ORG_CREATED,
        orgs.on_org_created,
        doc="the org's booking profile (public key, name, time zone) and default pricing config",
    ),
    Consumer(
        "booking-deposit-paid",
        BILLING_DEPOSIT_PAID,
        deposits.on_deposit_paid,
        doc="the booking's deposit marked paid and a pending booking confirmed, as the manual action does",
    ),
    Consumer(
        "booking-subscription-paused",
        BILLING_SUBSCRIPTION_PAUSED,
        entitlements.on_subscription_changed,
        doc="the org marked paused: new bookings and workers refused (an older event than the last is ignored)",
    ),
    Consumer(
        "booking-subscription-resumed",
        BILLING_SUBSCRIPTION_RESUMED,
        entitlements.on_subscription_changed,
        doc="the org marked active again (an event older than the last one applied is ignored)",
    ),
)

# Every replica hears these (a durable consumer above reaches only one): each empties its own cache.
BROADCASTS = (
    Broadcast(
        "booking-org-profile-cache",
        IAM_ORG_CREATED,
        orgs.on_org_announced,
        doc="each replica drops its cached profile of the org, and caches none older than the change",
    ),
)
