"""notify's ViewsService: what it sent about a booking or an invoice (staff), and its email and
webhook figures for a period (analysts). Roles, ids and messages here; the work is in timeline.py.

notify owns neither bookings nor invoices, so an id it holds nothing about is an empty answer, never
NOT_FOUND; every query runs in the caller's org (RLS), so another org's id is empty too."""

from __future__ import annotations

import grpc
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf import struct_pb2

from libs.common import context as request_context
from libs.common.convert import from_ts, parse_id, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import invalid
from libs.common.roles import ANALYSTS, STAFF
from services.notify import timeline


class NotifyViewsServicer(views_pb2_grpc.ViewsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetTimeline(
        self, request: views_pb2.GetTimelineRequest, context: grpc.aio.ServicerContext
    ) -> views_pb2.GetTimelineResponse:
        request_context.require_role(*STAFF)
        org_id = request_context.current_org_id()
        if bool(request.booking_id) == bool(request.invoice_id):
            raise invalid("booking_id", "exactly one of booking_id and invoice_id is required")
        async with unit_of_work(self.db, org_id) as uow:
            if request.booking_id:
                found = await timeline.for_booking(uow, parse_id(request.booking_id, "booking_id"))
            else:
                found = await timeline.for_invoice(uow, parse_id(request.invoice_id, "invoice_id"))
        return views_pb2.GetTimelineResponse(
            entries=[_entry(entry) for entry in found.newest_first()], truncated=found.truncated
        )

    async def GetMetrics(
        self, request: views_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> views_pb2.GetMetricsResponse:
        request_context.require_role(*ANALYSTS)
        org_id = request_context.current_org_id()
        start = from_ts(getattr(request, "from"), "from")
        end = from_ts(request.to, "to")
        async with unit_of_work(self.db, org_id) as uow:
            found = await timeline.metrics(uow, start, end)
        return views_pb2.GetMetricsResponse(
            metrics=[views_pb2.Metric(name=name, value=float(value)) for name, value in found.items()]
        )


def _entry(entry: timeline.Entry) -> views_pb2.TimelineEntry:
    details = struct_pb2.Struct()
    details.update(entry.details)
    return views_pb2.TimelineEntry(
        at=to_ts(entry.at),
        source=entry.source,
        kind=entry.kind,
        summary=entry.summary,
        actor=entry.actor,
        id=entry.id,
        details=details,
    )
