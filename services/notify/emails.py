"""The emails notify sends: subject and plain text per email_type, and their outbox rows.

Times are shown in the org's time zone, named after them, so a reader in another zone can still
tell. Emails that carry a credential (a temporary password, a magic link) are marked
redact_after_send: the delivery engine blanks their text once the provider has accepted them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from libs.common.db import UnitOfWork
from services.notify.orgs import zone
from services.notify.outbox import Enqueued, enqueue

BOOKING_CONFIRMED = "booking_confirmed"
BOOKING_REMINDER = "booking_reminder"
CLIENT_LOGIN = "client_login"
USER_CREATED = "user_created"
PASSWORD_RESET = "password_reset"
SIGNUP_CONFIRM = "signup_confirm"
SIGNUP_EXISTING = "signup_existing"
DIGEST = "notifications_digest"
INVOICE_PAYMENT_FAILED = "invoice_payment_failed"


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    email_type: str
    booking_id: str | None = None
    redact_after_send: bool = False

    def payload(self, from_name: str | None) -> dict[str, Any]:
        """The shared email payload contract of the delivery outbox."""
        return {
            "to": self.to,
            "subject": self.subject,
            "text": self.text,
            "email_type": self.email_type,
            "booking_id": self.booking_id,
            "from_name": from_name or None,
            "redact_after_send": self.redact_after_send,
        }


async def enqueue_email(uow: UnitOfWork, email: Email, dedupe_key: str, from_name: str = "") -> Enqueued:
    return await enqueue(
        uow, kind="email", dedupe_key=dedupe_key, payload=email.payload(from_name), target=email.to
    )


def local_time(moment: datetime, time_zone: str) -> datetime:
    return moment.astimezone(zone(time_zone))


def when(starts_at: datetime, ends_at: datetime | None, time_zone: str) -> str:
    """'Tuesday 24 November 2026, 09:00 to 11:00 (America/Edmonton)'."""
    start = local_time(starts_at, time_zone)
    text = f"{start:%A} {start.day} {start:%B %Y}, {start:%H:%M}"
    if ends_at is not None:
        end = local_time(ends_at, time_zone)
        same_day = end.date() == start.date()
        text += f" to {end:%H:%M}" if same_day else f" to {end:%A} {end.day} {end:%B}, {end:%H:%M}"
    return f"{text} ({start.tzinfo})"


def _signature(org_name: str) -> str:
    return f"\n\n-- {org_name}" if org_name else ""


def booking_confirmed(
    *, to: str, booking_id: str, starts_at: datetime, ends_at: datetime | None, time_zone: str, org_name: str
) -> Email:
    slot = when(starts_at, ends_at, time_zone)
    return Email(
        to=to,
        subject=f"Your cleaning is confirmed: {slot}",
        text=(
            "Hello,\n\n"
            f"Your cleaning is confirmed for {slot}.\n\n"
            "If you need to change or cancel it, reply to this email or sign in to the client portal."
            + _signature(org_name)
        ),
        email_type=BOOKING_CONFIRMED,
        booking_id=booking_id,
    )


def booking_reminder(
    *,
    to: str,
    booking_id: str,
    starts_at: datetime,
    ends_at: datetime | None,
    time_zone: str,
    client_name: str,
    address: str,
    org_name: str,
) -> Email:
    slot = when(starts_at, ends_at, time_zone)
    greeting = f"Hello {client_name}," if client_name else "Hello,"
    where = f"\nAddress: {address}" if address else ""
    return Email(
        to=to,
        subject=f"Reminder: your cleaning on {slot}",
        text=(
            f"{greeting}\n\nThis is a reminder of your upcoming cleaning on {slot}.{where}\n\n"
            "If you need to change it, reply to this email or sign in to the client portal."
            + _signature(org_name)
        ),
        email_type=BOOKING_REMINDER,
        booking_id=booking_id,
    )


def client_login(*, to: str, link: str, org_name: str) -> Email:
    return Email(
        to=to,
        subject=f"Your sign-in link{' for ' + org_name if org_name else ''}",
        text=(
            "Hello,\n\nSomeone (hopefully you) asked to sign in to the client portal with this address. "
            f"Follow this link to sign in:\n\n{link}\n\n"
            "The link works for a limited time. If you did not ask for it, ignore this email."
            + _signature(org_name)
        ),
        email_type=CLIENT_LOGIN,
        redact_after_send=True,
    )


def user_created(*, to: str, role: str, org_name: str, temp_password: str = "") -> Email:
    where = f" at {org_name}" if org_name else ""
    if temp_password:
        body = (
            f"An account{where} was created for you with the role {role}.\n\n"
            f"Your temporary password is: {temp_password}\n\n"
            "Sign in with it and choose your own password; it must be changed at first sign-in."
        )
    else:
        body = (
            f"An administrator created an account{where} for you with the role {role}.\n\n"
            "They will give you your temporary password; sign in with it and choose your own."
        )
    return Email(
        to=to,
        subject=f"Your account{where}",
        text=f"Hello,\n\n{body}" + _signature(org_name),
        email_type=USER_CREATED,
        redact_after_send=bool(temp_password),
    )


def password_reset(*, to: str, org_name: str, temp_password: str = "") -> Email:
    where = f" at {org_name}" if org_name else ""
    if temp_password:
        body = (
            f"Your password{where} was reset by an administrator.\n\n"
            f"Your temporary password is: {temp_password}\n\n"
            "Sign in with it and choose a new password. Your other sessions were signed out."
        )
    else:
        body = (
            f"Your password{where} was reset by an administrator, and your sessions were signed out.\n\n"
            "They will give you your temporary password; sign in with it and choose a new one."
        )
    return Email(
        to=to,
        subject=f"Your password{where} was reset",
        text=(
            f"Hello,\n\n{body}\n\nIf you did not expect this, contact your administrator."
            + _signature(org_name)
        ),
        email_type=PASSWORD_RESET,
        redact_after_send=bool(temp_password),
    )


def signup_confirm(*, to: str, org_name: str, token: str, confirm_url: str, expires_at: datetime) -> Email:
    return Email(
        to=to,
        subject=f"Confirm your new organisation {org_name}",
        text=(
            f"Hello,\n\nSomeone (hopefully you) asked to create the organisation {org_name} with this "
            "address. To finish, confirm it with this token (your app does this when you open the "
            f'link; by hand: POST {confirm_url} with {{"token": "..."}}):\n\n{token}\n\n'
            f"{confirm_url}?token={token}\n\n"
            f"It works once, until {expires_at:%Y-%m-%d %H:%M} UTC. If you did not ask for it, ignore "
            "this email: nothing is created without it."
        ),
        email_type=SIGNUP_CONFIRM,
        redact_after_send=True,
    )


def signup_existing(*, to: str, org_name: str) -> Email:
    return Email(
        to=to,
        subject="You already have an account",
        text=(
            f"Hello,\n\nSomeone (hopefully you) asked to create the organisation {org_name} with this "
            "address, but it already has an account, and an address can have only one. Sign in with "
            "it instead; if you forgot its password, ask an administrator of your organisation to "
            "reset it.\n\nIf you did not ask for this, ignore this email: nothing was changed."
        ),
        email_type=SIGNUP_EXISTING,
    )


def digest(*, to: str, digest_key: str, period_key: str, lines: list[str], org_name: str) -> Email:
    title = digest_key.replace("_", " ").replace("-", " ")
    return Email(
        to=to,
        subject=f"{org_name + ': ' if org_name else ''}{title} digest for {period_key}",
        text="Hello,\n\nHere is your summary for "
        + period_key
        + ":\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + _signature(org_name),
        email_type=DIGEST,
    )


def invoice_payment_failed(
    *, to: str, client_name: str, number: str, amount: str, retry_link: str, org_name: str
) -> Email:
    """Seed 002's dunning-lite email: the invoice number, the amount and a friendly retry prompt, and
    nothing else (no card details, nothing of Stripe's payload). The link opens the invoice in the
    client portal, where the client signs in by magic link and pays: it carries no credential."""
    greeting = f"Hello {client_name}," if client_name else "Hello,"
    return Email(
        to=to,
        subject=f"Payment of invoice {number} did not go through",
        text=(
            f"{greeting}\n\nWe could not take your payment of {amount} for invoice {number}. "
            "No harm done: you can try again whenever suits you from the client portal:\n\n"
            f"{retry_link}\n\n"
            "If you have paid it another way since, please ignore this email." + _signature(org_name)
        ),
        email_type=INVOICE_PAYMENT_FAILED,
    )
