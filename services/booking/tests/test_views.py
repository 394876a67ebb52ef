"""Booking's ViewsService through its gRPC API: its share of a booking's timeline (staff, VIEWER
included; personal data only under PII keys of the details) and its business metrics for a period
(FINANCE, ADMIN, OWNER), each in the caller's org only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.booking.v1 import booking_pb2_grpc
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf.json_format import MessageToDict

from libs.common.convert import to_ts
from libs.common.privacy import PII_KEYS
from services.booking.tests.test_deletion_requests import (
    completed_with_nps,
    make_booking,
    make_lead,
    transition,
)
from tools.testkit import as_role, rpc_error, signing_channel, sql

Code = grpc.StatusCode


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[booking_pb2_grpc.BookingServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


@pytest.fixture
async def views(booking: Any) -> AsyncIterator[views_pb2_grpc.ViewsServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield views_pb2_grpc.ViewsServiceStub(channel)


def timeline(views: Any, org_id: str, role: str = "VIEWER", **ids: str) -> Any:
    return views.GetTimeline(views_pb2.GetTimelineRequest(**ids), metadata=as_role(org_id, role))


async def test_a_bookings_timeline_for_staff_of_its_org(stub, views, make_org):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    answered = await completed_with_nps(
        stub, org_id, 10, "Dana was wonderful", client_name="Dana Client", client_email="dana@example.com"
    )
    cancelled = await make_booking(stub, org_id, client_name="Dana Client", hours=72)
    await transition(stub, org_id, cancelled.id, "cancel", reason="client moved away")
    pending = await make_booking(stub, org_id, hours=96)

    found = await timeline(views, org_id, booking_id=answered)
    assert [(e.source, e.kind) for e in found.entries] == [
        ("nps", "nps.answered"),
        ("booking", "booking.completed"),
        ("booking", "booking.created"),
    ]
    assert not found.truncated
    times = [e.at.ToDatetime() for e in found.entries]
    assert times == sorted(times, reverse=True)
    nps, done, made = (MessageToDict(e.details) for e in found.entries)
    assert nps == {"score": 10, "comment": "Dana was wonderful"}
    assert done == {"status": "completed"}
    assert made["client_name"] == "Dana Client" and made["cleaning_type"] == "standard"
    assert made["client_email"] == "dana@example.com" and made["starts_at"].endswith("+00:00")
    # Personal data only in details, under keys the gateway masks for viewers.
    for entry in found.entries:
        assert "Dana" not in entry.summary + entry.kind + entry.actor
        details = MessageToDict(entry.details)
        assert all(key in PII_KEYS for key, value in details.items() if "Dana" in str(value))
    assert {e.id for e in found.entries if e.source == "booking"} == {answered}

    gone = await timeline(views, org_id, "DISPATCHER", booking_id=cancelled.id)
    assert [e.kind for e in gone.entries] == ["booking.cancelled", "booking.created"]
    assert MessageToDict(gone.entries[0].details) == {"status": "cancelled", "reason": "client moved away"}
    assert [e.kind for e in (await timeline(views, org_id, "FINANCE", booking_id=pending.id)).entries] == [
        "booking.created"
    ]
    # An invoice is billing's to tell: nothing here, and no error.
    assert list((await timeline(views, org_id, invoice_id=str(uuid.uuid4()))).entries) == []

    await rpc_error(timeline(views, other_org, "OWNER", booking_id=answered), Code.NOT_FOUND)
    await rpc_error(timeline(views, org_id, booking_id=str(uuid.uuid4())), Code.NOT_FOUND)
    for ids, fields in (
        ({"booking_id": "123"}, ["booking_id"]),
        ({"invoice_id": "inv"}, ["invoice_id"]),
        ({}, ["booking_id", "invoice_id"]),
        ({"booking_id": answered, "invoice_id": str(uuid.uuid4())}, ["booking_id", "invoice_id"]),
    ):
        error = await rpc_error(timeline(views, org_id, **ids), Code.INVALID_ARGUMENT)
        assert [v.field for v in error.violations] == fields
    for role in ("WORKER", "CLIENT"):
        await rpc_error(timeline(views, org_id, role, booking_id=answered), Code.PERMISSION_DENIED)


def metrics_call(views: Any, org_id: str, start: datetime, end: datetime, role: str = "FINANCE") -> Any:
    request = views_pb2.GetMetricsRequest(to=to_ts(end))
    getattr(request, "from").CopyFrom(to_ts(start))
    return views.GetMetrics(request, metadata=as_role(org_id, role))


async def test_metrics_of_a_period_for_analysts(stub, views, make_org, stack):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    for email in ("m1@example.com", "m2@example.com"):
        await make_lead(stub, org_id, email)
    for score in (10, 9, 4):
        await completed_with_nps(stub, org_id, score)
    cancelled = await make_booking(stub, org_id, hours=72)
    await transition(stub, org_id, cancelled.id, "cancel")
    await make_booking(stub, org_id, hours=96)
    # Another org's figures never count here.
    await make_lead(stub, other_org, "theirs@example.com")
    await completed_with_nps(stub, other_org, 0)
    # A booking made long ago counts in its own period, not in this one.
    old = await make_booking(stub, org_id, hours=120)
    await sql(
        stack.admin_url,
        "UPDATE booking.bookings SET created_at = now() - interval '400 days' WHERE id = %s",
        (uuid.UUID(old.id),),
    )

    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(days=5)
    for role in ("FINANCE", "ADMIN", "OWNER"):
        found = await metrics_call(views, org_id, start, end, role)
        values = {m.name: m.value for m in found.metrics}
        assert values == {
            "leads": 2,
            "bookings": 5,
            "bookings_pending": 1,
            "bookings_confirmed": 0,
            "bookings_in_progress": 0,
            "bookings_completed": 3,
            "bookings_cancelled": 1,
            "jobs_completed": 3,
            "nps_responses": 3,
            "nps_score": 33.3,
            "nps_average": 7.67,
        }
        assert all(m.currency == "" for m in found.metrics)
    # A quiet period: zeros, and no NPS figures without a response.
    quiet = await metrics_call(views, org_id, now - timedelta(days=30), now - timedelta(days=20))
    values = {m.name: m.value for m in quiet.metrics}
    assert values["leads"] == values["bookings"] == values["nps_responses"] == 0
    assert "nps_score" not in values and "nps_average" not in values

    for role in ("VIEWER", "DISPATCHER"):
        error = await rpc_error(metrics_call(views, org_id, start, end, role), Code.PERMISSION_DENIED)
        assert error.reason == "forbidden_role"
    for (a, b), field in (
        ((end, start), "to"),
        ((start, start), "to"),
        ((now - timedelta(days=367), now), "from"),
    ):
        error = await rpc_error(metrics_call(views, org_id, a, b), Code.INVALID_ARGUMENT)
        assert [v.field for v in error.violations] == [field]
    missing = views.GetMetrics(views_pb2.GetMetricsRequest(to=to_ts(end)), metadata=as_role(org_id, "OWNER"))
    assert [v.field for v in (await rpc_error(missing, Code.INVALID_ARGUMENT)).violations] == ["from"]
