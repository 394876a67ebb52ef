"""Billing's ViewsService: its share of an invoice's or a booking's timeline (staff) and its money
metrics (analysts). Roles, ids and messages here; the work is in timeline.py and metrics.py."""

from __future__ import annotations

import grpc
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf import struct_pb2

from libs.common import context as request_context
from libs.common.convert import from_ts, parse_id, to_ts
from libs.common.db import Database
from libs.common.errors import invalid
from libs.common.roles import ANALYSTS, STAFF
from services.billing import metrics, timeline


class BillingViewsServicer(views_pb2_grpc.ViewsServiceServicer):
    def __init__(self, db: Database, default_currency: str) -> None:
        self.db = db
        self.default_currency = default_currency

    async def GetTimeline(
        self, request: views_pb2.GetTimelineRequest, context: grpc.aio.ServicerContext
    ) -> views_pb2.GetTimelineResponse:
        request_context.require_role(*STAFF)
        org_id = request_context.current_org_id()
        if bool(request.booking_id) == bool(request.invoice_id):
            raise invalid("booking_id", "exactly one of booking_id and invoice_id is required")
        if request.invoice_id:
            found = await timeline.for_invoice(self.db, org_id, parse_id(request.invoice_id, "invoice_id"))
        else:
            found = await timeline.for_booking(self.db, org_id, parse_id(request.booking_id, "booking_id"))
        return views_pb2.GetTimelineResponse(
            entries=[_entry(entry) for entry in found.entries], truncated=found.truncated
        )

    async def GetMetrics(
        self, request: views_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> views_pb2.GetMetricsResponse:
        request_context.require_role(*ANALYSTS)
        org_id = request_context.current_org_id()
        start = from_ts(getattr(request, "from"), "from")
        end = from_ts(request.to, "to")
        found = await metrics.for_period(self.db, org_id, start, end, self.default_currency)
        return views_pb2.GetMetricsResponse(
            metrics=[views_pb2.Metric(name=m.name, value=float(m.value), currency=m.currency) for m in found]
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
