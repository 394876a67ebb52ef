"""NPS submission and analytics (aggregates only, no PII)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from cws.booking.v1 import booking_pb2

from libs.common import context as request_context
from libs.common.convert import from_ts
from libs.common.db import Database, unit_of_work
from libs.common.roles import ANALYSTS
from services.booking import analytics, nps, orgs
from services.booking.settings import BookingSettings

DEFAULT_NPS_WINDOW = timedelta(days=365)
DEFAULT_COHORT_MONTHS = 12


def _trend(points: list[analytics.TrendPoint]) -> list[booking_pb2.NpsTrendPoint]:
    return [
        booking_pb2.NpsTrendPoint(period=p.period, responses=p.responses, average_score=p.average_score)
        for p in points
    ]


class InsightsApi:
    db: Database
    settings: BookingSettings

    async def SubmitNps(
        self, request: booking_pb2.SubmitNpsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.SubmitNpsResponse:
        # Public: the survey token names its org, so the submit runs inside that org under RLS.
        async with unit_of_work(self.db, nps.org_of_token(request.token)) as uow:
            await nps.submit(uow, request.token, request.score, request.comment)
        return booking_pb2.SubmitNpsResponse()

    async def NpsAnalytics(
        self, request: booking_pb2.NpsAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.NpsAnalyticsResponse:
        request_context.require_role(*ANALYSTS)
        to_time = from_ts(request.to_time, "to") if request.HasField("to_time") else datetime.now(UTC)
        from_time = (
            from_ts(request.from_time, "from")
            if request.HasField("from_time")
            else to_time - DEFAULT_NPS_WINDOW
        )
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            profile = await orgs.profile(uow)
            summary = await analytics.nps_summary(
                uow, time_zone=profile.time_zone, from_time=from_time, to_time=to_time
            )
        return booking_pb2.NpsAnalyticsResponse(
            responses=summary.responses,
            promoters=summary.promoters,
            passives=summary.passives,
            detractors=summary.detractors,
            nps=summary.nps,
            weekly=_trend(summary.weekly),
            monthly=_trend(summary.monthly),
        )

    async def CohortAnalytics(
        self, request: booking_pb2.CohortAnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CohortAnalyticsResponse:
        request_context.require_role(*ANALYSTS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            profile = await orgs.profile(uow)
            found = await analytics.cohorts(
                uow, time_zone=profile.time_zone, months=request.months or DEFAULT_COHORT_MONTHS
            )
        return booking_pb2.CohortAnalyticsResponse(
            cohorts=[
                booking_pb2.Cohort(
                    month=c.month,
                    customers=c.customers,
                    repeat_customers=c.repeat_customers,
                    repeat_rate=c.repeat_rate,
                )
                for c in found
            ]
        )
