"""Notify's events: what it publishes, what it consumes, and what each consumed event becomes.

Published: only its admin audit trail (cws.notify.audit.recorded), raised by the unit of work for
every admin or service write (ServiceApp's audit_admin_writes) and consumed by iam.

Consumed: events of iam, booking and billing, re-declared here as their producers declare them (the same
constant, subject and message; tests/test_event_catalogue.py checks the copies). Each consumer's
handler is in handlers.py (orgs.py for the org profile); `consumers` wires them to the settings and
the peers they need. Durable names are JetStream state: renaming one starts a new consumer that
replays the stream."""

from __future__ import annotations

from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events

from libs.common.event_types import Consumer, Event, audit_event
from services.notify import orgs
from services.notify.handlers import Handlers
from services.notify.peers import Peers
from services.notify.settings import NotifySettings

# --- published -------------------------------------------------------------------------------------

AUDIT_RECORDED = audit_event("notify")

PUBLISHED: tuple[Event[Any], ...] = (AUDIT_RECORDED,)

# --- consumed (declared by iam, booking and billing) -----------------------------------------------

IAM_ORG_CREATED = Event(
    "cws.iam.org.created", iam_events.OrgCreated, doc="an org was created, with its name and time zone"
)
IAM_USER_CREATED = Event(
    "cws.iam.user.created",
    iam_events.UserCreated,
    doc="a user was added; with EMAIL_TEMP_PASSWORDS=true a temporary password waits for notify to claim",
)
IAM_USER_PASSWORD_RESET = Event(
    "cws.iam.user.password_reset",
    iam_events.UserPasswordReset,
    doc="a user's password was reset; with EMAIL_TEMP_PASSWORDS=true the new one waits for notify to claim",
)
IAM_CLIENT_LOGIN_REQUESTED = Event(
    "cws.iam.client_login.requested",
    iam_events.ClientLoginRequested,
    doc="a client asked for a portal sign-in link (the event carries no token)",
)
IAM_SIGNUP_REQUESTED = Event(
    "cws.iam.signup.requested",
    iam_events.SignupRequested,
    doc="someone asked to sign up with an email: a confirmation to send, or a note that it has an account",
)
BOOKING_CONFIRMED = Event(
    "cws.booking.booking.confirmed", booking_events.BookingChanged, doc="a booking was confirmed"
)
BOOKING_LEAD_CREATED = Event(
    "cws.booking.lead.created", booking_events.LeadCreated, doc="a lead came in from the public form"
)
BILLING_INVOICE_PAYMENT_FAILED = Event(
    "cws.billing.invoice.payment_failed",
    billing_events.InvoicePaymentFailed,
    doc="a card payment of an invoice failed while it is owed; notify sends one dunning email per invoice",
)


# Events per transaction (libs/common/events.py DurableConsumer) for the consumers whose handlers
# only write notify's own tables (and may ask IAM for an org's profile, a read): a failure in a
# batch replays it one event at a time. Not for those that mint a token or claim a temporary
# password at IAM: a batch rolled back for another event's sake would spend that once-only claim.
EVENT_BATCH = 50


def consumers(settings: NotifySettings, peers: Peers) -> list[Consumer[Any]]:
    handlers = Handlers(settings, peers)
    return [
        Consumer(
            "notify-org-created",
            IAM_ORG_CREATED,
            orgs.on_org_created,
            doc="the org's name and time zone (notify.org_profiles)",
            batch=EVENT_BATCH,
        ),
        Consumer(
            "notify-booking-confirmed",
            BOOKING_CONFIRMED,
            handlers.booking_confirmed,
            doc="a confirmation email in the outbox (dedupe email:booking_confirmed:booking:<id>)",
            batch=EVENT_BATCH,
        ),
        Consumer(
            "notify-client-login",
            IAM_CLIENT_LOGIN_REQUESTED,
            handlers.client_login_requested,
            doc="a token from IAM (IssueClientPortalToken) and the magic-link email (dedupe by event id)",
        ),
        Consumer(
            "notify-user-created",
            IAM_USER_CREATED,
            handlers.user_created,
            doc="the onboarding email (dedupe by event id)",
        ),
        Consumer(
            "notify-password-reset",
            IAM_USER_PASSWORD_RESET,
            handlers.password_reset,
            doc="the reset notification (dedupe by event id)",
        ),
        Consumer(
            "notify-signup-requested",
            IAM_SIGNUP_REQUESTED,
            handlers.signup_requested,
            doc="the sign-up confirmation (token from IAM's IssueSignupToken) or an account-exists note",
        ),
        Consumer(
            "notify-lead-created",
            BOOKING_LEAD_CREATED,
            handlers.lead_created,
            doc="with EXPORT_MODE=webhook/sheets, the lead export (dedupe export:lead_created:lead:<id>)",
            batch=EVENT_BATCH,
        ),
        Consumer(
            "notify-invoice-payment-failed",
            BILLING_INVOICE_PAYMENT_FAILED,
            handlers.invoice_payment_failed,
            doc="a dunning email per invoice with a portal link (dedupe invoice:<id>:dunning:payment_failed)",
            batch=EVENT_BATCH,
        ),
    ]
