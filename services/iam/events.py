"""What iam publishes, and what it consumes: the admin writes other services record
(cws.<service>.audit.recorded), so that admin_audit_logs, owned here, holds every admin write of the
suite."""

from __future__ import annotations

from typing import Any

from cws.booking.v1 import events_pb2 as booking_events
from cws.common.v1 import audit_pb2
from cws.iam.v1 import events_pb2

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.event_types import Consumer, Event, EventMeta, audit_event
from services.iam import audit, portal_sessions

# --- published ---------------------------------------------------------------------------------

IAM_ORG_CREATED = Event(
    "cws.iam.org.created",
    events_pb2.OrgCreated,
    doc="an org and its owner exist (sign-up or the operator console)",
)
IAM_USER_CREATED = Event(
    "cws.iam.user.created",
    events_pb2.UserCreated,
    doc="a user was added; with EMAIL_TEMP_PASSWORDS=true a temporary password waits for notify to claim",
)
IAM_USER_PASSWORD_RESET = Event(
    "cws.iam.user.password_reset",
    events_pb2.UserPasswordReset,
    doc="a user's password was reset; with EMAIL_TEMP_PASSWORDS=true the new one waits for notify to claim",
)
IAM_SESSION_REVOKED = Event(
    "cws.iam.session.revoked",
    events_pb2.SessionRevoked,
    doc="sessions ended (logout, reset, MFA change, refresh-token reuse): their access tokens stop working",
)
IAM_MFA_CHANGED = Event(
    "cws.iam.mfa.changed",
    events_pb2.MfaChanged,
    doc="a user's TOTP second factor was enabled or disabled",
)
IAM_BREAK_GLASS_STARTED = Event(
    "cws.iam.break_glass.started",
    events_pb2.BreakGlassStarted,
    doc="an owner or admin minted a break-glass token (with its reason and expiry)",
)
IAM_CLIENT_LOGIN_REQUESTED = Event(
    "cws.iam.client_login.requested",
    events_pb2.ClientLoginRequested,
    doc="a client asked for a portal magic link; the event carries no token",
)

IAM_SIGNUP_REQUESTED = Event(
    "cws.iam.signup.requested",
    events_pb2.SignupRequested,
    doc="someone asked to sign up with an email: a confirmation to send, or a note that it has an account",
)

PUBLISHED: tuple[Event[Any], ...] = (
    IAM_ORG_CREATED,
    IAM_USER_CREATED,
    IAM_USER_PASSWORD_RESET,
    IAM_SESSION_REVOKED,
    IAM_MFA_CHANGED,
    IAM_BREAK_GLASS_STARTED,
    IAM_CLIENT_LOGIN_REQUESTED,
    IAM_SIGNUP_REQUESTED,
)

# --- consumed ----------------------------------------------------------------------------------

# Services whose admin writes are audited here: a new service (billing, media) adds its name, and
# gets its event declaration and its durable consumer (iam-audit-<service>) from the lines below.
AUDITED_SERVICES = ("booking", "billing", "media", "notify", "integrations")
AUDIT_RECORDED: tuple[Event[audit_pb2.AdminAuditRecorded], ...] = tuple(
    audit_event(service) for service in AUDITED_SERVICES
)


async def on_admin_audit(uow: UnitOfWork, message: audit_pb2.AdminAuditRecorded, meta: EventMeta) -> None:
    # The row belongs to the org the write happened in, which the message names.
    await uow.set_org(parse_id(message.org_id, "org_id"))
    await audit.record_from_service(uow, message)


# Events per transaction for the consumers that opt in (libs/common/events.py DurableConsumer).
EVENT_BATCH = 50

AUDIT_CONSUMERS: tuple[Consumer[audit_pb2.AdminAuditRecorded], ...] = tuple(
    Consumer(
        f"iam-audit-{event.producer}",
        event,
        on_admin_audit,
        doc=f"a row in admin_audit_logs for each admin write of {event.producer}",
        # Every admin write of the suite lands here: many rows per transaction (issue 15). The
        # handler only inserts, so a batch replayed one by one after a failure repeats nothing.
        batch=EVENT_BATCH,
    )
    for event in AUDIT_RECORDED
)

# Booking's declaration (services/booking/events.py), repeated here: services never import each other.
BOOKING_WORKER_DEACTIVATED = Event(
    "cws.booking.worker.deactivated",
    booking_events.WorkerDeactivated,
    doc="a worker was deactivated or deleted: their portal access ends",
)


async def on_worker_deactivated(
    uow: UnitOfWork, message: booking_events.WorkerDeactivated, meta: EventMeta
) -> None:
    """A worker who leaves loses the portal at once: their open sessions and unused links end."""
    await uow.set_org(parse_id(message.org_id, "org_id"))
    worker = str(parse_id(message.worker_id, "worker_id"))
    await portal_sessions.end_access(
        uow,
        portal_sessions.KINDS[portal_sessions.WORKER],
        worker,
        reason=f"worker_{message.reason or 'deactivated'}"[:100],
    )


CONSUMERS: tuple[Consumer[Any], ...] = (
    *AUDIT_CONSUMERS,
    Consumer(
        "iam-worker-deactivated",
        BOOKING_WORKER_DEACTIVATED,
        on_worker_deactivated,
        doc="ends the worker's portal sessions and revokes their unused portal links",
    ),
)
