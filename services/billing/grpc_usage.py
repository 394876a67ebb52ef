"""The usage part of the billing servicer: the usage report, counters recorded from domain events
compared with the truth from the owning services (drift): booking's CountUsage (workers, bookings)
and media's GetStorageUsage (stored bytes). The counters themselves are written by the consumers in
events.py (usage.py)."""

from __future__ import annotations

import grpc
from cws.billing.v1 import billing_pb2
from cws.booking.v1 import booking_pb2
from cws.media.v1 import media_pb2

from libs.common import context as request_context
from libs.common.context import service_context
from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import ServiceError
from libs.common.grpc_client import acting_as, peer_answers
from libs.common.logs import get_logger
from libs.common.roles import FINANCE_STAFF
from services.billing import orgs, subscriptions, usage
from services.billing.peers import Peers
from services.billing.settings import BillingSettings

log = get_logger(__name__)


class UsageApi:
    db: Database
    settings: BillingSettings
    peers: Peers

    async def GetUsageReport(
        self, request: billing_pb2.GetUsageReportRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetUsageReportResponse:
        ctx = request_context.require_role(*FINANCE_STAFF)
        org_id = request_context.current_org_id()
        async with unit_of_work(self.db, org_id) as uow:
            org = await orgs.get(uow, self.settings, self.peers)
            month = usage.parse_month(request.month, org.time_zone)
            subscription = await subscriptions.current(uow, self.settings.subscription_default_plan)
            counters = await usage.recorded(uow, month)
        # Booking counts its own rows in this org, billing acting for it (never the caller's context:
        # CountUsage is for suite services only).
        acting = service_context("billing", str(org_id), ctx.request_id)
        with peer_answers("booking"), acting_as(acting):
            truth = await self.peers.booking.stub.CountUsage(
                booking_pb2.CountUsageRequest(month_start=to_ts(month.start), month_end=to_ts(month.end))
            )
        stored_bytes, not_checked = await self._stored_bytes(acting)
        found = usage.report(
            month,
            subscription,
            counters,
            active_workers=truth.active_workers,
            bookings_created=truth.bookings_created,
            stored_bytes=stored_bytes,
            storage_not_checked=not_checked,
        )
        return billing_pb2.GetUsageReportResponse(report=_report_message(found))

    async def _stored_bytes(self, acting: request_context.RequestContext) -> tuple[int | None, str]:
        """Media's count of the org's stored bytes, or None and why not. Media not deployed or not
        answering leaves storage unchecked rather than failing the report: workers and bookings are
        still worth reading (booking's answer is required; media's is not)."""
        if self.peers.media is None:
            return None, usage.STORAGE_NOT_DEPLOYED
        try:
            with peer_answers("media"), acting_as(acting):
                truth = await self.peers.media.stub.GetStorageUsage(media_pb2.GetStorageUsageRequest())
        except ServiceError as error:
            log.warning("usage_storage_not_checked", reason=error.code)
            return None, usage.STORAGE_UNAVAILABLE
        return truth.stored_bytes, ""


def _report_message(found: usage.UsageReport) -> billing_pb2.UsageReport:
    plan = found.subscription.plan
    return billing_pb2.UsageReport(
        month=found.month.label,
        time_zone=found.month.time_zone,
        month_start=to_ts(found.month.start),
        month_end=to_ts(found.month.end),
        plan_code=plan.code,
        plan_name=plan.name,
        subscription_status=found.subscription.status,
        metrics=[
            billing_pb2.UsageMetric(
                metric=m.metric,
                recorded=m.recorded,
                actual=m.actual or 0,
                checked=m.checked,
                not_checked_reason=m.not_checked_reason,
                limit=m.limit,
                used=m.used,
                over_limit=m.over_limit,
                difference=m.difference,
                drift_detected=m.drift_detected,
            )
            for m in found.metrics
        ],
        drift_detected=found.drift_detected,
    )
