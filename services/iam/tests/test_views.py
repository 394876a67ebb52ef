"""iam's ViewsService through its gRPC API (issue 13): a booking's or an invoice's admin audit entries
as timeline entries (staff roles), capped at the newest 100; metrics (analysts), of which iam states
none. Audit rows are written as iam's audit consumer writes them (audit.record_from_service), and once
through the consumer itself, from an event published as booking's relay would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.common.v1 import audit_pb2, views_pb2, views_pb2_grpc
from google.protobuf import json_format

from libs.common.bus import EventBus, event_headers
from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.privacy import mask_pii
from services.iam import audit, timeline
from services.iam.events import AUDIT_RECORDED
from services.iam.models import SCHEMA, event_tables, metadata
from tools.testkit import as_role, eventually, rpc_error, schema_drift, signing_channel, sql

Code = grpc.StatusCode
STAFF = ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER")


@pytest.fixture
async def views(iam: Any) -> AsyncIterator[views_pb2_grpc.ViewsServiceStub]:
    async with signing_channel(iam.target) as channel:
        yield views_pb2_grpc.ViewsServiceStub(channel)


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    yield database
    await database.dispose()


def recorded(org_id: str, action: str, resource_type: str, resource_id: str, **fields: Any) -> Any:
    before, after = fields.pop("before", None), fields.pop("after", None)
    message = audit_pb2.AdminAuditRecorded(
        org_id=org_id,
        actor=fields.pop("actor", str(uuid.uuid4())),
        role=fields.pop("role", "DISPATCHER"),
        auth_method=fields.pop("auth_method", "jwt"),
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=fields.pop("request_id", f"req-{uuid.uuid4().hex[:8]}"),
        **fields,
    )
    if before is not None:
        message.before.update(before)
    if after is not None:
        message.after.update(after)
    return message


async def write(db: Database, message: Any) -> None:
    """One audit row, in a transaction of its own (so each has its own created_at)."""
    async with unit_of_work(db, message.org_id) as uow:
        await audit.record_from_service(uow, message)


def details(entry: Any) -> dict[str, Any]:
    return json_format.MessageToDict(entry.details)


async def timeline_of(views: Any, org_id: str, role: str = "VIEWER", **ids: str) -> Any:
    return await views.GetTimeline(views_pb2.GetTimelineRequest(**ids), metadata=as_role(org_id, role))


# --- GetTimeline ----------------------------------------------------------------------------------


async def test_a_bookings_audited_writes_are_its_timeline_newest_first(
    views: Any, db: Database, make_org: Any
) -> None:
    org = await make_org()
    booking, other_booking, invoice = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    user = str(uuid.uuid4())
    await write(db, recorded(org.org_id, "booking.CreateBooking", "booking", booking, actor=user))
    await write(
        db,
        recorded(
            org.org_id,
            "booking.CancelBooking",
            "booking",
            booking,
            actor="basic:alice",
            role="ADMIN",
            auth_method="basic",
            request_id="req-cancel",
            before={"status": "confirmed", "granted_by": "pat@example.com"},
            after={"status": "cancelled", "client_email": "pat@example.com"},
        ),
    )
    await write(db, recorded(org.org_id, "booking.AssignBooking", "booking", other_booking))
    await write(db, recorded(org.org_id, "billing.SendInvoice", "invoice", invoice, actor="service:billing"))

    found = await timeline_of(views, org.org_id, booking_id=booking)
    assert not found.truncated
    assert [e.kind for e in found.entries] == ["booking.CancelBooking", "booking.CreateBooking"]
    cancel, create = found.entries
    assert {e.source for e in found.entries} == {"audit"}
    assert cancel.at.ToDatetime() >= create.at.ToDatetime()
    assert create.actor == f"user:{user}"
    # A Basic Auth username may be a person's name: it is no actor, it is details["name"] (masked).
    assert cancel.actor == "basic" and details(cancel)["name"] == "alice"
    assert details(cancel) == {
        "role": "ADMIN",
        "auth_method": "basic",
        "request_id": "req-cancel",
        "name": "alice",
        # An email under a key the gateway does not mask is moved under one it does.
        "before": {"status": "confirmed", "granted_by": {"email": "pat@example.com"}},
        "after": {"status": "cancelled", "client_email": "pat@example.com"},
    }
    assert "pat@example.com" not in cancel.summary and "alice" not in cancel.summary
    assert all(uuid.UUID(e.id) for e in found.entries)

    [sent] = (await timeline_of(views, org.org_id, invoice_id=invoice)).entries
    assert (sent.kind, sent.actor) == ("billing.SendInvoice", "service:billing")
    # The same id as a booking is not the invoice's, and the other way round.
    assert list((await timeline_of(views, org.org_id, booking_id=invoice)).entries) == []


async def test_an_audit_event_from_booking_lands_in_the_bookings_timeline(
    views: Any, make_org: Any, stack: Any
) -> None:
    """The whole path: booking's cws.booking.audit.recorded → iam's consumer → the timeline."""
    org = await make_org()
    booking = str(uuid.uuid4())
    event = next(e for e in AUDIT_RECORDED if e.producer == "booking")
    message = recorded(org.org_id, "booking.AssignBooking", "booking", booking, after={"team_id": "t-1"})
    bus = EventBus(stack.nats.url, "iam-views-test-booking", **stack.nats.login("booking"))
    await bus.connect()
    try:
        headers = event_headers(
            str(uuid.uuid4()), event.subject, "booking", datetime.now(UTC), org.org_id, "req-1"
        )
        await bus.js.publish(event.subject, message.SerializeToString(), headers=headers)
    finally:
        await bus.close()

    async def entries() -> list[Any]:
        return list((await timeline_of(views, org.org_id, booking_id=booking)).entries)

    found: list[Any] = await eventually(entries, message="the audit entry in the timeline")
    [entry] = found
    assert entry.kind == "booking.AssignBooking" and details(entry)["after"] == {"team_id": "t-1"}


async def test_the_newest_hundred_entries_are_kept_and_the_answer_says_it_was_cut(
    views: Any, db: Database, make_org: Any
) -> None:
    org = await make_org()
    booking = str(uuid.uuid4())
    for n in range(timeline.AUDIT_CAP + 1):
        await write(
            db, recorded(org.org_id, "booking.UpdateBooking", "booking", booking, request_id=f"r-{n}")
        )
    found = await timeline_of(views, org.org_id, booking_id=booking)
    assert found.truncated and len(found.entries) == timeline.AUDIT_CAP
    kept = [details(e)["request_id"] for e in found.entries]
    assert kept == [f"r-{n}" for n in range(timeline.AUDIT_CAP, 0, -1)], "newest first, the oldest cut"

    await write(db, recorded(org.org_id, "booking.UpdateBooking", "booking", str(uuid.uuid4())))
    exactly = str(uuid.uuid4())
    for _ in range(3):
        await write(db, recorded(org.org_id, "booking.UpdateBooking", "booking", exactly))
    assert not (await timeline_of(views, org.org_id, booking_id=exactly)).truncated


async def test_every_staff_role_reads_a_timeline_and_no_one_else(
    views: Any, db: Database, make_org: Any
) -> None:
    org = await make_org()
    booking = str(uuid.uuid4())
    await write(db, recorded(org.org_id, "booking.CreateBooking", "booking", booking))
    for role in STAFF:
        assert len((await timeline_of(views, org.org_id, role, booking_id=booking)).entries) == 1, role
    request = views_pb2.GetTimelineRequest(booking_id=booking)
    for role in ("WORKER", "CLIENT"):
        await rpc_error(
            views.GetTimeline(request, metadata=as_role(org.org_id, role)), Code.PERMISSION_DENIED
        )


async def test_another_orgs_ids_get_an_empty_timeline(views: Any, db: Database, make_org: Any) -> None:
    org, other = await make_org(), await make_org()
    booking, invoice = str(uuid.uuid4()), str(uuid.uuid4())
    await write(db, recorded(org.org_id, "booking.CreateBooking", "booking", booking))
    await write(db, recorded(org.org_id, "billing.SendInvoice", "invoice", invoice))
    for ids in ({"booking_id": booking}, {"invoice_id": invoice}):
        found = await timeline_of(views, other.org_id, "OWNER", **ids)
        assert (list(found.entries), found.truncated) == ([], False)
        assert len((await timeline_of(views, org.org_id, "OWNER", **ids)).entries) == 1


async def test_a_timeline_needs_exactly_one_id_and_a_uuid(views: Any, make_org: Any) -> None:
    org = await make_org()
    cases = [
        ({"booking_id": "not-a-uuid"}, "booking_id"),
        ({"invoice_id": "42"}, "invoice_id"),
        ({}, "booking_id"),
        ({"booking_id": str(uuid.uuid4()), "invoice_id": str(uuid.uuid4())}, "booking_id"),
    ]
    for ids, field in cases:
        error = await rpc_error(
            views.GetTimeline(views_pb2.GetTimelineRequest(**ids), metadata=as_role(org.org_id, "OWNER")),
            Code.INVALID_ARGUMENT,
        )
        assert [v.field for v in error.violations] == [field], ids


def test_actor_names_and_emails_go_to_details() -> None:
    user = str(uuid.uuid4())
    assert timeline.actor_of(user) == (f"user:{user}", {})
    assert timeline.actor_of("service:jobs") == ("service:jobs", {})
    assert timeline.actor_of("basic:Jane Doe") == ("basic", {"name": "Jane Doe"})
    assert timeline.actor_of("pat@example.com") == ("client", {"email": "pat@example.com"})
    assert timeline.actor_of("") == ("anonymous", {})
    assert timeline.actor_of("Jane") == ("unknown", {"name": "Jane"})


def test_emails_in_before_and_after_end_up_under_a_masked_key() -> None:
    recorded_json = {
        "granted_by": "Pat@Example.com",
        "email": "pat@example.com",
        "people": [{"by": "pat@example.com", "n": 2}],
        "note": "mail pat@example.com",
        "source": "portal",
    }
    assert timeline.flag_emails(recorded_json) == {
        "granted_by": {"email": "Pat@Example.com"},
        "email": "pat@example.com",
        "people": [{"by": {"email": "pat@example.com"}, "n": 2}],
        "note": "mail pat@example.com",  # free text: not recognised (no service records any here)
        "source": "portal",
    }
    assert mask_pii({"before": timeline.flag_emails(recorded_json)})["before"]["granted_by"] == {
        "email": "P***@Example.com"
    }


async def test_the_timeline_query_reads_the_resource_index(db: Database, make_org: Any, stack: Any) -> None:
    """The plan over an org with many audited resources and fresh statistics, sequential scans priced
    out so the table's small size cannot hide a missing index: the read uses
    ix_admin_audit_logs_org_resource, not the org's (org_id, created_at) index plus a filter."""
    org = await make_org()
    resources = [str(uuid.uuid4()) for _ in range(40)]
    # Written as the superuser (RLS does not apply; the org is named in each row) in one statement:
    # the test needs volume, not the consumer's path, which the tests above take.
    await sql(
        stack.admin_url,
        "INSERT INTO iam.admin_audit_logs (id, org_id, actor, action, resource_type, resource_id, created_at)"
        " SELECT gen_random_uuid(), %s, 'service:test', 'booking.UpdateBooking', 'booking', r.id,"
        " now() - g * interval '1 minute' FROM unnest(%s::text[]) AS r(id), generate_series(1, 10) AS g",
        (uuid.UUID(org.org_id), resources),
    )
    await sql(stack.admin_url, "ANALYZE iam.admin_audit_logs")
    statement = timeline.newest_entries(uuid.UUID(org.org_id), timeline.BOOKING, uuid.UUID(resources[0]))
    async with unit_of_work(db, org.org_id) as uow:
        connection = await uow.session.connection()
        await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        compiled = statement.compile(dialect=connection.dialect)
        plan = "\n".join(
            row[0] for row in await connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
        )
    assert "ix_admin_audit_logs_org_resource" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_models_and_migrations_agree(stack: Any) -> None:
    assert schema_drift(stack.admin_url, SCHEMA, metadata) == []


# --- GetMetrics -----------------------------------------------------------------------------------


def period(start: datetime, end: datetime) -> views_pb2.GetMetricsRequest:
    request = views_pb2.GetMetricsRequest(to=to_ts(end))
    getattr(request, "from").CopyFrom(to_ts(start))
    return request


async def test_metrics_are_for_analysts_and_iam_states_none(views: Any, make_org: Any) -> None:
    org = await make_org()
    end = datetime.now(UTC)
    request = period(end - timedelta(days=30), end)
    for role in ("OWNER", "ADMIN", "FINANCE"):
        assert list((await views.GetMetrics(request, metadata=as_role(org.org_id, role))).metrics) == []
    for role in ("DISPATCHER", "VIEWER", "WORKER", "CLIENT"):
        await rpc_error(views.GetMetrics(request, metadata=as_role(org.org_id, role)), Code.PERMISSION_DENIED)


async def test_metrics_need_a_period_that_ends_after_it_starts(views: Any, make_org: Any) -> None:
    org = await make_org()
    end = datetime.now(UTC)
    owner = as_role(org.org_id, "OWNER")
    cases = [
        (views_pb2.GetMetricsRequest(to=to_ts(end)), "from"),
        (period(end, end), "to"),
        (period(end, end - timedelta(days=1)), "to"),
    ]
    for request, field in cases:
        error = await rpc_error(views.GetMetrics(request, metadata=owner), Code.INVALID_ARGUMENT)
        assert [v.field for v in error.violations] == [field]
