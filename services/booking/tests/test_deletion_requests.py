"""Seed 002's data export/delete playbook at booking's gRPC API (the real process, contexts signed as
the gateway and the jobs service sign them): finding a person by lead or email, deletion requests
recorded once per person and org, and the erasure driver's view (pending requests, step outcomes).

The data of each test is made through the same API (CreateLead, CreateBooking, ...), in its own org."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.common.v1 import audit_pb2

from libs.common import context as request_context
from libs.common.convert import to_ts
from libs.common.event_types import audit_event
from services.booking.models import SCHEMA, metadata
from tools.testkit import (
    as_role,
    as_service,
    eventually,
    rpc_error,
    schema_drift,
    signed,
    signing_channel,
    sql,
)

Code = grpc.StatusCode
Stub = booking_pb2_grpc.BookingServiceStub
INPUTS = booking_pb2.StructuredInputs(beds=2, baths=1, cleaning_type="standard")


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[Stub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


# --- making a person's data ----------------------------------------------------------------------


async def make_lead(
    stub: Stub,
    org_id: str,
    email: str,
    name: str = "Jane Person",
    phone: str = "780-555-0101",
    notes: str = "",
) -> booking_pb2.Lead:
    made = await stub.CreateLead(
        booking_pb2.CreateLeadRequest(
            name=name, phone=phone, email=email, postal_code="T5J0N3", structured_inputs=INPUTS, notes=notes
        ),
        metadata=as_role(org_id, "OWNER"),
    )
    return made.lead


async def make_booking(stub: Stub, org_id: str, hours: float = 48, **fields: Any) -> booking_pb2.Booking:
    """A booking by a dispatcher; from a lead (`lead_id=`) or with the client's details given."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    if not fields.get("lead_id"):
        fields = {"client_name": "Casey Client", "cleaning_type": "standard", "beds": 2, "baths": 1, **fields}
    made = await stub.CreateBooking(
        booking_pb2.CreateBookingRequest(starts_at=to_ts(start), duration_minutes=120, **fields),
        metadata=as_role(org_id, "DISPATCHER"),
    )
    return made.booking


async def transition(stub: Stub, org_id: str, booking_id: str, *actions: str, reason: str = "") -> str:
    """Apply the actions in turn; the NPS token a completion issues, if any."""
    token = ""
    for action in actions:
        done = await stub.TransitionBooking(
            booking_pb2.TransitionBookingRequest(booking_id=booking_id, action=action, reason=reason),
            metadata=as_role(org_id, "DISPATCHER"),
        )
        token = done.nps_token or token
    return token


async def answer_nps(stub: Stub, token: str, score: int, comment: str = "") -> None:
    anonymous = signed(request_context.RequestContext(request_id=f"nps-{uuid.uuid4().hex[:8]}"))
    await stub.SubmitNps(
        booking_pb2.SubmitNpsRequest(token=token, score=score, comment=comment), metadata=anonymous
    )


async def completed_with_nps(stub: Stub, org_id: str, score: int, comment: str = "", **fields: Any) -> str:
    made = await make_booking(stub, org_id, **fields)
    token = await transition(stub, org_id, made.id, "confirm", "start", "complete")
    await answer_nps(stub, token, score, comment)
    return made.id


async def find(stub: Stub, org_id: str, role: str = "OWNER", **subject: str) -> Any:
    found = await stub.FindPerson(
        booking_pb2.FindPersonRequest(purpose="export", **subject), metadata=as_role(org_id, role)
    )
    return found.person


def email_subject(email: str) -> str:
    return f"email:{hashlib.sha256(email.lower().encode()).hexdigest()[:16]}"


async def audit_records(
    stack: Any, org_id: str, action: str
) -> list[tuple[audit_pb2.AdminAuditRecorded, bytes]]:
    rows = await sql(
        stack.admin_url,
        "SELECT payload FROM booking.event_outbox WHERE org_id = %s AND subject = %s ORDER BY created_at, id",
        (uuid.UUID(org_id), audit_event(SCHEMA).subject),
    )
    records = [(audit_pb2.AdminAuditRecorded.FromString(bytes(p)), bytes(p)) for (p,) in rows]
    return [(r, raw) for r, raw in records if r.action == action]


# --- tests -----------------------------------------------------------------------------------------


def test_models_and_migrations_agree(stack: Any) -> None:
    assert schema_drift(stack.admin_url, SCHEMA, metadata) == []


async def test_find_person_by_lead_or_email_whatever_the_case(stub, make_org, stack):
    org_id = (await make_org()).org_id
    first = await make_lead(stub, org_id, "Jane.Doe@Example.com", name="Jane Doe", phone="780-555-0101")
    again = await make_lead(stub, org_id, "jane.doe@example.com", name="J. Doe", phone="780-555-0102")
    other = await make_lead(stub, org_id, "someone@example.com", name="Some One", phone="780-555-0199")
    from_lead = await make_booking(stub, org_id, lead_id=first.id, address="12 Elm Street")
    by_email = await make_booking(
        stub, org_id, client_email="JANE.DOE@example.com", client_name="Jane at work", address="1 Office Road"
    )
    await make_booking(stub, org_id, lead_id=other.id, address="99 Other Lane")
    # A booking from her lead under another address of hers: that email joins her person.
    work = await make_booking(stub, org_id, lead_id=first.id, client_email="jd@work.example.com")

    by_lead = await find(stub, org_id, lead_id=first.id)
    assert sorted(by_lead.lead_ids) == sorted([first.id, again.id])
    assert sorted(by_lead.booking_ids) == sorted([from_lead.id, by_email.id, work.id])
    assert list(by_lead.emails) == ["jane.doe@example.com", "jd@work.example.com"]
    assert set(by_lead.pii_values) == {
        "Jane Doe",
        "J. Doe",
        "+17805550101",
        "+17805550102",
        "12 Elm Street",
        "Jane at work",
        "1 Office Road",
    }
    assert await find(stub, org_id, email="  JANE.doe@EXAMPLE.com ") == by_lead
    # The other address alone finds its booking and, through it, nothing of the leads (one pass).
    work_only = await find(stub, org_id, email="JD@work.example.com")
    assert list(work_only.booking_ids) == [work.id] and list(work_only.lead_ids) == []

    # An unknown email is a person with just that email, not an error.
    unknown = await find(stub, org_id, email="Nobody@Example.com")
    assert (list(unknown.emails), list(unknown.lead_ids), list(unknown.booking_ids)) == (
        ["nobody@example.com"],
        [],
        [],
    )

    # Every lookup is audited with actor and subject, never with the email itself.
    async def four() -> list[Any]:
        found = await audit_records(stack, org_id, "booking.FindPerson")
        return found if len(found) == 4 else []

    records = await eventually(four, message="the lookups' audit records")
    subjects = [r.after["subject"] for r, _ in records]
    assert subjects == [
        f"lead:{first.id}",
        email_subject("jane.doe@example.com"),
        email_subject("jd@work.example.com"),
        email_subject("nobody@example.com"),
    ]
    assert records[0][0].after["leads"] == 2 and records[0][0].after["bookings"] == 3
    assert records[0][0].after["purpose"] == "export" and records[0][0].actor
    assert records[0][0].resource_type == "lead" and records[0][0].resource_id == first.id
    assert not any(b"example.com" in raw.lower() for _, raw in records)


async def test_find_person_refuses_bad_input_other_orgs_and_non_managers(stub, make_org):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    theirs = await make_lead(stub, other_org, "theirs@example.com")

    for subject, fields in (
        ({}, ["lead_id", "email"]),
        ({"lead_id": theirs.id, "email": "theirs@example.com"}, ["lead_id", "email"]),
        ({"email": "not an email"}, ["email"]),
        ({"email": "@example.com"}, ["email"]),
        ({"lead_id": "lead-1"}, ["lead_id"]),
    ):
        error = await rpc_error(
            stub.FindPerson(booking_pb2.FindPersonRequest(**subject), metadata=as_role(org_id, "OWNER")),
            Code.INVALID_ARGUMENT,
        )
        assert [v.field for v in error.violations] == fields, subject
    # Another org's lead is not found here; its email is an unknown person.
    await rpc_error(find(stub, org_id, lead_id=theirs.id), Code.NOT_FOUND)
    await rpc_error(find(stub, org_id, lead_id=str(uuid.uuid4())), Code.NOT_FOUND)
    stranger = await find(stub, org_id, "ADMIN", email="theirs@example.com")
    assert list(stranger.lead_ids) == [] and list(stranger.booking_ids) == []

    for role in ("DISPATCHER", "FINANCE", "VIEWER"):
        error = await rpc_error(find(stub, other_org, role, lead_id=theirs.id), Code.PERMISSION_DENIED)
        assert error.reason == "forbidden_role"
        await rpc_error(
            stub.CreateDeletionRequest(
                booking_pb2.CreateDeletionRequestRequest(lead_id=theirs.id), metadata=as_role(other_org, role)
            ),
            Code.PERMISSION_DENIED,
        )
        await rpc_error(
            stub.ListDeletionRequests(
                booking_pb2.ListDeletionRequestsRequest(), metadata=as_role(other_org, role)
            ),
            Code.PERMISSION_DENIED,
        )


async def test_a_deletion_request_is_recorded_once_per_person_and_marks_the_leads(stub, make_org, stack):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    owner, admin = as_role(org_id, "OWNER"), as_role(org_id, "ADMIN")
    lead = await make_lead(stub, org_id, "pat@example.com", name="Pat Example")
    twin = await make_lead(stub, org_id, "PAT@example.com", name="Pat E.")
    bystander = await make_lead(stub, org_id, "bystander@example.com")
    await make_booking(stub, org_id, lead_id=lead.id)

    def create(metadata: Any, **subject: str) -> Any:
        return stub.CreateDeletionRequest(
            booking_pb2.CreateDeletionRequestRequest(**subject), metadata=metadata
        )

    # Two at once for the same person: one row, one of them created it, both answer it.
    first, second = await asyncio.gather(
        create(owner, email="pat@example.com"), create(admin, email="Pat@Example.com")
    )
    assert sorted([first.created, second.created]) == [False, True]
    assert first.request == second.request
    request = first.request
    assert request.status == "pending" and request.subject == email_subject("pat@example.com")
    assert request.matched_leads == 2 and request.requested_by
    assert [(s.name, s.done, s.attempts) for s in request.steps] == [
        (name, False, 0) for name in ("media", "billing", "notify", "iam", "booking")
    ]
    assert not request.HasField("completed_at")
    again = await create(owner, email="pat@EXAMPLE.com")
    assert (again.created, again.request.id) == (False, request.id)
    # By lead id it is another subject, and its own request.
    by_lead = await create(owner, lead_id=lead.id)
    assert by_lead.created and by_lead.request.id != request.id
    assert by_lead.request.subject == f"lead:{lead.id}"

    rows = await sql(
        stack.admin_url,
        "SELECT id, deletion_requested_at IS NOT NULL FROM booking.leads WHERE org_id = %s",
        (uuid.UUID(org_id),),
    )
    assert {str(i): marked for i, marked in rows} == {lead.id: True, twin.id: True, bystander.id: False}
    [(count, person)] = await sql(
        stack.admin_url,
        "SELECT count(*), min(person::text) FROM booking.data_deletion_requests WHERE org_id = %s AND subject = %s",
        (uuid.UUID(org_id), request.subject),
    )
    assert count == 1 and "pat@example.com" in person

    # Audited with the subject, not the email.
    async def audited() -> list[Any]:
        found = await audit_records(stack, org_id, "booking.CreateDeletionRequest")
        return found if len(found) == 4 else []

    records = await eventually(audited, message="the deletion requests' audit records")
    assert {r.after["subject"] for r, _ in records} == {request.subject, by_lead.request.subject}
    assert not any(b"pat@example.com" in raw.lower() for _, raw in records)

    # Get and list, in this org only.
    got = await stub.GetDeletionRequest(
        booking_pb2.GetDeletionRequestRequest(request_id=request.id), metadata=owner
    )
    assert got.request == request
    listed = await stub.ListDeletionRequests(booking_pb2.ListDeletionRequestsRequest(), metadata=owner)
    assert [r.id for r in listed.requests] == [by_lead.request.id, request.id]
    one = await stub.ListDeletionRequests(booking_pb2.ListDeletionRequestsRequest(limit=1), metadata=owner)
    assert [r.id for r in one.requests] == [by_lead.request.id]
    done = await stub.ListDeletionRequests(
        booking_pb2.ListDeletionRequestsRequest(status="completed"), metadata=owner
    )
    assert list(done.requests) == []
    theirs = as_role(other_org, "OWNER")
    await rpc_error(
        stub.GetDeletionRequest(
            booking_pb2.GetDeletionRequestRequest(request_id=request.id), metadata=theirs
        ),
        Code.NOT_FOUND,
    )
    assert (
        list(
            (
                await stub.ListDeletionRequests(booking_pb2.ListDeletionRequestsRequest(), metadata=theirs)
            ).requests
        )
        == []
    )
    await rpc_error(create(theirs, lead_id=lead.id), Code.NOT_FOUND)

    for call, field in (
        (
            stub.GetDeletionRequest(booking_pb2.GetDeletionRequestRequest(request_id="abc"), metadata=owner),
            "request_id",
        ),
        (
            stub.ListDeletionRequests(booking_pb2.ListDeletionRequestsRequest(status="open"), metadata=owner),
            "status",
        ),
        (
            stub.ListDeletionRequests(booking_pb2.ListDeletionRequestsRequest(limit=201), metadata=owner),
            "limit",
        ),
        (create(owner), "lead_id"),
        (create(owner, email="nope"), "email"),
    ):
        error = await rpc_error(call, Code.INVALID_ARGUMENT)
        assert error.violations[0].field == field


async def test_the_driver_sees_new_bookings_and_completion_forgets_the_emails(stub, make_org, stack):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    owner, jobs = as_role(org_id, "OWNER"), as_service(org_id, "jobs")
    lead = await make_lead(stub, org_id, "robin@example.com", name="Robin Bird")
    early = await make_booking(stub, org_id, lead_id=lead.id)
    created = await stub.CreateDeletionRequest(
        booking_pb2.CreateDeletionRequestRequest(lead_id=lead.id), metadata=owner
    )
    request_id = created.request.id
    # Booked again after the request: the driver must erase this one too.
    late = await make_booking(stub, org_id, client_email="Robin@Example.com", client_name="Robin B", hours=72)

    pending = await stub.ListPendingDeletions(booking_pb2.ListPendingDeletionsRequest(), metadata=jobs)
    [deletion] = pending.deletions
    assert deletion.request.id == request_id
    assert list(deletion.person.lead_ids) == [lead.id]
    assert sorted(deletion.person.booking_ids) == sorted([early.id, late.id])
    assert list(deletion.person.emails) == ["robin@example.com"]
    assert {"Robin Bird", "Robin B", "+17805550101"} <= set(deletion.person.pii_values)
    # Another org's driver sees nothing of it; people may not drive it at all.
    other = await stub.ListPendingDeletions(
        booking_pb2.ListPendingDeletionsRequest(), metadata=as_service(other_org)
    )
    assert list(other.deletions) == []

    def record(step: str, done: bool, metadata: Any = jobs, **fields: Any) -> Any:
        return stub.RecordDeletionStep(
            booking_pb2.RecordDeletionStepRequest(request_id=request_id, step=step, done=done, **fields),
            metadata=metadata,
        )

    for call in (
        stub.ListPendingDeletions(booking_pb2.ListPendingDeletionsRequest(), metadata=owner),
        record("media", True, metadata=owner),
    ):
        assert (await rpc_error(call, Code.PERMISSION_DENIED)).reason == "service_only"
    for call, field in (
        (record("photos", True), "step"),
        (record("billing", True, invoice_ids=["inv-1"]), "invoice_ids"),
        (
            stub.ListPendingDeletions(booking_pb2.ListPendingDeletionsRequest(limit=500), metadata=jobs),
            "limit",
        ),
        (
            stub.RecordDeletionStep(
                booking_pb2.RecordDeletionStepRequest(request_id="x", step="media", done=True), metadata=jobs
            ),
            "request_id",
        ),
    ):
        assert (await rpc_error(call, Code.INVALID_ARGUMENT)).violations[0].field == field
    await rpc_error(record("media", True, metadata=as_service(other_org)), Code.NOT_FOUND)

    invoice = str(uuid.uuid4())
    failed = (await record("notify", False, error="notify unavailable " + "x" * 600)).request
    notify = {s.name: s for s in failed.steps}["notify"]
    assert (notify.done, notify.attempts, len(notify.last_error)) == (False, 1, 500)
    assert notify.last_error.startswith("notify unavailable") and notify.HasField("last_attempt_at")
    billed = (await record("billing", True, invoice_ids=[invoice])).request
    billing = {s.name: s for s in billed.steps}["billing"]
    assert (billing.done, billing.attempts, billing.last_error) == (True, 1, "")
    assert billing.HasField("done_at") and billed.status == "pending"
    # A done step stays done, and a repeat changes nothing.
    assert (await record("billing", False, error="late")).request == billed
    pending = await stub.ListPendingDeletions(booking_pb2.ListPendingDeletionsRequest(), metadata=jobs)
    assert list(pending.deletions[0].person.invoice_ids) == [invoice]

    for step in ("media", "notify", "iam"):
        assert (await record(step, True)).request.status == "pending"
    completed = (await record("booking", True)).request
    assert completed.status == "completed" and completed.HasField("completed_at")
    assert {s.name: (s.done, s.attempts) for s in completed.steps} == {
        "media": (True, 1),
        "billing": (True, 1),
        "notify": (True, 2),
        "iam": (True, 1),
        "booking": (True, 1),
    }
    assert (await record("booking", True)).request == completed
    assert (
        list(
            (
                await stub.ListPendingDeletions(booking_pb2.ListPendingDeletionsRequest(), metadata=jobs)
            ).deletions
        )
        == []
    )
    listed = await stub.ListDeletionRequests(
        booking_pb2.ListDeletionRequestsRequest(status="completed"), metadata=owner
    )
    assert [r.id for r in listed.requests] == [request_id]

    # Only ids stay once the request is completed.
    [(person,)] = await sql(
        stack.admin_url,
        "SELECT person FROM booking.data_deletion_requests WHERE id = %s",
        (uuid.UUID(request_id),),
    )
    assert person["emails"] == [] and person["pii_values"] == []
    assert person["lead_ids"] == [lead.id] and person["invoice_ids"] == [invoice]
    assert sorted(person["booking_ids"]) == sorted([early.id, late.id])
    # The lead, named again, can have a new request now that the old one is done.
    renewed = await stub.CreateDeletionRequest(
        booking_pb2.CreateDeletionRequestRequest(lead_id=lead.id), metadata=owner
    )
    assert renewed.created and renewed.request.id != request_id
