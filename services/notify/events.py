"""Consumers of domain events: what the suite's events turn into at notify.

Each handler runs inside the DurableConsumer's unit of work, in the event's org, with the event id
already in the consumer's inbox: its outbox rows commit with that inbox row or not at all, so an
event handled twice (a redelivery, a replay) enqueues nothing twice. The dedupe keys make the same
true across events (a booking confirmed twice still gets one confirmation email).

- cws.booking.booking.confirmed → a confirmation email to the client (none without a client email).
- cws.iam.client_login.requested → a portal token minted by IAM and the magic link by email.
- cws.iam.user.created / cws.iam.user.password_reset → a notification to the user. The temporary
  password is in it only when both IAM and notify run with EMAIL_TEMP_PASSWORDS=true (IAM puts it
  in the event only then); such emails are redacted after delivery. An OWNER created without a
  password in the event gets no email: that is the org's founder, who chose their own password at
  sign-up, or an owner created by another owner, who hands the password over in person; telling
  either that "an administrator will give you a password" would be wrong or idle.
- cws.booking.lead.created → an export row (EXPORT_MODE webhook or sheets; nothing when off).
- cws.iam.org.created → notify's org profile (name and time zone for emails).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode, urlparse

from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events
from cws.iam.v1 import iam_pb2
from nats.aio.msg import Msg

from libs.common.db import UnitOfWork
from libs.common.events import Handler
from libs.common.logs import get_logger
from services.notify import emails, orgs
from services.notify.outbox import enqueue
from services.notify.peers import Peers
from services.notify.settings import NotifySettings

log = get_logger(__name__)

# The magic link's path and query parameter at the gateway (gateway/routes/portal.py).
CLIENT_CALLBACK_PATH = "/client/login/callback"


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    producer: str
    subject: str
    handler: Handler


def consumer_specs(settings: NotifySettings, peers: Peers) -> list[ConsumerSpec]:
    handlers = Handlers(settings, peers)
    return [
        ConsumerSpec("notify-org-created", "iam", "cws.iam.org.created", orgs.on_org_created),
        ConsumerSpec(
            "notify-booking-confirmed", "booking", "cws.booking.booking.confirmed", handlers.booking_confirmed
        ),
        ConsumerSpec(
            "notify-client-login", "iam", "cws.iam.client_login.requested", handlers.client_login_requested
        ),
        ConsumerSpec("notify-user-created", "iam", "cws.iam.user.created", handlers.user_created),
        ConsumerSpec("notify-password-reset", "iam", "cws.iam.user.password_reset", handlers.password_reset),
        ConsumerSpec("notify-lead-created", "booking", "cws.booking.lead.created", handlers.lead_created),
    ]


def event_id(message: Msg) -> str:
    headers = message.headers or {}
    return headers.get("ce-id") or headers.get("Nats-Msg-Id") or ""


def event_time(message: Msg) -> str:
    raw = (message.headers or {}).get("ce-time", "")
    try:
        return datetime.fromisoformat(raw).astimezone(UTC).isoformat()
    except ValueError:
        return datetime.now(UTC).isoformat()


async def _in_org(uow: UnitOfWork, org_id: str) -> None:
    """The consumer set the org from the event's header; the payload's org must agree."""
    if uow.org_id is None or str(uow.org_id) != org_id:
        await uow.set_org(uuid.UUID(org_id))


class Handlers:
    def __init__(self, settings: NotifySettings, peers: Peers) -> None:
        self.settings = settings
        self.peers = peers

    async def booking_confirmed(self, uow: UnitOfWork, message: Msg) -> None:
        event = booking_events.BookingChanged.FromString(message.data)
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

    async def client_login_requested(self, uow: UnitOfWork, message: Msg) -> None:
        event = iam_events.ClientLoginRequested.FromString(message.data)
        if not event.email:
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        issued = await self.peers.call_iam(
            "IssueClientPortalToken", iam_pb2.IssueClientPortalTokenRequest(email=event.email), event.org_id
        )
        base = self.settings.client_portal_base_url.rstrip("/")
        link = f"{base}{CLIENT_CALLBACK_PATH}?{urlencode({'token': issued.token})}"
        email = emails.client_login(to=event.email, link=link, org_name=org.name)
        await emails.enqueue_email(
            uow, email, f"email:client_login:event:{event_id(message)}", from_name=org.name
        )

    async def user_created(self, uow: UnitOfWork, message: Msg) -> None:
        event = iam_events.UserCreated.FromString(message.data)
        temp_password = event.temp_password if self.settings.email_temp_passwords else ""
        if not event.email or (event.role == "OWNER" and not temp_password):
            return
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        email = emails.user_created(
            to=event.email, role=event.role, org_name=org.name, temp_password=temp_password
        )
        await emails.enqueue_email(
            uow, email, f"email:user_created:event:{event_id(message)}", from_name=org.name
        )

    async def password_reset(self, uow: UnitOfWork, message: Msg) -> None:
        event = iam_events.UserPasswordReset.FromString(message.data)
        if not event.email:
            return
        temp_password = event.temp_password if self.settings.email_temp_passwords else ""
        await _in_org(uow, event.org_id)
        org = await orgs.profile(uow, self.peers)
        email = emails.password_reset(to=event.email, org_name=org.name, temp_password=temp_password)
        await emails.enqueue_email(
            uow, email, f"email:password_reset:event:{event_id(message)}", from_name=org.name
        )

    async def lead_created(self, uow: UnitOfWork, message: Msg) -> None:
        if self.settings.export_mode == "off":
            return
        event = booking_events.LeadCreated.FromString(message.data)
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
                    "created_at": event_time(message),
                },
            },
            target=self.export_target(),
        )

    def export_target(self) -> str:
        if self.settings.export_mode == "webhook":
            return urlparse(self.settings.export_webhook_url).hostname or ""
        return self.settings.export_mode
