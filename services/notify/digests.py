"""Notification digests (seed 003 "Scheduled Jobs").

An org's digests live in notifications_digest_settings (digest_key, enabled, schedule, recipients);
they go out only while the org's `module.notifications_center` toggle is on (off by default).
RunDigests(schedule) sends each enabled digest of that schedule once per period, the period (a day,
ISO week or month) taken in the org's time zone: the INSERT of (digest, period) into
notifications_digest_state decides, and only the transaction that inserted it enqueues the emails,
so a runner looping every minute, or two runners at once, send each digest once per period.

A digest is short and exact: emails sent and failed (or bounced) in the previous period, sends
waiting in the dead-letter queue now, and confirmed bookings from now to the end of this period
(asked of booking). `sent` and `already_sent` count digests, not emails (one email per recipient)."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import invalid
from services.notify import emails, orgs, reminders
from services.notify.models import (
    DIGEST_SCHEDULES,
    NOTIFICATIONS_MODULE,
    email_events,
    feature_toggles,
    notifications_digest_settings,
    notifications_digest_state,
    outbox_events,
)
from services.notify.peers import Peers

DIGEST_KEY = re.compile(r"[a-z0-9_-]{1,100}")
MAX_RECIPIENTS = 50


# --- settings and the module toggle --------------------------------------------------------------


async def module_enabled(uow: UnitOfWork) -> bool:
    enabled = await uow.session.scalar(
        select(feature_toggles.c.enabled).where(feature_toggles.c.key == NOTIFICATIONS_MODULE)
    )
    return bool(enabled)


async def set_module(uow: UnitOfWork, enabled: bool) -> bool:
    await uow.session.execute(
        pg_insert(feature_toggles)
        .values(org_id=uow.org_id, key=NOTIFICATIONS_MODULE, enabled=enabled)
        .on_conflict_do_update(
            index_elements=[feature_toggles.c.org_id, feature_toggles.c.key],
            set_={"enabled": enabled, "updated_at": func.now()},
        )
    )
    return enabled


async def list_settings(uow: UnitOfWork) -> list[Row[Any]]:
    return list(
        (
            await uow.session.execute(
                select(notifications_digest_settings).order_by(notifications_digest_settings.c.digest_key)
            )
        ).all()
    )


def check_key(digest_key: str) -> str:
    if not DIGEST_KEY.fullmatch(digest_key):
        raise invalid("digest_key", "must be 1 to 100 characters of a-z, 0-9, _ and -")
    return digest_key


def check_schedule(schedule: str) -> str:
    if schedule not in DIGEST_SCHEDULES:
        raise invalid("schedule", f"must be one of {', '.join(DIGEST_SCHEDULES)}")
    return schedule


def check_recipients(recipients: list[str]) -> list[str]:
    """Valid addresses, normalised and without repeats, at most MAX_RECIPIENTS."""
    if len(recipients) > MAX_RECIPIENTS:
        raise invalid("recipients", f"at most {MAX_RECIPIENTS} recipients")
    seen: list[str] = []
    for position, raw in enumerate(recipients):
        try:
            address = validate_email(raw.strip(), check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            raise invalid(f"recipients[{position}]", str(exc)) from exc
        if address not in seen:
            seen.append(address)
    return seen


async def update_setting(
    uow: UnitOfWork, *, digest_key: str, enabled: bool, schedule: str, recipients: list[str]
) -> Row[Any]:
    values = {
        "enabled": enabled,
        "schedule": check_schedule(schedule),
        "recipients": check_recipients(recipients),
    }
    return (
        await uow.session.execute(
            pg_insert(notifications_digest_settings)
            .values(org_id=uow.org_id, digest_key=check_key(digest_key), **values)
            .on_conflict_do_update(
                index_elements=[
                    notifications_digest_settings.c.org_id,
                    notifications_digest_settings.c.digest_key,
                ],
                set_={**values, "updated_at": func.now()},
            )
            .returning(notifications_digest_settings)
        )
    ).one()


# --- periods in the org's time zone -----------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    key: str
    start: datetime  # aware, local midnight
    end: datetime


def period_of(schedule: str, moment: datetime) -> Period:
    """The period of `schedule` holding `moment` (aware, in the org's zone)."""
    zone = moment.tzinfo
    today = moment.date()
    first: date
    if schedule == "daily":
        first, after, key = today, today + timedelta(days=1), today.isoformat()
    elif schedule == "weekly":
        first = today - timedelta(days=today.weekday())
        after = first + timedelta(days=7)
        iso = today.isocalendar()
        key = f"{iso.year}-W{iso.week:02d}"
    elif schedule == "monthly":
        first = today.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
        key = f"{today.year}-{today.month:02d}"
    else:
        raise invalid("schedule", f"must be one of {', '.join(DIGEST_SCHEDULES)}")
    return Period(key, _midnight(first, zone), _midnight(after, zone))


def previous_period(schedule: str, period: Period) -> Period:
    return period_of(schedule, period.start - timedelta(hours=12))


def _midnight(day: date, zone: Any) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


# --- running ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    sent: int = 0
    already_sent: int = 0
    module_enabled: bool = True


def digest_dedupe_key(digest_key: str, period_key: str, recipient: str) -> str:
    key = f"digest:{digest_key}:{period_key}:{recipient}"
    if len(key) <= 300:
        return key
    return f"digest:{digest_key}:{period_key}:sha256:{hashlib.sha256(recipient.encode()).hexdigest()[:32]}"


async def run(
    db: Database, peers: Peers, org_id: uuid.UUID, schedule: str, *, now: datetime | None = None
) -> RunResult:
    check_schedule(schedule)
    now = now or datetime.now(UTC)
    async with unit_of_work(db, org_id) as uow:
        if not await module_enabled(uow):
            return RunResult(module_enabled=False)
        org = await orgs.profile(uow, peers)
        current = period_of(schedule, now.astimezone(org.zone))
        wanted = [
            row
            for row in await list_settings(uow)
            if row.enabled and row.schedule == schedule and row.recipients
        ]
        done = set(
            (
                await uow.session.scalars(
                    select(notifications_digest_state.c.digest_key).where(
                        notifications_digest_state.c.period_key == current.key
                    )
                )
            ).all()
        )
        due = [row for row in wanted if row.digest_key not in done]
        result = RunResult(already_sent=len(wanted) - len(due))
        if not due:
            return result
        lines = await _activity_lines(uow, previous_period(schedule, current))
    upcoming = 0
    async for page in reminders.upcoming(peers, org_id, now, current.end):
        upcoming += len(page)
    lines.append(f"Confirmed bookings from now to the end of {current.key}: {upcoming}")

    for setting in due:
        async with unit_of_work(db, org_id) as uow:
            claimed = await uow.session.scalar(
                pg_insert(notifications_digest_state)
                .values(org_id=org_id, digest_key=setting.digest_key, period_key=current.key)
                .on_conflict_do_nothing()
                .returning(notifications_digest_state.c.digest_key)
            )
            if claimed is None:  # another runner sent it a moment ago
                result.already_sent += 1
                continue
            first_row = None
            for recipient in setting.recipients:
                email = emails.digest(
                    to=recipient,
                    digest_key=setting.digest_key,
                    period_key=current.key,
                    lines=lines,
                    org_name=org.name,
                )
                queued = await emails.enqueue_email(
                    uow, email, digest_dedupe_key(setting.digest_key, current.key, recipient), org.name
                )
                first_row = first_row or queued.row
            await uow.session.execute(
                update(notifications_digest_state)
                .where(
                    notifications_digest_state.c.digest_key == setting.digest_key,
                    notifications_digest_state.c.period_key == current.key,
                )
                .values(outbox_id=first_row.id if first_row else None)
            )
            result.sent += 1
    return result


async def _activity_lines(uow: UnitOfWork, previous: Period) -> list[str]:
    by_status: dict[str, int] = dict(
        (
            await uow.session.execute(
                select(email_events.c.status, func.count())
                .where(email_events.c.created_at >= previous.start, email_events.c.created_at < previous.end)
                .group_by(email_events.c.status)
            )
        ).all()
    )
    dead = await uow.session.scalar(
        select(func.count()).select_from(outbox_events).where(outbox_events.c.status == "dead")
    )
    return [
        f"Emails sent in {previous.key}: {by_status.get('sent', 0)}",
        f"Emails failed or bounced in {previous.key}: {by_status.get('failed', 0) + by_status.get('bounced', 0)}",
        f"Sends waiting in the dead-letter queue: {dead or 0}",
    ]
