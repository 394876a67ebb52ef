"""Billing's events as code: what it publishes and what it consumes.

Published events leave through the outbox (`uow.add_event(INVOICE_PAID, message)`, in the transaction
that changed the invoice). Consumed events are re-declared exactly as their producers declare them
(tests/test_event_catalogue.py keeps the copies equal); their handlers are in handlers.py, wired by
`consumers` to the peers they call. Durable names are JetStream state: renaming one starts a new
consumer that replays the stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events
from cws.media.v1 import events_pb2 as media_events

from libs.common.event_types import Consumer, Event, audit_event
from services.billing import orgs, usage
from services.billing.handlers import Handlers
from services.billing.peers import Peers
from services.billing.settings import BillingSettings

# --- published -------------------------------------------------------------------------------------

INVOICE_ISSUED = Event(
    "cws.billing.invoice.issued",
    billing_events.InvoiceChanged,
    doc="an invoice was issued: numbered, its tax snapshot frozen (SENT, or PAID when it is for 0)",
)
INVOICE_SENT = Event(
    "cws.billing.invoice.sent",
    billing_events.InvoiceChanged,
    doc="an issued invoice was emailed to its client with a public link (the event carries no link)",
)
INVOICE_PAID = Event(
    "cws.billing.invoice.paid",
    billing_events.InvoiceChanged,
    doc="payments now cover an invoice's total (manual, Stripe, or set by reconcile)",
)
INVOICE_VOIDED = Event(
    "cws.billing.invoice.voided",
    billing_events.InvoiceChanged,
    doc="an invoice nobody had paid was cancelled; its number stays taken",
)
INVOICE_OVERDUE = Event(
    "cws.billing.invoice.overdue",
    billing_events.InvoiceChanged,
    doc="a SENT invoice passed its due date unpaid (the daily invoices-overdue job)",
)
INVOICE_REFUNDED = Event(
    "cws.billing.invoice.refunded",
    billing_events.InvoiceChanged,
    doc="a Stripe refund on an invoice succeeded; the invoice's status follows what is still paid",
)
INVOICE_PAYMENT_FAILED = Event(
    "cws.billing.invoice.payment_failed",
    billing_events.InvoicePaymentFailed,
    doc="a card payment of an invoice failed while it is owed; notify sends one dunning email per invoice",
)
DEPOSIT_PAID = Event(
    "cws.billing.deposit.paid",
    billing_events.DepositPaid,
    doc="a booking's deposit was paid through Stripe Checkout; booking marks it paid",
)
SUBSCRIPTION_PAUSED = Event(
    "cws.billing.subscription.paused",
    billing_events.SubscriptionChanged,
    doc="an org's subscription was paused (reason code given); creating bookings, workers and photos stops",
)
SUBSCRIPTION_RESUMED = Event(
    "cws.billing.subscription.resumed",
    billing_events.SubscriptionChanged,
    doc="an org's paused subscription was resumed (reason code given); creating work is allowed again",
)
AUDIT_RECORDED = audit_event("billing")

PUBLISHED: tuple[Event[Any], ...] = (
    INVOICE_ISSUED,
    INVOICE_SENT,
    INVOICE_PAID,
    INVOICE_VOIDED,
    INVOICE_OVERDUE,
    INVOICE_REFUNDED,
    INVOICE_PAYMENT_FAILED,
    DEPOSIT_PAID,
    SUBSCRIPTION_PAUSED,
    SUBSCRIPTION_RESUMED,
    AUDIT_RECORDED,
)

# --- consumed (declared by iam, booking and media) ---------------------------------------------------------

IAM_ORG_CREATED = Event(
    "cws.iam.org.created",
    iam_events.OrgCreated,
    doc="an org was created, with its name, owner and time zone (the profile follows it if sent again)",
)
BOOKING_COMPLETED = Event(
    "cws.booking.booking.completed",
    booking_events.BookingChanged,
    doc="the job is done; an NPS survey was issued for it",
)
BOOKING_CREATED = Event(
    "cws.booking.booking.created",
    booking_events.BookingChanged,
    doc="a booking was made, from a lead or by a dispatcher; it is pending",
)
BOOKING_DELETED = Event(
    "cws.booking.booking.deleted",
    booking_events.BookingChanged,
    doc="a pending booking nobody confirmed or paid a deposit for was deleted by the cleanup (reason pending_expired)",
)
BOOKING_WORKER_ADDED = Event(
    "cws.booking.worker.added",
    booking_events.WorkerAdded,
    doc="a worker was created, or an inactive worker reactivated: one more active worker",
)
BOOKING_WORKER_DEACTIVATED = Event(
    "cws.booking.worker.deactivated",
    booking_events.WorkerDeactivated,
    doc="a worker was deactivated or deleted (was_active: they were active until then): portal access ends",
)
MEDIA_PHOTO_STORED = Event(
    "cws.media.photo.stored",
    media_events.PhotoStored,
    doc="a job photo was stored (its object written, its row committed); bytes count toward the org's storage",
)
MEDIA_PHOTO_DELETED = Event(
    "cws.media.photo.deleted",
    media_events.PhotoDeleted,
    doc="a job photo was deleted and tombstoned; the storage janitor removes its object from the backend",
)


# Events per transaction for the usage consumers (libs/common/events.py DurableConsumer): every
# booking made is one (issue 15). Their handlers only insert a row unique per event id, so a batch
# replayed one by one after a failure counts nothing twice.
USAGE_BATCH = 50


def consumers(settings: BillingSettings, peers: Peers) -> Sequence[Consumer[Any]]:
    handlers = Handlers(settings, peers)
    return (
        Consumer(
            "billing-org-created",
            IAM_ORG_CREATED,
            orgs.on_org_created,
            doc="the org's billing settings row (name and time zone for invoices and PDFs)",
        ),
        Consumer(
            "billing-booking-completed",
            BOOKING_COMPLETED,
            handlers.on_booking_completed,
            doc="a DRAFT invoice from the booking's price, read from booking (one per booking)",
        ),
        # Usage counters (usage.py): one row per event id, so a redelivery counts once.
        Consumer(
            "billing-usage-booking-created",
            BOOKING_CREATED,
            usage.on_booking_created,
            doc="usage: +1 booking, in the month the booking was created",
            batch=USAGE_BATCH,
        ),
        Consumer(
            "billing-usage-booking-deleted",
            BOOKING_DELETED,
            usage.on_booking_deleted,
            doc="usage: -1 booking, in the month the deleted booking was created",
            batch=USAGE_BATCH,
        ),
        Consumer(
            "billing-usage-worker-added",
            BOOKING_WORKER_ADDED,
            usage.on_worker_added,
            doc="usage: +1 worker",
            batch=USAGE_BATCH,
        ),
        Consumer(
            "billing-usage-worker-deactivated",
            BOOKING_WORKER_DEACTIVATED,
            usage.on_worker_deactivated,
            doc="usage: -1 worker, when the worker was active until then",
            batch=USAGE_BATCH,
        ),
        Consumer(
            "billing-usage-photo-stored",
            MEDIA_PHOTO_STORED,
            usage.on_photo_stored,
            doc="usage: +bytes of storage, the stored photo's size",
            batch=USAGE_BATCH,
        ),
        Consumer(
            "billing-usage-photo-deleted",
            MEDIA_PHOTO_DELETED,
            usage.on_photo_deleted,
            doc="usage: -bytes of storage, the deleted photo's size",
            batch=USAGE_BATCH,
        ),
    )
