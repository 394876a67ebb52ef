"""TOTP enrolment, verification and removal, as seed 002 describes."""

from __future__ import annotations

from dataclasses import dataclass

from cws.iam.v1 import events_pb2
from sqlalchemy import update

from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from libs.common.roles import Role
from services.iam import audit, totp
from services.iam.accounts import get_user
from services.iam.events import IAM_MFA_CHANGED
from services.iam.models import users
from services.iam.sessions import IssuedTokens, mark_session_mfa, revoke_user_sessions
from services.iam.settings import IamSettings


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str


async def enroll(uow: UnitOfWork, settings: IamSettings, user_id: str) -> Enrolment:
    user = await get_user(uow, user_id, for_update=True)
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
    uow: UnitOfWork, settings: IamSettings, *, user_id: str, session_id: str, code: str
) -> tuple[IssuedTokens, int]:
    user = await get_user(uow, user_id, for_update=True)
    if not user.totp_secret_enc:
        raise FailedPrecondition("enrol first: POST /v1/auth/2fa/enroll", code="mfa_not_enrolled")
    secret = totp.decrypt_secret(user.totp_secret_enc, settings.auth_secret_key)
    step = totp.matching_step(secret, code, user.totp_last_step)
    if step is None:
        raise Unauthenticated("the TOTP code is invalid or was already used", code="mfa_required")
    await uow.session.execute(
        update(users).where(users.c.id == user.id).values(totp_enabled=True, totp_last_step=step)
    )
    revoked = await revoke_user_sessions(uow, user.id, reason="mfa_enabled", keep_session=session_id)
    await audit.record(uow, "iam.mfa.enable", resource_type="user", resource_id=str(user.id))
    uow.add_event(
        IAM_MFA_CHANGED,
        events_pb2.MfaChanged(org_id=str(uow.org_id), user_id=str(user.id), enabled=True),
    )
    fresh = await get_user(uow, user_id)
    return await mark_session_mfa(uow, session_id, fresh, settings), revoked


async def disable(uow: UnitOfWork, *, actor_role: str, target_user_id: str) -> int:
    if actor_role != Role.OWNER:
        raise PermissionDenied("only an owner may disable two-factor authentication", code="forbidden_role")
    user = await get_user(uow, target_user_id, for_update=True)
    await uow.session.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(totp_enabled=False, totp_secret_enc=None, totp_last_step=0)
    )
    revoked = await revoke_user_sessions(uow, user.id, reason="mfa_disabled")
    await audit.record(uow, "iam.mfa.disable", resource_type="user", resource_id=str(user.id))
    uow.add_event(
        IAM_MFA_CHANGED,
        events_pb2.MfaChanged(org_id=str(uow.org_id), user_id=str(user.id), enabled=False),
    )
    return revoked
