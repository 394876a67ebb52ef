"""Booking's ViewsService (issue 13): its share of a booking's timeline, and its business metrics.
Proto in, domain call (timeline.py, metrics.py), proto out."""

from __future__ import annotations

import grpc
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf import struct_pb2

from libs.common import context as request_context
from libs.common.convert import from_ts, parse_id, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import FieldViolation, InvalidArgument
from libs.common.roles import ANALYSTS, STAFF
from services.booking import metrics, timeline


def _entry(entry: timeline.Entry) -> views_pb2.TimelineEntry:
    details = struct_pb2.Struct()
    details.update(entry.details)
    return views_pb2.TimelineEntry(
        at=to_ts(entry.at),
        source=entry.source,
        kind=entry.kind,
        summary=entry.summary,
        actor="",
        id=entry.id,
        details=details,
    )


class ViewsServicer(views_pb2_grpc.ViewsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetTimeline(
        self, request: views_pb2.GetTimelineRequest, context: grpc.aio.ServicerContext
    ) -> views_pb2.GetTimelineResponse:
        request_context.require_role(*STAFF)
        if bool(request.booking_id) == bool(request.invoice_id):
            problem = "give exactly one of booking_id and invoice_id"
            raise InvalidArgument.of(
                [FieldViolation("booking_id", problem), FieldViolation("invoice_id", problem)]
            )
        if request.invoice_id:
            # Billing owns invoices and answers for them; booking holds nothing keyed by one.
            parse_id(request.invoice_id, "invoice_id")
            return views_pb2.GetTimelineResponse()
        booking_id = parse_id(request.booking_id, "booking_id")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            entries = await timeline.booking_timeline(uow, booking_id)
        return views_pb2.GetTimelineResponse(entries=[_entry(e) for e in entries])

    async def GetMetrics(
        self, request: views_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> views_pb2.GetMetricsResponse:
        request_context.require_role(*ANALYSTS)
        start, end = from_ts(getattr(request, "from"), "from"), from_ts(request.to, "to")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await metrics.period_metrics(uow, start, end)
        return views_pb2.GetMetricsResponse(
            metrics=[views_pb2.Metric(name=m.name, value=m.value) for m in found]
        )
