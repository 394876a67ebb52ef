"""The suite's own subscription of an org: its plan (limits) and status (active or paused).

An org with no row in `org_subscriptions` is on SUBSCRIPTION_DEFAULT_PLAN and active: nothing has to
happen when an org is created, and the first pause or plan change writes the row.

Pause and resume (seed 002's playbook) change only the status and their own pair of fields: a pause
sets `pause_reason_code` and `paused_at`, a resume `resume_reason_code` and `resumed_at`, and each
leaves the other pair as it was, so the status answer always shows the latest pause and the latest
resume. The plan is kept either way. Each change raises cws.billing.subscription.{paused,resumed} in
the same transaction; the services that gate entitlements (booking, media) act on those."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import to_ts
from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition, invalid
from services.billing.models import org_subscriptions, plans

MAX_REASON_CODE = 64
ACTIVE = "active"
PAUSED = "paused"


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    max_workers: int
    max_bookings_per_month: int
    max_storage_bytes: int
    monthly_price_cents: int
    currency: str


@dataclass(frozen=True)
class Subscription:
    plan: Plan
    status: str  # "active" | "paused"
    pause_reason_code: str | None = None
    paused_at: datetime | None = None
    resume_reason_code: str | None = None
    resumed_at: datetime | None = None


async def get_plan(uow: UnitOfWork, code: str) -> Plan | None:
    row = (await uow.session.execute(select(plans).where(plans.c.code == code))).first()
    if row is None:
        return None
    return Plan(
        code=row.code,
        name=row.name,
        max_workers=row.max_workers,
        max_bookings_per_month=row.max_bookings_per_month,
        max_storage_bytes=row.max_storage_bytes,
        monthly_price_cents=row.monthly_price_cents,
        currency=row.currency.strip(),
    )


async def current(uow: UnitOfWork, default_plan: str) -> Subscription:
    """The org's subscription (the org of the unit of work); `default_plan` is
    SUBSCRIPTION_DEFAULT_PLAN, for an org that never paused or changed plan."""
    row = (
        await uow.session.execute(select(org_subscriptions).where(org_subscriptions.c.org_id == uow.org_id))
    ).first()
    code = row.plan_code if row is not None else default_plan
    plan = await get_plan(uow, code)
    if plan is None:
        # Only a misconfigured SUBSCRIPTION_DEFAULT_PLAN gets here (the foreign key guards stored rows).
        raise FailedPrecondition(f"plan {code!r} does not exist", code="unknown_plan")
    if row is None:
        return Subscription(plan=plan, status="active")
    return Subscription(
        plan=plan,
        status=row.status,
        pause_reason_code=row.pause_reason_code,
        paused_at=row.paused_at,
        resume_reason_code=row.resume_reason_code,
        resumed_at=row.resumed_at,
    )


async def list_plans(uow: UnitOfWork) -> list[Plan]:
    """Every plan, cheapest first (reference rows, the same for every org)."""
    rows = (
        await uow.session.execute(select(plans.c.code).order_by(plans.c.monthly_price_cents, plans.c.code))
    ).all()
    found = [await get_plan(uow, row.code) for row in rows]
    return [plan for plan in found if plan is not None]


def reason_code(value: str) -> str:
    """A reason code as stored: trimmed, 1 to 64 characters, printable (it is shown in audits and status)."""
    text = value.strip()
    if not text:
        raise invalid("reason_code", "is required (1 to 64 characters)")
    if len(text) > MAX_REASON_CODE:
        raise invalid("reason_code", f"must be at most {MAX_REASON_CODE} characters")
    if not text.isprintable():
        raise invalid("reason_code", "must not contain control characters")
    return text


@dataclass(frozen=True)
class Change:
    """What a pause, resume or plan change did: the subscription before and after (for the audit)."""

    before: Subscription
    after: Subscription


async def pause(uow: UnitOfWork, default_plan: str, reason: str) -> Change:
    """active -> paused; `already_paused` (409) when it is paused. Raises SUBSCRIPTION_PAUSED."""
    code = reason_code(reason)
    before = await _locked(uow, default_plan)
    if before.status == PAUSED:
        raise FailedPrecondition("the subscription is already paused; resume it first", code="already_paused")
    at = await _change_time(uow, before)
    await _update(uow, status=PAUSED, pause_reason_code=code, paused_at=at)
    after = await current(uow, default_plan)
    _announce(uow, after, code, at)
    return Change(before, after)


async def resume(uow: UnitOfWork, default_plan: str, reason: str) -> Change:
    """paused -> active; `not_paused` (409) when it is active. Raises SUBSCRIPTION_RESUMED."""
    code = reason_code(reason)
    before = await _locked(uow, default_plan)
    if before.status != PAUSED:
        raise FailedPrecondition(
            "the subscription is not paused: there is nothing to resume", code="not_paused"
        )
    at = await _change_time(uow, before)
    await _update(uow, status=ACTIVE, resume_reason_code=code, resumed_at=at)
    after = await current(uow, default_plan)
    _announce(uow, after, code, at)
    return Change(before, after)


async def change_plan(uow: UnitOfWork, default_plan: str, plan_code: str) -> Change:
    """Another plan (422 naming `plan_code` for a code that is not one); the status and history stay.
    No event: nothing outside billing gates on the plan today (the usage report reads it here)."""
    if not plan_code.strip() or await get_plan(uow, plan_code.strip()) is None:
        raise invalid("plan_code", "is not a plan (GET /v1/billing/plans lists them)")
    before = await _locked(uow, default_plan)
    await _update(uow, plan_code=plan_code.strip())
    return Change(before, await current(uow, default_plan))


def as_dict(subscription: Subscription) -> dict[str, Any]:
    """The audit's before/after: the playbook's fields and the plan code."""
    return {
        "plan_code": subscription.plan.code,
        "status": subscription.status,
        "pause_reason_code": subscription.pause_reason_code,
        "paused_at": subscription.paused_at.isoformat() if subscription.paused_at else None,
        "resume_reason_code": subscription.resume_reason_code,
        "resumed_at": subscription.resumed_at.isoformat() if subscription.resumed_at else None,
    }


async def _locked(uow: UnitOfWork, default_plan: str) -> Subscription:
    """The org's subscription with its row written (on the default plan, if it had none) and locked until
    the transaction ends, so two pauses at once cannot both pass the status check."""
    if await get_plan(uow, default_plan) is None:
        raise FailedPrecondition(f"plan {default_plan!r} does not exist", code="unknown_plan")
    await uow.session.execute(
        pg_insert(org_subscriptions)
        .values(org_id=uow.org_id, plan_code=default_plan, status=ACTIVE)
        .on_conflict_do_nothing(index_elements=[org_subscriptions.c.org_id])
    )
    await uow.session.execute(
        select(org_subscriptions.c.org_id).where(org_subscriptions.c.org_id == uow.org_id).with_for_update()
    )
    return await current(uow, default_plan)


async def _change_time(uow: UnitOfWork, before: Subscription) -> datetime:
    """The time of a status change, read after the row lock (clock_timestamp, not the transaction's
    start), and after both earlier stamps: consumers order an org's events by it, so it must grow with
    every change even if two changes land in the same microsecond."""
    now: datetime = (await uow.session.execute(select(func.clock_timestamp()))).scalar_one()
    earlier = [t for t in (before.paused_at, before.resumed_at) if t is not None]
    if earlier and now <= max(earlier):
        now = max(earlier) + timedelta(microseconds=1)
    return now


async def _update(uow: UnitOfWork, **values: Any) -> None:
    await uow.session.execute(
        update(org_subscriptions)
        .where(org_subscriptions.c.org_id == uow.org_id)
        .values(**values, updated_at=func.now())
    )


def _announce(uow: UnitOfWork, subscription: Subscription, reason: str, at: datetime) -> None:
    # events.py wires consumers whose modules may read subscriptions (the usage report does): importing
    # it here, when a change happens, keeps that import cycle from biting at start-up.
    from services.billing.events import SUBSCRIPTION_PAUSED, SUBSCRIPTION_RESUMED

    event = SUBSCRIPTION_PAUSED if subscription.status == PAUSED else SUBSCRIPTION_RESUMED
    uow.add_event(
        event,
        billing_events.SubscriptionChanged(
            org_id=str(uow.org_id),
            status=subscription.status,
            reason_code=reason,
            plan_code=subscription.plan.code,
            occurred_at=to_ts(at),
        ),
    )
