"""What the suite's events turn into at notify: emails and exports in the outbox. The consumers that
run these handlers are declared in events.py.

Each handler runs inside the DurableConsumer's unit of work, in the event's org, with the event id
already in the consumer's inbox: its outbox rows commit with that inbox row or not at all, so an
event handled twice (a redelivery, a replay) enqueues nothing twice. The dedupe keys make the same
true across events (a booking confirmed twice still gets one confirmation email). A handler that
raises (IAM away, say) rolls all of it back, and the event is delivered again later.

- booking confirmed → a confirmation email to the client (none without a client email).
- client login requested → a portal token minted by IAM and the magic link by email.
- user created / password reset → a notification to the user. The temporary password is in it only
  when both IAM and notify run with EMAIL_TEMP_PASSWORDS=true. The event never carries it: it says
  one is waiting, and the handler claims it from IAM (ClaimTemporaryPassword, which deletes IAM's
  copy), claiming it even when this notify does not email passwords, so that nothing waits in IAM
  for nobody. Such emails are redacted after delivery. The claim is once: should this handler's own
  transaction fail after it, the redelivered event finds nothing and the email goes without the
  password (the admin saw it once in the API answer, as seed 002 says, and can reset again). An
  OWNER with no password to send gets no email: that is the org's founder, who chose their own
  password at sign-up, or an owner created by another owner, who hands the password over in person;
  telling either that "an administrator will give you a password" would be wrong or idle.
- sign-up requested → to the address: the confirmation token (minted by IAM on request,
  IssueSignupToken), or, when the address has an account already, a note saying so.
- lead created → an export row (EXPORT_MODE webhook or sheets; nothing when off).
- invoice payment failed (billing) → seed 002's dunning-lite email to the invoice's client, one per
  invoice whatever the number of failures (dedupe invoice:<id>:dunning:payment_failed): the number,
  the amount owed and a link to the invoice in the client portal, where the client signs in by magic
  link and pays. The event carries no token and nothing of Stripe's payload, and neither does the email.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from urllib.parse import urlencode, urlparse

import grpc
from cws.billing.v1 import events_pb2 as billing_events
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events
from cws.iam.v1 import iam_pb2

from libs.common.context import service_context
from libs.common.db import UnitOfWork
from libs.common.event_types import EventMeta
from libs.common.grpc_client import acting_as
from libs.common.money import format_cents
from libs.common.roles import Role
from services.notify import emails, orgs
from services.notify.outbox import enqueue
from services.notify.peers import Peers
from services.notify.settings import NotifySettings

# The magic link's path and query parameter at the gateway (gateway/routes/portal.py).
CLIENT_CALLBACK_PATH = "/client/login/callback"
# Where a sign-up's token is confirmed (gateway/routes/auth.py), at the same public address.
SIGNUP_CONFIRM_PATH = "/v1/auth/signup/confirm"
# An invoice in the client portal (behind the magic-link sign-in), at the same public address.
CLIENT_INVOICE_PATH = "/invoices/{invoice_id}"


async def _in_org(uow: UnitOfWork, org_id: str) -> None:
    """The consumer set the org from the event's header; the payload's org must agree."""
    if uow.org_id is None or str(uow.org_id) != org_id:
        await uow.set_org(uuid.UUID(org_id))


class Handlers:
    def __init__(self, settings: NotifySettings, peers: Peers) -> None:
        self.settings = settings
        self.peers = peers

    async def booking_confirmed(
        self, uow: UnitOfWork, event: booking_events.BookingChanged, meta: EventMeta
    ) -> None:
        if not event.client_email:
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        email = emails.booking_confirmed(
            to=event.client_email,
            booking_id=event.booking_id,
            starts_at=event.starts_at.ToDatetime(tzinfo=UTC),
            ends_at=event.ends_at.ToDatetime(tzinfo=UTC) if event.HasField("ends_at") else None,
            time_zone=org.time_zone,
            org_name=org.name,
        )
        await emails.enqueue_email(
            uow, email, f"email:booking_confirmed:booking:{event.booking_id}", from_name=org.name
        )

    async def client_login_requested(
        self, uow: UnitOfWork, event: iam_events.ClientLoginRequested, meta: EventMeta
    ) -> None:
        if not event.email:
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        with acting_as(service_context("notify", event.org_id)):
            issued = await self.peers.iam.stub.IssueClientPortalToken(
                iam_pb2.IssueClientPortalTokenRequest(email=event.email)
            )
        base = self.settings.client_portal_base_url.rstrip("/")
        link = f"{base}{CLIENT_CALLBACK_PATH}?{urlencode({'token': issued.token})}"
        email = emails.client_login(to=event.email, link=link, org_name=org.name)
        await emails.enqueue_email(uow, email, f"email:client_login:event:{meta.id}", from_name=org.name)

    async def _claim_temp_password(self, event: iam_events.UserCreated | iam_events.UserPasswordReset) -> str:
        """The password IAM holds for this event, claimed (IAM deletes it) whether or not this notify
        emails passwords; "" unless it does and one was still waiting."""
        if not event.temp_password_waiting:
            return ""
        with acting_as(service_context("notify", event.org_id)):
            claimed = await self.peers.iam.stub.ClaimTemporaryPassword(
                iam_pb2.ClaimTemporaryPasswordRequest(user_id=event.user_id)
            )
        return claimed.temp_password if claimed.found and self.settings.email_temp_passwords else ""

    async def user_created(self, uow: UnitOfWork, event: iam_events.UserCreated, meta: EventMeta) -> None:
        if not event.email or (event.role == Role.OWNER and not event.temp_password_waiting):
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        temp_password = await self._claim_temp_password(event)
        if event.role == Role.OWNER and not temp_password:
            return
        email = emails.user_created(
            to=event.email, role=event.role, org_name=org.name, temp_password=temp_password
        )
        await emails.enqueue_email(uow, email, f"email:user_created:event:{meta.id}", from_name=org.name)

    async def password_reset(
        self, uow: UnitOfWork, event: iam_events.UserPasswordReset, meta: EventMeta
    ) -> None:
        if not event.email:
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        temp_password = await self._claim_temp_password(event)
        email = emails.password_reset(to=event.email, org_name=org.name, temp_password=temp_password)
        await emails.enqueue_email(uow, email, f"email:password_reset:event:{meta.id}", from_name=org.name)

    async def signup_requested(
        self, uow: UnitOfWork, event: iam_events.SignupRequested, meta: EventMeta
    ) -> None:
        """Mail for a sign-up: its org does not exist yet (the row is kept under the org it would
        create), so the sender is the installation's EMAIL_FROM_NAME, not an org's name."""
        if not event.email:
            return
        await _in_org(uow, event.org_id)
        if not event.signup_id:
            email = emails.signup_existing(to=event.email, org_name=event.org_name)
        else:
            try:
                with acting_as(service_context("notify", event.org_id)):
                    issued = await self.peers.iam.stub.IssueSignupToken(
                        iam_pb2.IssueSignupTokenRequest(signup_id=event.signup_id)
                    )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:  # confirmed already, or expired
                    return
                raise
            base = self.settings.client_portal_base_url.rstrip("/")
            email = emails.signup_confirm(
                to=event.email,
                org_name=event.org_name,
                token=issued.token,
                confirm_url=f"{base}{SIGNUP_CONFIRM_PATH}",
                expires_at=issued.expires_at.ToDatetime(tzinfo=UTC),
            )
        await emails.enqueue_email(uow, email, f"email:signup:event:{meta.id}")

    async def lead_created(self, uow: UnitOfWork, event: booking_events.LeadCreated, meta: EventMeta) -> None:
        if self.settings.export_mode == "off":
            return
        await _in_org(uow, event.org_id)
        await enqueue(
            uow,
            kind="export",
            dedupe_key=f"export:lead_created:lead:{event.lead_id}",
            payload={
                "type": "lead.created",
                "data": {
                    "org_id": event.org_id,
                    "lead_id": event.lead_id,
                    "name": event.name,
                    "email": event.email,
                    "postal_code": event.postal_code,
                    "cleaning_type": event.cleaning_type,
                    "total_before_tax_cents": event.total_before_tax_cents,
                    "created_at": meta.time.isoformat(),
                },
            },
            target=self.export_target(),
        )

    async def invoice_payment_failed(
        self, uow: UnitOfWork, event: billing_events.InvoicePaymentFailed, meta: EventMeta
    ) -> None:
        if not event.client_email:
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        base = self.settings.client_portal_base_url.rstrip("/")
        email = emails.invoice_payment_failed(
            to=event.client_email,
            client_name=event.client_name,
            number=event.number,
            amount=format_cents(event.outstanding_cents, event.currency),
            retry_link=base + CLIENT_INVOICE_PATH.format(invoice_id=event.invoice_id),
            org_name=org.name,
        )
        # Per invoice, not per event: a second failure of the same invoice sends nothing more.
        await emails.enqueue_email(
            uow, email, f"invoice:{event.invoice_id}:dunning:payment_failed", from_name=org.name
        )

    def export_target(self) -> str:
        if self.settings.export_mode == "webhook":
            return urlparse(self.settings.export_webhook_url).hostname or ""
        return self.settings.export_mode
