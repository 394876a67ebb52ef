"""Sign-up with email confirmation (issue 9): the answer never says whether an email has an account.

An email is one sign-in identity across the suite, so a sign-up with an address that has an account
cannot create one; if the answer said so, anyone could test addresses. So a sign-up only records the
request and answers the same either way; the address's owner learns the outcome by email:

- a new address: a `signup_requests` row (the argon2id hash of the chosen password, never the
  password) and `cws.iam.signup.requested`; notify asks for the confirmation token
  (IamService.IssueSignupToken) and emails it. `confirm` then creates the org and its owner and signs
  them in. Nothing is usable before the address is proved, so signing in with the chosen password
  cannot tell the two cases apart either.
- an address with an account: no row; the same event without a signup id, and notify tells the
  address's owner that they have an account already.

Both paths validate and hash the password, so they cost the same. The token is signed (HS256, a key
derived from AUTH_SECRET_KEY; one signed under a key listed in AUTH_SECRET_KEY_PREVIOUS is still
accepted, so a rotation voids no emailed link), names the request and its org, expires with the
request (SIGNUP_CONFIRM_TTL_MINUTES), and works once: confirming deletes the request."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cws.iam.v1 import events_pb2
from sqlalchemy import delete, insert, select, text

from libs.common.convert import parse_id, to_ts
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import NotFound, Unauthenticated, invalid
from libs.common.tokens import decode_signed
from services.iam import accounts, passwords
from services.iam.events import IAM_SIGNUP_REQUESTED
from services.iam.models import User, signup_requests, users
from services.iam.sessions import IssuedTokens, open_session
from services.iam.settings import IamSettings

TOKEN_TYPE = "signup"


def _key(auth_secret: str) -> str:
    # A key of its own: an access token can never pass for a sign-up token, nor the reverse.
    return base64.urlsafe_b64encode(
        hashlib.sha256(b"cws-signup-v1:" + auth_secret.encode()).digest()
    ).decode()


async def request_signup(
    uow: UnitOfWork,
    settings: IamSettings,
    *,
    org_name: str,
    email: str,
    password: str,
    full_name: str,
    time_zone: str,
) -> None:
    """Records a sign-up for confirmation by email. `uow` needs no org: it is switched to the org the
    confirmation would create (the event and the request belong to it)."""
    name = accounts.check_org_name(org_name)
    email = accounts.normalise_email(email)
    passwords.check_policy(password)
    zone = accounts.check_time_zone(time_zone or "UTC")
    if len(full_name) > 200:
        raise invalid("full_name", "must be at most 200 characters")
    # Hashed whether or not the email has an account: both answers take the same time.
    password_hash = await passwords.hash_password(password)
    org_id = uuid.uuid4()
    await uow.set_org(org_id)
    expires = datetime.now(UTC) + timedelta(minutes=settings.signup_confirm_ttl_minutes)
    taken = await uow.session.scalar(text("SELECT count(*) FROM iam.find_login(:email)"), {"email": email})
    signup_id = ""
    if not taken:
        signup_id = str(uuid.uuid4())
        await uow.session.execute(
            insert(signup_requests).values(
                id=uuid.UUID(signup_id),
                org_id=org_id,
                email=email,
                org_name=name,
                full_name=full_name,
                time_zone=zone,
                password_hash=password_hash,
                expires_at=expires,
            )
        )
    uow.add_event(
        IAM_SIGNUP_REQUESTED,
        events_pb2.SignupRequested(
            org_id=str(org_id), email=email, org_name=name, signup_id=signup_id, expires_at=to_ts(expires)
        ),
    )


@dataclass(frozen=True)
class SignupToken:
    token: str
    expires_at: datetime


async def issue_token(uow: UnitOfWork, settings: IamSettings, signup_id: str) -> SignupToken:
    """The confirmation token of a waiting request of `uow`'s org (for notify to email)."""
    row = (
        await uow.session.execute(
            select(signup_requests.c.id, signup_requests.c.expires_at).where(
                signup_requests.c.id == parse_id(signup_id, "signup_id")
            )
        )
    ).first()
    if row is None or row.expires_at <= datetime.now(UTC):
        raise NotFound("no such sign-up request waiting", code="signup_not_found")
    payload = {
        "typ": TOKEN_TYPE,
        "sub": str(row.id),
        "org": str(uow.org_id),
        "iat": int(time.time()),
        "exp": int(row.expires_at.timestamp()),
    }
    return SignupToken(jwt.encode(payload, _key(settings.auth_secret_key), algorithm="HS256"), row.expires_at)


def _invalid_token() -> Unauthenticated:
    return Unauthenticated("this sign-up link is invalid, used or expired", code="invalid_signup_token")


def _claims(settings: IamSettings, token: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(org id, signup id) of a well-signed, unexpired token."""
    try:
        payload = decode_signed(
            token,
            [_key(secret) for secret in settings.auth_secret_keys],
            algorithms=["HS256"],
            options={"require": ["exp", "sub", "org", "typ"]},
        )
        if payload["typ"] != TOKEN_TYPE:
            raise jwt.InvalidTokenError("not a sign-up token")
        return uuid.UUID(str(payload["org"])), uuid.UUID(str(payload["sub"]))
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise _invalid_token() from exc


async def confirm(db: Database, settings: IamSettings, *, token: str, client_ip: str) -> IssuedTokens:
    """Creates the org and its owner from a confirmed request, and signs the owner in. A request is
    confirmed once: it is deleted in the same transaction. Opens its own unit of work, in the org the
    token names."""
    org_id, signup_id = _claims(settings, token)
    async with unit_of_work(db, org_id) as uow:
        row = (
            await uow.session.execute(
                delete(signup_requests).where(signup_requests.c.id == signup_id).returning(signup_requests)
            )
        ).first()
        if row is None or row.expires_at <= datetime.now(UTC):
            raise _invalid_token()
        # The address may have got an account since (another sign-up confirmed first, an admin added
        # it): insert_org refuses it then, to the address's owner, who is the one asking.
        created = await accounts.insert_org(
            uow,
            org_id=row.org_id,
            name=row.org_name,
            email=row.email,
            password_hash=row.password_hash,
            full_name=row.full_name,
            time_zone=row.time_zone,
        )
        owner = User.of(
            (await uow.session.execute(select(users).where(users.c.id == created.owner_id))).one()
        )
        return await open_session(uow, owner, settings, mfa_verified=False, client_ip=client_ip)
