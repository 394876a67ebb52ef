"""Login, refresh-token rotation with reuse detection, logout and session revocation.

A session is one sign-in; its refresh tokens form a chain. Each refresh uses up the presented token
and issues the next one. Presenting a used token means it was stolen or replayed, so the whole
session is revoked. Every revocation is published (cws.iam.session.revoked) and the gateway stops
accepting that session's access tokens at once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography.fernet import InvalidToken
from cws.iam.v1 import events_pb2
from sqlalchemy import delete, func, insert, select, text, update

from libs.common.convert import to_ts
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import FailedPrecondition, ResourceExhausted, Unauthenticated, invalid
from libs.common.logs import get_logger
from libs.common.roles import MANAGERS
from libs.common.tokens import AccessClaims, encode_access
from services.iam import passwords, totp
from services.iam.events import IAM_SESSION_REVOKED
from services.iam.models import User, refresh_tokens, sessions, users
from services.iam.sealing import Opened
from services.iam.settings import IamSettings

T = TypeVar("T")
log = get_logger(__name__)


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    mfa_verified: bool
    must_change_password: bool
    org_id: str
    user_id: str
    role: str
    session_id: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token(org_id: uuid.UUID) -> str:
    # The org travels in the token so the lookup can run inside that org under RLS.
    return f"rt.{org_id}.{secrets.token_urlsafe(32)}"


def org_of_refresh_token(token: str) -> uuid.UUID:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "rt":
        raise Unauthenticated("refresh token is invalid", code="invalid_refresh_token")
    try:
        return uuid.UUID(parts[1])
    except ValueError as exc:
        raise Unauthenticated("refresh token is invalid", code="invalid_refresh_token") from exc


def _mfa_error() -> Unauthenticated:
    return Unauthenticated("a valid 6-digit TOTP code is required", code="mfa_required")


def read_totp_secret(user: User, settings: IamSettings) -> Opened:
    """The user's TOTP secret, under the current AUTH_SECRET_KEY or one it replaced. When no
    configured key opens it (the key it was encrypted under is gone), the user cannot prove the
    second factor until an owner turns it off: a refusal that says so, not an internal error, and a
    log line telling the operator which setting would bring the key back."""
    assert user.totp_secret_enc is not None
    try:
        return totp.open_secret(user.totp_secret_enc, settings.auth_secret_keys)
    except InvalidToken:
        log.error(
            "totp_secret_unreadable",
            org_id=str(user.org_id),
            user_id=str(user.id),
            hint="no configured key decrypts this TOTP secret: add the key it was encrypted under to "
            "AUTH_SECRET_KEY_PREVIOUS, or have an owner turn the user's TOTP off (POST /v1/auth/2fa/disable; "
            "for a sole owner, python -m services.iam.manage disable-totp)",
        )
        raise FailedPrecondition(
            "your two-factor secret can no longer be read; ask an owner of your organisation to turn "
            "off two-factor authentication for your account, then sign in and enrol again",
            code="mfa_secret_unreadable",
        ) from None


def resealed(secret: Opened, settings: IamSettings) -> dict[str, str]:
    """The column to write so a secret read under an earlier key is stored under the current one
    (lazy re-encryption, in the caller's update); nothing when it already is."""
    if not secret.stale:
        return {}
    return {"totp_secret_enc": totp.encrypt_secret(secret.plain, settings.auth_secret_key)}


async def _check_totp(uow: UnitOfWork, user: User, code: str, settings: IamSettings) -> bool:
    """True when the user has TOTP and the code is valid and unused; raises mfa_required when a
    role that needs it (those who manage the org) gave no valid code."""
    if not user.totp_enabled or not user.totp_secret_enc:
        return False
    if not code and user.role not in MANAGERS:
        # Optional for this role and not offered: the secret is not needed (nor is a lost key's
        # refusal: such a user still signs in, without MFA, as before).
        return False
    secret = read_totp_secret(user, settings)
    step = totp.matching_step(secret.plain, code, user.totp_last_step)
    if step is None:
        raise _mfa_error()
    # Conditional update: of two concurrent requests with the same code, only one advances the step.
    advanced = await uow.session.execute(
        update(users)
        .where(users.c.id == user.id, users.c.totp_last_step < step)
        .values(totp_last_step=step, **resealed(secret, settings))
    )
    if advanced.rowcount != 1:  # type: ignore[attr-defined]
        raise _mfa_error()
    return True


async def _issue(
    uow: UnitOfWork,
    user: User,
    session_id: uuid.UUID,
    mfa_verified: bool,
    settings: IamSettings,
    session_expires_at: datetime,
) -> IssuedTokens:
    now = datetime.now(UTC)
    refresh = new_refresh_token(user.org_id)
    refresh_expires = min(
        now + timedelta(minutes=settings.auth_refresh_token_ttl_minutes), session_expires_at
    )
    await uow.session.execute(
        insert(refresh_tokens).values(
            id=uuid.uuid4(),
            org_id=user.org_id,
            session_id=session_id,
            token_hash=hash_token(refresh),
            expires_at=refresh_expires,
        )
    )
    access_expires = min(
        int(time.time()) + settings.auth_access_token_ttl_minutes * 60, int(session_expires_at.timestamp())
    )
    access = encode_access(
        AccessClaims(
            user_id=str(user.id),
            org_id=str(user.org_id),
            role=user.role,
            session_id=str(session_id),
            mfa_verified=mfa_verified,
            expires_at=access_expires,
            # Marked until the temporary password is changed: the gateway and every service then
            # refuse all but the few calls a user needs to change it (libs/common/context.py).
            password_change_required=user.must_change_password,
        ),
        settings.auth_secret_key,
    )
    return IssuedTokens(
        access_token=access,
        refresh_token=refresh,
        expires_in=max(access_expires - int(time.time()), 0),
        refresh_expires_in=int((refresh_expires - now).total_seconds()),
        mfa_verified=mfa_verified,
        must_change_password=user.must_change_password,
        org_id=str(user.org_id),
        user_id=str(user.id),
        role=user.role,
        session_id=str(session_id),
    )


class LoginRefused(Exception):
    """A refusal that counts as a failed login attempt (a wrong password at login or at a step-up, a
    wrong TOTP code at login or at refresh): raised out of the attempt's unit of work (which rolls
    back), then recorded in one of its own (see `counting_failures`)."""

    def __init__(self, error: Exception, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.error = error
        self.org_id = org_id
        self.user_id = user_id


async def login(
    db: Database, settings: IamSettings, *, email: str, password: str, totp_code: str, client_ip: str
) -> IssuedTokens:
    """A new session for the right email, password and (where needed) TOTP code.

    Unlike the rest of iam's domain, this opens its own units of work, two of them, because it must:
    a refused attempt rolls back everything it did, yet the failure has to count all the same (or
    guessing would cost nothing), so the failure counter is written in a unit of work of its own,
    after the attempt's rollback. A transaction owned by the caller could not give both."""
    return await counting_failures(
        db,
        settings,
        None,
        lambda uow: _attempt(
            uow, settings, email=email, password=password, totp_code=totp_code, client_ip=client_ip
        ),
    )


async def counting_failures(
    db: Database,
    settings: IamSettings,
    org_id: uuid.UUID | str | None,
    work: Callable[[UnitOfWork], Awaitable[T]],
) -> T:
    """Runs `work` in a unit of work of `org_id` (or none); a `LoginRefused` out of it rolls that
    back, is counted as a failed login in a unit of work of its own, and is then raised as the
    error it carries. Every door that checks a password or a TOTP code goes through here (login,
    refresh, the step-up of TOTP changes), so guessing costs the same everywhere."""
    try:
        async with unit_of_work(db, org_id) as uow:
            return await work(uow)
    except LoginRefused as refused:
        async with unit_of_work(db, refused.org_id) as uow:
            await _record_failure(uow, settings, refused.user_id)
        raise refused.error from None


def check_not_throttled(user: User, settings: IamSettings) -> None:
    """Refuses (429) an account locked or throttled by failed logins, before any guess is judged."""
    now = datetime.now(UTC)
    if user.failed_login_count >= settings.login_lockout_failures:
        raise ResourceExhausted(
            "this account is locked after too many failed logins; an admin must reset its password",
            code="account_locked",
        )
    if user.locked_until is not None and user.locked_until > now:
        wait = int((user.locked_until - now).total_seconds()) + 1
        raise ResourceExhausted(
            f"too many failed logins; try again in {wait} seconds",
            code="login_throttled",
            retry_after_seconds=wait,
        )


async def step_up(user: User, settings: IamSettings, current_password: str) -> None:
    """Re-authentication for a sensitive change by a signed-in user: their current password, so an
    access token alone (stolen, or a device left signed in) cannot change how the account is
    protected. A wrong password is a failed login (raised as `LoginRefused`, so run this under
    `counting_failures`); a throttled or locked account is refused as at login. A right one does not
    clear the failure count: only a complete sign-in does."""
    if not current_password:
        raise invalid("current_password", "is required: this change needs your current password")
    check_not_throttled(user, settings)
    if not await _password_accepted(user, current_password):
        raise LoginRefused(
            Unauthenticated("current password is wrong", code="invalid_credentials"), user.org_id, user.id
        )


def temporary_password_expired(user: User, now: datetime | None = None) -> bool:
    """A temporary password past AUTH_TEMP_PASSWORD_TTL_MINUTES: it works no more, and an admin
    resets again."""
    return (
        user.must_change_password
        and user.password_expires_at is not None
        and user.password_expires_at <= (now or datetime.now(UTC))
    )


async def _password_accepted(user: User, password: str) -> bool:
    """The password is right, the account active and the password not an expired temporary one. The
    hash is checked first, whatever else is wrong, so every refusal costs the same (no timing oracle),
    and all of them are the same refusal to the caller."""
    matches = await passwords.verify_password(user.password_hash, password)
    return matches and user.active and not temporary_password_expired(user)


async def _record_failure(uow: UnitOfWork, settings: IamSettings, user_id: uuid.UUID) -> None:
    # One atomic statement, so concurrent failures each count; the delay doubles per failure past
    # the threshold, capped.
    await uow.session.execute(
        text(
            """
            UPDATE iam.users SET
              failed_login_count = failed_login_count + 1,
              locked_until = CASE WHEN failed_login_count + 1 >= :after
                THEN now() + make_interval(secs => least(power(2, failed_login_count + 1 - :after), :cap))
                ELSE NULL END
            WHERE id = :id
            """
        ),
        {
            "after": settings.login_throttle_after_failures,
            "cap": settings.login_throttle_max_seconds,
            "id": user_id,
        },
    )


async def _attempt(
    uow: UnitOfWork, settings: IamSettings, *, email: str, password: str, totp_code: str, client_ip: str
) -> IssuedTokens:
    invalid_credentials = Unauthenticated("email or password is wrong", code="invalid_credentials")
    found = (
        await uow.session.execute(
            text("SELECT user_id, org_id FROM iam.find_login(:email)"), {"email": email.strip()}
        )
    ).first()
    if found is None:
        await passwords.verify_password(None, password)  # same cost as a wrong password
        raise invalid_credentials
    await uow.set_org(found.org_id)
    user = User.of((await uow.session.execute(select(users).where(users.c.id == found.user_id))).one())
    check_not_throttled(user, settings)
    if not await _password_accepted(user, password):
        # Wrong, inactive or an expired temporary password: one answer, as for an unknown email.
        raise LoginRefused(invalid_credentials, user.org_id, user.id)
    try:
        mfa_verified = await _check_totp(uow, user, totp_code, settings)
    except Unauthenticated as error:
        if totp_code:  # a wrong code is a guess, and counts; a missing one is step one of the UI
            raise LoginRefused(error, user.org_id, user.id) from None
        raise
    if user.failed_login_count or user.locked_until:
        await uow.session.execute(
            update(users).where(users.c.id == user.id).values(failed_login_count=0, locked_until=None)
        )
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        # Hashed at an older cost (PASSWORD_HASH_*): stored again at today's, now that we hold the password.
        await uow.session.execute(
            update(users)
            .where(users.c.id == user.id)
            .values(password_hash=await passwords.hash_password(password))
        )
    return await open_session(uow, user, settings, mfa_verified=mfa_verified, client_ip=client_ip)


async def open_session(
    uow: UnitOfWork, user: User, settings: IamSettings, *, mfa_verified: bool, client_ip: str
) -> IssuedTokens:
    """A new session and its first tokens, for a user who has just proved who they are (a login, a
    confirmed sign-up)."""
    session_id = uuid.uuid4()
    expires = datetime.now(UTC) + timedelta(minutes=settings.auth_session_ttl_minutes)
    await uow.session.execute(
        insert(sessions).values(
            id=session_id,
            org_id=user.org_id,
            user_id=user.id,
            mfa_verified=mfa_verified,
            expires_at=expires,
            client_ip=client_ip[:64],
        )
    )
    return await _issue(uow, user, session_id, mfa_verified, settings, expires)


@dataclass(frozen=True)
class Refreshed:
    """What a refresh came to: new tokens, or None when the token had been used before (its session
    is then revoked by the same unit of work)."""

    tokens: IssuedTokens | None

    def issued(self) -> IssuedTokens:
        """The new tokens. A reused token is refused here, once the caller has committed the
        revocation: the caller must hear "no" only after the session is really ended."""
        if self.tokens is None:
            raise Unauthenticated(
                "refresh token was already used; the session has been revoked", code="refresh_token_reused"
            )
        return self.tokens


async def refresh(uow: UnitOfWork, settings: IamSettings, *, refresh_token: str, totp_code: str) -> Refreshed:
    """Uses up a refresh token and issues the next. `uow` needs no org: the token names it.

    Where the refresh needs a TOTP code, a wrong one is a failed login (`LoginRefused`: run this
    under `counting_failures`), and a throttled or locked account is refused before the code is
    judged, so a stolen refresh token is no cheaper a way to guess codes than the login."""
    await uow.set_org(org_of_refresh_token(refresh_token))
    invalid_token = Unauthenticated("refresh token is invalid or expired", code="invalid_refresh_token")
    token = (
        await uow.session.execute(
            select(refresh_tokens)
            .where(refresh_tokens.c.token_hash == hash_token(refresh_token))
            .with_for_update()
        )
    ).first()
    if token is None:
        raise invalid_token
    session = (
        await uow.session.execute(select(sessions).where(sessions.c.id == token.session_id).with_for_update())
    ).one()
    now = datetime.now(UTC)
    if token.used_at is not None:
        # Reuse of a rotated token: whoever holds the chain now may be an attacker. End it.
        if session.revoked_at is None:
            await _revoke(uow, [session.id], session.user_id, "refresh_token_reuse")
        return Refreshed(None)
    if session.revoked_at is not None or session.expires_at <= now or token.expires_at <= now:
        raise invalid_token
    user = User.of((await uow.session.execute(select(users).where(users.c.id == session.user_id))).one())
    if not user.active:
        raise invalid_token
    mfa_verified = session.mfa_verified
    if user.totp_enabled and user.role in MANAGERS:
        check_not_throttled(user, settings)
        try:
            mfa_verified = await _check_totp(uow, user, totp_code, settings)
        except Unauthenticated as error:
            if totp_code:  # a wrong code is a guess, and counts; a missing one asks for the code
                raise LoginRefused(error, user.org_id, user.id) from None
            raise
    await uow.session.execute(
        update(refresh_tokens).where(refresh_tokens.c.id == token.id).values(used_at=now)
    )
    expires = now + timedelta(minutes=settings.auth_session_ttl_minutes)
    await uow.session.execute(
        update(sessions)
        .where(sessions.c.id == session.id)
        .values(last_used_at=now, expires_at=expires, mfa_verified=mfa_verified)
    )
    return Refreshed(await _issue(uow, user, session.id, mfa_verified, settings, expires))


async def logout(uow: UnitOfWork, *, org_id: str, session_id: str, refresh_token: str) -> None:
    """Ends the caller's session (from the access token), or the one a refresh token belongs to.
    `uow` needs no org: it is the caller's, or the one the refresh token names."""
    if not session_id and refresh_token:
        org_id = str(org_of_refresh_token(refresh_token))
    if not org_id:
        raise Unauthenticated("nothing to log out")
    await uow.set_org(uuid.UUID(org_id))
    if not session_id:
        token = (
            await uow.session.execute(
                select(refresh_tokens.c.session_id).where(
                    refresh_tokens.c.token_hash == hash_token(refresh_token)
                )
            )
        ).first()
        if token is None:
            raise Unauthenticated("refresh token is invalid", code="invalid_refresh_token")
        session_id = str(token.session_id)
    session = (
        await uow.session.execute(select(sessions).where(sessions.c.id == uuid.UUID(session_id)))
    ).first()
    if session is not None and session.revoked_at is None:
        await _revoke(uow, [session.id], session.user_id, "logout")


async def revoke_user_sessions(
    uow: UnitOfWork, user_id: uuid.UUID, *, reason: str, keep_session: str | None = None
) -> int:
    query = select(sessions.c.id).where(sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
    if keep_session:
        query = query.where(sessions.c.id != uuid.UUID(keep_session))
    ids = list((await uow.session.scalars(query)).all())
    await _revoke(uow, ids, user_id, reason)
    return len(ids)


async def _revoke(uow: UnitOfWork, session_ids: list[uuid.UUID], user_id: uuid.UUID, reason: str) -> None:
    if not session_ids:
        return
    await uow.session.execute(
        update(sessions)
        .where(sessions.c.id.in_(session_ids))
        .values(revoked_at=func.now(), revoked_reason=reason)
    )
    uow.add_event(
        IAM_SESSION_REVOKED,
        events_pb2.SessionRevoked(
            org_id=str(uow.org_id),
            user_id=str(user_id),
            session_ids=[str(s) for s in session_ids],
            reason=reason,
            revoked_at=to_ts(datetime.now(UTC)),
        ),
    )


async def mark_session_mfa(
    uow: UnitOfWork, session_id: str, user: User, settings: IamSettings
) -> IssuedTokens:
    """After TOTP verification: the current session becomes MFA-verified and gets fresh tokens."""
    session = (
        await uow.session.execute(
            select(sessions).where(sessions.c.id == uuid.UUID(session_id)).with_for_update()
        )
    ).one()
    await uow.session.execute(update(sessions).where(sessions.c.id == session.id).values(mfa_verified=True))
    # The session's outstanding refresh token is withdrawn, not "used": presenting it later is then
    # merely invalid, and does not count as reuse that would revoke this freshly verified session.
    await uow.session.execute(
        delete(refresh_tokens).where(
            refresh_tokens.c.session_id == session.id, refresh_tokens.c.used_at.is_(None)
        )
    )
    return await _issue(uow, user, session.id, True, settings, session.expires_at)


async def is_active(uow: UnitOfWork, session_id: str) -> bool:
    """Whether a session of the caller's org still stands (not revoked, not expired): the gateway's
    fallback check."""
    try:
        key = uuid.UUID(session_id)
    except ValueError:
        return False
    row = (
        await uow.session.execute(
            select(sessions.c.revoked_at, sessions.c.expires_at).where(sessions.c.id == key)
        )
    ).first()
    return row is not None and row.revoked_at is None and row.expires_at > datetime.now(UTC)
