"""What iam publishes, and what it consumes: the admin writes other services record
(cws.<service>.audit.recorded), so that admin_audit_logs, owned here, holds every admin write of the
suite."""

from __future__ import annotations

from typing import Any

from cws.common.v1 import audit_pb2
from cws.iam.v1 import events_pb2

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.event_types import Consumer, Event, EventMeta, audit_event
from services.iam import audit

# --- published ---------------------------------------------------------------------------------

IAM_ORG_CREATED = Event(
    "cws.iam.org.created",
    events_pb2.OrgCreated,
    doc="an org and its owner exist (sign-up or the operator console)",
)
IAM_USER_CREATED = Event(
    "cws.iam.user.created",
    events_pb2.UserCreated,
    doc="a user was added; temp_password only with EMAIL_TEMP_PASSWORDS=true",
)
IAM_USER_PASSWORD_RESET = Event(
    "cws.iam.user.password_reset",
    events_pb2.UserPasswordReset,
    doc="a user's password was reset; temp_password only with EMAIL_TEMP_PASSWORDS=true",
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

PUBLISHED: tuple[Event[Any], ...] = (
    IAM_ORG_CREATED,
    IAM_USER_CREATED,
    IAM_USER_PASSWORD_RESET,
    IAM_SESSION_REVOKED,
    IAM_MFA_CHANGED,
    IAM_BREAK_GLASS_STARTED,
    IAM_CLIENT_LOGIN_REQUESTED,
)

# --- consumed ----------------------------------------------------------------------------------

# Services whose admin writes are audited here: a new service (billing, media) adds its name, and
# gets its event declaration and its durable consumer (iam-audit-<service>) from the lines below.
AUDITED_SERVICES = ("booking", "notify")
AUDIT_RECORDED: tuple[Event[audit_pb2.AdminAuditRecorded], ...] = tuple(
    audit_event(service) for service in AUDITED_SERVICES
)


async def on_admin_audit(uow: UnitOfWork, message: audit_pb2.AdminAuditRecorded, meta: EventMeta) -> None:
    # The row belongs to the org the write happened in, which the message names.
    await uow.set_org(parse_id(message.org_id, "org_id"))
    await audit.record_from_service(uow, message)


CONSUMERS: tuple[Consumer[audit_pb2.AdminAuditRecorded], ...] = tuple(
    Consumer(
        f"iam-audit-{event.producer}",
        event,
        on_admin_audit,
        doc=f"a row in admin_audit_logs for each admin write of {event.producer}",
    )
    for event in AUDIT_RECORDED
)
