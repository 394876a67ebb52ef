"""TOTP enrolment, verification and removal, as seed 002 describes.

Each needs the acting user's current password (`sessions.step_up`): whoever holds only an access
token must not be able to enrol their own authenticator, end the victim's other sessions and take a
fresh refresh chain, nor strip anyone's second factor. Run these under `sessions.counting_failures`,
which counts a wrong password as a failed login. The one exception is `operator_disable_totp`, for
the operator console (`python -m services.iam.manage disable-totp`), whose caller holds the database
already."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cws.iam.v1 import events_pb2
from sqlalchemy import update

from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition, PermissionDenied, Unauthenticated, invalid
from libs.common.roles import Role
from services.iam import audit, totp
from services.iam.accounts import find_account_for_operator, get_user
from services.iam.breakglass import MAX_REASON
from services.iam.events import IAM_MFA_CHANGED
from services.iam.models import User, users
from services.iam.sessions import (
    IssuedTokens,
    mark_session_mfa,
    read_totp_secret,
    resealed,
    revoke_user_sessions,
    step_up,
)
from services.iam.settings import IamSettings


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str


async def enroll(uow: UnitOfWork, settings: IamSettings, user_id: str, *, current_password: str) -> Enrolment:
    user = await get_user(uow, user_id, for_update=True)
    await step_up(user, settings, current_password)
    if user.totp_enabled:
        raise FailedPrecondition("TOTP is already enabled; disable it first", code="mfa_already_enabled")
    secret = totp.new_secret()
    await uow.session.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(totp_secret_enc=totp.encrypt_secret(secret, settings.auth_secret_key), totp_last_step=0)
    )
    return Enrolment(secret, totp.provisioning_uri(secret, user.email, settings.totp_issuer))


async def verify(
    uow: UnitOfWork, settings: IamSettings, *, user_id: str, session_id: str, code: str, current_password: str
) -> tuple[IssuedTokens, int]:
    user = await get_user(uow, user_id, for_update=True)
    await step_up(user, settings, current_password)
    if not user.totp_secret_enc:
        raise FailedPrecondition("enrol first: POST /v1/auth/2fa/enroll", code="mfa_not_enrolled")
    secret = read_totp_secret(user, settings)
    step = totp.matching_step(secret.plain, code, user.totp_last_step)
    if step is None:
        raise Unauthenticated("the TOTP code is invalid or was already used", code="mfa_required")
    await uow.session.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(totp_enabled=True, totp_last_step=step, **resealed(secret, settings))
    )
    revoked = await revoke_user_sessions(uow, user.id, reason="mfa_enabled", keep_session=session_id)
    await audit.record(uow, "iam.mfa.enable", resource_type="user", resource_id=str(user.id))
    uow.add_event(
        IAM_MFA_CHANGED,
        events_pb2.MfaChanged(org_id=str(uow.org_id), user_id=str(user.id), enabled=True),
    )
    fresh = await get_user(uow, user_id)
    return await mark_session_mfa(uow, session_id, fresh, settings), revoked


async def disable(
    uow: UnitOfWork,
    settings: IamSettings,
    *,
    actor_role: str,
    actor_user_id: str | None,
    current_password: str,
    target_user_id: str,
) -> int:
    """Clears a user's TOTP. The step-up is the acting OWNER's own password, whoever the target:
    an OWNER's access token alone must not strip the second factor off the org's other managers.
    `actor_user_id` None means a Basic Auth principal, whose request carried its password already
    (and which has no user row to check against)."""
    if actor_role != Role.OWNER:
        raise PermissionDenied("only an owner may disable two-factor authentication", code="forbidden_role")
    if actor_user_id is not None:
        await step_up(await get_user(uow, actor_user_id), settings, current_password)
    user = await get_user(uow, target_user_id, for_update=True)
    return await _clear_totp(uow, user, reason="mfa_disabled")


@dataclass(frozen=True)
class OperatorTotpReset:
    user_id: uuid.UUID
    org_id: uuid.UUID
    had_totp: bool
    revoked_sessions: int


async def operator_disable_totp(uow: UnitOfWork, *, email: str, reason: str) -> OperatorTotpReset:
    """For an operator at the console, when nobody in the org can turn a user's TOTP off (a sole
    OWNER who lost the authenticator, or whose secret no configured key decrypts): what `disable`
    does, with the operator's reason in the audit row. `uow` needs no org: it is switched to the
    account's. A user without TOTP is left as it is."""
    reason = reason.strip()
    if not reason:
        raise invalid("reason", "is required")
    if len(reason) > MAX_REASON:
        raise invalid("reason", f"must be at most {MAX_REASON} characters")
    user = await find_account_for_operator(uow, email)
    if not user.totp_enabled:
        return OperatorTotpReset(user.id, user.org_id, had_totp=False, revoked_sessions=0)
    revoked = await _clear_totp(
        uow, user, reason="operator_mfa_disabled", after={"by": "operator console", "reason": reason}
    )
    return OperatorTotpReset(user.id, user.org_id, had_totp=True, revoked_sessions=revoked)


async def _clear_totp(
    uow: UnitOfWork, user: User, *, reason: str, after: dict[str, Any] | None = None
) -> int:
    """The secret gone, every session ended (cws.iam.session.revoked tells the gateways), audited.
    Returns how many sessions were ended."""
    await uow.session.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(totp_enabled=False, totp_secret_enc=None, totp_last_step=0)
    )
    revoked = await revoke_user_sessions(uow, user.id, reason=reason)
    await audit.record(uow, "iam.mfa.disable", resource_type="user", resource_id=str(user.id), after=after)
    uow.add_event(
        IAM_MFA_CHANGED,
        events_pb2.MfaChanged(org_id=str(uow.org_id), user_id=str(user.id), enabled=False),
    )
    return revoked
