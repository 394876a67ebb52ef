"""The suite's own subscription of an org (seed 002 "Pause/resume playbook", "Billing and usage
reporting"): plans, status, pause and resume, and the usage report with drift.

Roles: the plans are for any staff; the status, pause and resume for OWNER, ADMIN and FINANCE of the
caller's org (VIEWER and DISPATCHER get 403); changing plan for the OWNER alone. Everything acts on
the caller's org only: there is no org or subscription id to name. Billing checks every role again.

While paused, booking refuses new bookings and workers (409 `subscription_paused`); reads keep working."""

from __future__ import annotations

from typing import Annotated, Any

from cws.billing.v1 import billing_pb2
from fastapi import APIRouter, Depends, Query
from pydantic import Field

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.routes.convert import optional_time
from gateway.schemas import Strict
from gateway.stubs import Billing
from libs.common.roles import FINANCE_STAFF, STAFF, Role

router = APIRouter(tags=["subscription"])
FINANCE = Depends(require_roles(*FINANCE_STAFF))
ANY_STAFF = Depends(require_roles(*STAFF))
OWNER = Depends(require_roles(Role.OWNER))

ReasonCode = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="why, as a short code (e.g. seasonal_break); 1 to 64 characters, kept in the status",
    ),
]


class ReasonIn(Strict):
    reason_code: ReasonCode


class PlanIn(Strict):
    plan_code: Annotated[
        str, Field(min_length=1, max_length=32, description="a code from GET /v1/billing/plans")
    ]


def plan_view(plan: billing_pb2.SubscriptionPlan) -> dict[str, Any]:
    return {
        "code": plan.code,
        "name": plan.name,
        "limits": {
            "workers": plan.max_workers,
            "bookings_per_month": plan.max_bookings_per_month,
            "storage_bytes": plan.max_storage_bytes,
        },
        "monthly_price_cents": plan.monthly_price_cents,
        "currency": plan.currency,
    }


def status_view(subscription: billing_pb2.Subscription) -> dict[str, Any]:
    """The playbook's fields. The pause pair is the latest pause and the resume pair the latest resume,
    both kept whatever the status is now (null until the first pause, or resume)."""
    return {
        "status": subscription.status,
        "pause_reason_code": subscription.pause_reason_code or None,
        "paused_at": optional_time(subscription, "paused_at"),
        "resume_reason_code": subscription.resume_reason_code or None,
        "resumed_at": optional_time(subscription, "resumed_at"),
        "plan": plan_view(subscription.plan),
    }


@router.get(
    "/v1/billing/plans",
    dependencies=[ADMIN, ANY_STAFF],
    summary="The plans the platform sells, with their limits (workers, bookings a month, storage)",
)
async def list_plans(billing: Billing) -> dict[str, Any]:
    response = await billing.ListPlans(billing_pb2.ListPlansRequest())
    return {
        "default_plan_code": response.default_plan_code,
        "items": [plan_view(plan) for plan in response.plans],
    }


@router.get(
    "/v1/billing/status",
    dependencies=[ADMIN, FINANCE],
    summary="The org's subscription: status (active or paused), pause and resume reasons and times, plan",
)
async def subscription_status(billing: Billing) -> dict[str, Any]:
    response = await billing.GetSubscription(billing_pb2.GetSubscriptionRequest())
    return status_view(response.subscription)


@router.post(
    "/v1/billing/pause",
    dependencies=[ADMIN, FINANCE],
    summary="Pause the org's subscription (409 already_paused if it is); new bookings and workers stop",
)
async def pause(body: ReasonIn, billing: Billing) -> dict[str, Any]:
    response = await billing.PauseSubscription(
        billing_pb2.PauseSubscriptionRequest(reason_code=body.reason_code)
    )
    return status_view(response.subscription)


@router.post(
    "/v1/billing/resume",
    dependencies=[ADMIN, FINANCE],
    summary="Resume the org's paused subscription (409 not_paused if it is active)",
)
async def resume(body: ReasonIn, billing: Billing) -> dict[str, Any]:
    response = await billing.ResumeSubscription(
        billing_pb2.ResumeSubscriptionRequest(reason_code=body.reason_code)
    )
    return status_view(response.subscription)


@router.put(
    "/v1/billing/plan",
    dependencies=[ADMIN, OWNER],
    summary="Move the org to another plan (OWNER only; 422 for an unknown plan); the status is kept",
)
async def change_plan(body: PlanIn, billing: Billing) -> dict[str, Any]:
    response = await billing.ChangePlan(billing_pb2.ChangePlanRequest(plan_code=body.plan_code))
    return status_view(response.subscription)


# --- usage report (services/billing/usage.py) ----------------------------------------------------------

# Checked by billing, whose 422 names the format (a pattern here would answer with the regex).
Month = Annotated[
    str | None,
    Query(
        max_length=32,
        description="YYYY-MM, e.g. 2026-03 (default: the current month in the org's time zone)",
    ),
]


def usage_view(report: billing_pb2.UsageReport) -> dict[str, Any]:
    """Top-level `workers`, `bookings` and `storage_bytes` are the owning service's truth (booking's,
    media's); when media does not answer, `storage_bytes` is the recorded counter and its drift says
    `checked: false` with the reason."""
    metrics = {m.metric: m for m in report.metrics}
    return {
        "month": report.month,
        "time_zone": report.time_zone,
        "period": {"start": optional_time(report, "month_start"), "end": optional_time(report, "month_end")},
        "plan": {"code": report.plan_code, "name": report.plan_name},
        "subscription_status": report.subscription_status,
        **{name: m.used for name, m in metrics.items()},
        "limits": {name: m.limit for name, m in metrics.items()},
        "overage": {name: m.over_limit for name, m in metrics.items()},
        "recorded": {name: m.recorded for name, m in metrics.items()},
        "drift": {
            name: {
                "recorded": m.recorded,
                "actual": m.actual if m.checked else None,
                "difference": m.difference if m.checked else None,
                "drift_detected": m.drift_detected,
                "checked": m.checked,
                **({} if m.checked else {"reason": m.not_checked_reason}),
            }
            for name, m in metrics.items()
        },
        "drift_detected": report.drift_detected,
    }


@router.get(
    "/v1/billing/usage/report",
    dependencies=[ADMIN, FINANCE],
    summary="The org's usage in a month against its plan, with the recorded counters and their drift",
)
async def usage_report(billing: Billing, month: Month = None) -> dict[str, Any]:
    response = await billing.GetUsageReport(billing_pb2.GetUsageReportRequest(month=month or ""))
    return usage_view(response.report)
