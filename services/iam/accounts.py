"""Orgs and users: creating an org with its owner, sign-up, org-scoped user admin, password changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cws.iam.v1 import events_pb2
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import Conflict, NotFound, PermissionDenied, invalid
from libs.common.roles import MANAGERS, Role
from services.iam import audit, passwords, temp_passwords
from services.iam.events import IAM_ORG_CREATED, IAM_USER_CREATED, IAM_USER_PASSWORD_RESET
from services.iam.models import ROLES, OrgSummary, User, orgs, users
from services.iam.sessions import revoke_user_sessions, step_up
from services.iam.settings import IamSettings


def normalise_email(raw: str, field: str = "email") -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise invalid(field, str(exc)) from exc


def check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise invalid("time_zone", f"unknown time zone {value!r}") from exc
    return value


@dataclass(frozen=True)
class CreatedOrg:
    org_id: uuid.UUID
    owner_id: uuid.UUID


def check_org_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise invalid("org_name", "must be 1 to 200 characters")
    return name


async def create_org(
    uow: UnitOfWork, *, name: str, email: str, password: str, full_name: str = "", time_zone: str = "UTC"
) -> CreatedOrg:
    """A new org and its OWNER. `uow` needs no org: it is switched to the new one."""
    name = check_org_name(name)
    email = normalise_email(email)
    passwords.check_policy(password)
    check_time_zone(time_zone or "UTC")
    password_hash = await passwords.hash_password(password)
    return await insert_org(
        uow,
        org_id=uuid.uuid4(),
        name=name,
        email=email,
        password_hash=password_hash,
        full_name=full_name,
        time_zone=time_zone,
    )


async def insert_org(
    uow: UnitOfWork,
    *,
    org_id: uuid.UUID,
    name: str,
    email: str,
    password_hash: str,
    full_name: str,
    time_zone: str,
) -> CreatedOrg:
    """The org and its OWNER rows and events, from checked values (create_org, a confirmed sign-up)."""
    owner_id = uuid.uuid4()
    await uow.set_org(org_id)
    await uow.session.execute(insert(orgs).values(id=org_id, name=name, time_zone=time_zone or "UTC"))
    try:
        await uow.session.execute(
            insert(users).values(
                id=owner_id,
                org_id=org_id,
                email=email,
                full_name=full_name[:200],
                role=Role.OWNER,
                password_hash=password_hash,
            )
        )
    except IntegrityError as exc:
        raise Conflict("an account with this email already exists", code="email_taken") from exc
    uow.add_event(
        IAM_ORG_CREATED,
        events_pb2.OrgCreated(
            org_id=str(org_id), name=name, owner_user_id=str(owner_id), time_zone=time_zone or "UTC"
        ),
    )
    uow.add_event(
        IAM_USER_CREATED,
        events_pb2.UserCreated(org_id=str(org_id), user_id=str(owner_id), email=email, role=Role.OWNER),
    )
    return CreatedOrg(org_id, owner_id)


def user_view(user: User) -> dict[str, Any]:
    return {"id": str(user.id), "email": user.email, "role": user.role, "active": user.active}


async def list_users(uow: UnitOfWork, *, limit: int, offset: int) -> tuple[list[User], int]:
    rows = (
        await uow.session.execute(
            select(users).order_by(users.c.created_at, users.c.id).limit(limit).offset(offset)
        )
    ).all()
    total = await uow.session.scalar(select(func.count()).select_from(users))
    return [User.of(row) for row in rows], int(total or 0)


async def get_user(uow: UnitOfWork, user_id: str, *, for_update: bool = False) -> User:
    query = select(users).where(users.c.id == parse_id(user_id, "user_id"))
    if for_update:
        query = query.with_for_update()
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound("user not found")
    return User.of(row)


def _check_can_manage(actor_role: str, target_role: str) -> None:
    # An ADMIN manages everyone below OWNER; only an OWNER may create or touch another OWNER.
    if actor_role not in MANAGERS:
        raise PermissionDenied("only owners and admins manage users", code="forbidden_role")
    if target_role == Role.OWNER and actor_role != Role.OWNER:
        raise PermissionDenied("only an owner may manage an owner account", code="forbidden_role")


async def create_user(
    uow: UnitOfWork,
    settings: IamSettings,
    *,
    actor_role: str,
    email: str,
    full_name: str,
    role: str,
) -> tuple[User, str]:
    """A new user with a temporary password (shown once, working AUTH_TEMP_PASSWORD_TTL_MINUTES).
    With EMAIL_TEMP_PASSWORDS=true it is also held for notify to claim and email (temp_passwords.py).

    Emails are one sign-in identity across the suite (login knows an email, not an org), so an
    address another org uses cannot be added here; the refusal is word for word the one for an
    address of this org, and never names the other org."""
    role = role.strip().upper()
    if role == "ACCOUNTANT":  # the seeds' name for FINANCE
        role = Role.FINANCE
    if role not in ROLES:
        raise invalid("role", f"must be one of {', '.join(ROLES)}")
    _check_can_manage(actor_role, role)
    email = normalise_email(email)
    if len(full_name) > 200:
        raise invalid("full_name", "must be at most 200 characters")
    temp = passwords.temporary_password()
    temp_expiry = temp_passwords.expires_at(datetime.now(UTC), settings.auth_temp_password_ttl_minutes)
    user_id = uuid.uuid4()
    # Email is unique across all orgs; a clash with another org must not reveal that org, so the
    # message is the same either way.
    exists = await uow.session.scalar(text("SELECT count(*) FROM iam.find_login(:email)"), {"email": email})
    if exists:
        raise Conflict("an account with this email already exists", code="email_taken")
    try:
        await uow.session.execute(
            insert(users).values(
                id=user_id,
                org_id=uow.org_id,
                email=email,
                full_name=full_name,
                role=role,
                password_hash=await passwords.hash_password(temp),
                must_change_password=True,
                password_expires_at=temp_expiry,
            )
        )
    except IntegrityError as exc:
        # A concurrent create of the same email passed the check above too; the unique index decides.
        if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) != "uq_users_email_lower":
            raise
        raise Conflict("an account with this email already exists", code="email_taken") from exc
    row = await get_user(uow, str(user_id))
    await audit.record(
        uow, "iam.user.create", resource_type="user", resource_id=str(user_id), after=user_view(row)
    )
    waiting = await _hand_off(uow, settings, user_id, temp, temp_expiry)
    uow.add_event(
        IAM_USER_CREATED,
        events_pb2.UserCreated(
            org_id=str(uow.org_id),
            user_id=str(user_id),
            email=email,
            role=role,
            temp_password_waiting=waiting,
        ),
    )
    return row, temp


async def _hand_off(
    uow: UnitOfWork, settings: IamSettings, user_id: uuid.UUID, temp: str, until: datetime
) -> bool:
    """With EMAIL_TEMP_PASSWORDS, keep the password for notify to claim; whether one now waits."""
    if not settings.email_temp_passwords:
        return False
    await temp_passwords.hold(
        uow, user_id=user_id, password=temp, until=until, auth_secret=settings.auth_secret_key
    )
    return True


async def reset_password(
    uow: UnitOfWork, settings: IamSettings, *, actor_role: str, user_id: str
) -> tuple[User, str]:
    target = await get_user(uow, user_id, for_update=True)
    _check_can_manage(actor_role, target.role)
    temp = await _set_temporary_password(uow, settings, target, reason="password_reset", email=True)
    return await get_user(uow, user_id), temp


async def _set_temporary_password(
    uow: UnitOfWork,
    settings: IamSettings,
    target: User,
    *,
    reason: str,
    after: dict[str, Any] | None = None,
    email: bool = False,
) -> str:
    """A new temporary password (shown once, working AUTH_TEMP_PASSWORD_TTL_MINUTES), the lockout
    cleared, every session ended, audited. With `email` and EMAIL_TEMP_PASSWORDS it is also held for
    notify to claim; otherwise any password still waiting for notify is dropped: it no longer works."""
    temp = passwords.temporary_password()
    expiry = temp_passwords.expires_at(datetime.now(UTC), settings.auth_temp_password_ttl_minutes)
    await uow.session.execute(
        update(users)
        .where(users.c.id == target.id)
        .values(
            password_hash=await passwords.hash_password(temp),
            must_change_password=True,
            password_expires_at=expiry,
            failed_login_count=0,
            locked_until=None,
            updated_at=func.now(),
        )
    )
    await revoke_user_sessions(uow, target.id, reason=reason)
    await audit.record(
        uow, "iam.user.reset_password", resource_type="user", resource_id=str(target.id), after=after
    )
    waiting = email and await _hand_off(uow, settings, target.id, temp, expiry)
    if not waiting:
        await temp_passwords.drop(uow, target.id)
    uow.add_event(
        IAM_USER_PASSWORD_RESET,
        events_pb2.UserPasswordReset(
            org_id=str(uow.org_id), user_id=str(target.id), email=target.email, temp_password_waiting=waiting
        ),
    )
    return temp


async def logout_user(uow: UnitOfWork, *, actor_role: str, user_id: str) -> int:
    target = await get_user(uow, user_id)
    _check_can_manage(actor_role, target.role)
    revoked = await revoke_user_sessions(uow, target.id, reason="admin_logout")
    await audit.record(
        uow,
        "iam.user.logout",
        resource_type="user",
        resource_id=str(target.id),
        after={"revoked_sessions": revoked},
    )
    return revoked


async def change_password(
    uow: UnitOfWork, settings: IamSettings, *, user_id: str, session_id: str, current: str, new: str
) -> None:
    """The current password is a step-up (a wrong one counts as a failed login: run this under
    `sessions.counting_failures`), so an access token alone cannot guess it past the throttle."""
    user = await get_user(uow, user_id, for_update=True)
    await step_up(user, settings, current)
    passwords.check_policy(new, "new_password")
    if current == new:
        raise invalid("new_password", "must differ from the current password")
    await uow.session.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(
            password_hash=await passwords.hash_password(new),
            must_change_password=False,
            password_expires_at=None,
            updated_at=func.now(),
        )
    )
    await temp_passwords.drop(uow, user.id)
    await revoke_user_sessions(uow, user.id, reason="password_changed", keep_session=session_id)


async def list_orgs(uow: UnitOfWork, *, after: uuid.UUID | None, limit: int) -> list[OrgSummary]:
    """Every org (id, name, time zone), keyset-paged, for service callers that sweep per org.
    `uow` needs no org: iam.list_orgs is the one narrow door across orgs."""
    result = await uow.session.execute(
        text("SELECT id, name, time_zone FROM iam.list_orgs(:after, :limit)"),
        {"after": after, "limit": limit},
    )
    return [OrgSummary(row.id, row.name, row.time_zone) for row in result]


async def operator_reset_password(
    uow: UnitOfWork, settings: IamSettings, *, email: str
) -> tuple[uuid.UUID, str]:
    """For an operator at the console (an org whose only owner is locked out): a new temporary
    password, the lockout cleared, every session ended, and an audit row naming the operator.
    `uow` needs no org: it is switched to the account's. Returns (org_id, temp_password)."""
    target = await find_account_for_operator(uow, email)
    temp = await _set_temporary_password(
        uow, settings, target, reason="operator_password_reset", after={"by": "operator console"}
    )
    return target.org_id, temp


async def find_account_for_operator(uow: UnitOfWork, email: str) -> User:
    """The account with this email in whichever org holds it, locked for update, for an operator at
    the console: `uow` needs no org, it is switched to the account's. NotFound when there is none."""
    found = (
        await uow.session.execute(
            text("SELECT user_id, org_id FROM iam.find_login(:email)"), {"email": normalise_email(email)}
        )
    ).first()
    if found is None:
        raise NotFound("no account with this email")
    await uow.set_org(found.org_id)
    return await get_user(uow, str(found.user_id), for_update=True)
