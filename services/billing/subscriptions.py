"""The suite's own subscription of an org: its plan (limits) and status (active or paused).

An org with no row in `org_subscriptions` is on SUBSCRIPTION_DEFAULT_PLAN and active: nothing has to
happen when an org is created, and the first pause or plan change writes the row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition
from services.billing.models import org_subscriptions, plans


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
