"""The subscription part of the billing servicer: the platform's plans and the org's plan and status,
pause and resume (seed 002's playbook). Pause, resume and plan changes are admin writes: the unit of
work audits them, with the subscription before and after."""

from __future__ import annotations

import grpc
from cws.billing.v1 import billing_pb2

from libs.common import context as request_context
from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.roles import FINANCE_STAFF, STAFF, Role
from services.billing import subscriptions
from services.billing.peers import Peers
from services.billing.settings import BillingSettings


def plan_message(plan: subscriptions.Plan) -> billing_pb2.SubscriptionPlan:
    return billing_pb2.SubscriptionPlan(
        code=plan.code,
        name=plan.name,
        max_workers=plan.max_workers,
        max_bookings_per_month=plan.max_bookings_per_month,
        max_storage_bytes=plan.max_storage_bytes,
        monthly_price_cents=plan.monthly_price_cents,
        currency=plan.currency,
    )


def subscription_message(subscription: subscriptions.Subscription) -> billing_pb2.Subscription:
    message = billing_pb2.Subscription(
        plan=plan_message(subscription.plan),
        status=subscription.status,
        pause_reason_code=subscription.pause_reason_code or "",
        resume_reason_code=subscription.resume_reason_code or "",
    )
    if subscription.paused_at is not None:
        message.paused_at.CopyFrom(to_ts(subscription.paused_at))
    if subscription.resumed_at is not None:
        message.resumed_at.CopyFrom(to_ts(subscription.resumed_at))
    return message


class SubscriptionApi:
    db: Database
    settings: BillingSettings
    peers: Peers

    async def ListPlans(
        self, request: billing_pb2.ListPlansRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListPlansResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await subscriptions.list_plans(uow)
        return billing_pb2.ListPlansResponse(
            plans=[plan_message(p) for p in found], default_plan_code=self.settings.subscription_default_plan
        )

    async def GetSubscription(
        self, request: billing_pb2.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetSubscriptionResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await subscriptions.current(uow, self.settings.subscription_default_plan)
        return billing_pb2.GetSubscriptionResponse(subscription=subscription_message(found))

    async def PauseSubscription(
        self, request: billing_pb2.PauseSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.PauseSubscriptionResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            change = await subscriptions.pause(
                uow, self.settings.subscription_default_plan, request.reason_code
            )
            uow.audit_change(subscriptions.as_dict(change.before), subscriptions.as_dict(change.after))
        return billing_pb2.PauseSubscriptionResponse(subscription=subscription_message(change.after))

    async def ResumeSubscription(
        self, request: billing_pb2.ResumeSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ResumeSubscriptionResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            change = await subscriptions.resume(
                uow, self.settings.subscription_default_plan, request.reason_code
            )
            uow.audit_change(subscriptions.as_dict(change.before), subscriptions.as_dict(change.after))
        return billing_pb2.ResumeSubscriptionResponse(subscription=subscription_message(change.after))

    async def ChangePlan(
        self, request: billing_pb2.ChangePlanRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ChangePlanResponse:
        # What the org pays for is the owner's decision alone.
        request_context.require_role(Role.OWNER)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            change = await subscriptions.change_plan(
                uow, self.settings.subscription_default_plan, request.plan_code
            )
            uow.audit_change(subscriptions.as_dict(change.before), subscriptions.as_dict(change.after))
        return billing_pb2.ChangePlanResponse(subscription=subscription_message(change.after))
