"""Booking's PrivacyService (seed 002's data export/delete playbook) through its gRPC API: the export
holds the person's leads, bookings and NPS answers and no one else's; the erasure (booking's step,
driven by the jobs service) anonymises them, keeps every total and NPS score, and a second run
changes nothing. Proven with SQL in the booking schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cws.booking.v1 import booking_pb2_grpc
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc
from google.protobuf.json_format import MessageToDict

from libs.common.privacy import ERASED
from services.booking.tests.test_deletion_requests import (
    completed_with_nps,
    find,
    make_booking,
    make_lead,
)
from tools.testkit import as_role, as_service, eventually, rpc_error, signing_channel, sql

Code = grpc.StatusCode


@pytest.fixture
async def stub(booking: Any) -> AsyncIterator[booking_pb2_grpc.BookingServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield booking_pb2_grpc.BookingServiceStub(channel)


@pytest.fixture
async def privacy(booking: Any) -> AsyncIterator[privacy_pb2_grpc.PrivacyServiceStub]:
    async with signing_channel(booking.target) as channel:
        yield privacy_pb2_grpc.PrivacyServiceStub(channel)


async def a_person(stub: Any, org_id: str) -> dict[str, Any]:
    """A person with a lead, a booking from it (completed, with an NPS answer naming them) and a
    booking made under their email; and a bystander with a booking of their own."""
    lead = await make_lead(
        stub, org_id, "Kim.Lee@example.com", name="Kim Lee", phone="780-555-0142", notes="Call Kim after 5"
    )
    answered = await completed_with_nps(
        stub,
        org_id,
        9,
        "Kim Lee here: great job",
        lead_id=lead.id,
        address="7 Birch Ave",
        notes="Kim Lee's dog",
    )
    direct = await make_booking(
        stub, org_id, client_email="kim.lee@EXAMPLE.com", client_name="Kim L", address="7 Birch Ave", hours=96
    )
    bystander = await completed_with_nps(
        stub, org_id, 3, "Alex says meh", client_email="alex@example.com", client_name="Alex Other", hours=120
    )
    return {"lead": lead.id, "answered": answered, "direct": direct.id, "bystander": bystander}


async def all_published(stack: Any, org_id: str) -> bool:
    [(unpublished,)] = await sql(
        stack.admin_url,
        "SELECT count(*) FROM booking.event_outbox WHERE org_id = %s AND published_at IS NULL",
        (uuid.UUID(org_id),),
    )
    return unpublished == 0


async def test_export_holds_the_persons_rows_only(stub, privacy, make_org):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    made = await a_person(stub, org_id)
    person = await find(stub, org_id, lead_id=made["lead"])

    exported = await privacy.ExportPerson(
        privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(org_id, "ADMIN")
    )
    sections = MessageToDict(exported.sections)
    assert set(sections) == {"leads", "bookings", "nps"}
    [lead] = sections["leads"]
    assert lead["id"] == made["lead"] and lead["name"] == "Kim Lee" and lead["email"] == "kim.lee@example.com"
    assert lead["phone"] == "+17805550142" and lead["notes"] == "Call Kim after 5"
    assert lead["total_before_tax_cents"] > 0 and lead["currency"] == "CAD"
    assert lead["created_at"].endswith("+00:00")  # RFC 3339 text
    assert sorted(b["id"] for b in sections["bookings"]) == sorted([made["answered"], made["direct"]])
    answered = next(b for b in sections["bookings"] if b["id"] == made["answered"])
    assert answered["lead_id"] == made["lead"] and answered["address"] == "7 Birch Ave"
    assert answered["status"] == "completed" and "notes" not in answered
    assert sections["nps"] == [
        {
            "booking_id": made["answered"],
            "score": 9,
            "comment": "Kim Lee here: great job",
            "created_at": sections["nps"][0]["created_at"],
        }
    ]
    assert "Alex" not in str(sections) and "token" not in str(sections)

    # Managers only; another org's export of the same person finds nothing there.
    for role in ("DISPATCHER", "FINANCE", "VIEWER"):
        await rpc_error(
            privacy.ExportPerson(
                privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(org_id, role)
            ),
            Code.PERMISSION_DENIED,
        )
    theirs = await privacy.ExportPerson(
        privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(other_org, "OWNER")
    )
    assert MessageToDict(theirs.sections) == {"leads": [], "bookings": [], "nps": []}
    # An unknown person: an empty bundle, not an error.
    nobody = privacy_pb2.Person(emails=["nobody@example.com"])
    empty = await privacy.ExportPerson(
        privacy_pb2.ExportPersonRequest(person=nobody), metadata=as_role(org_id, "OWNER")
    )
    assert MessageToDict(empty.sections) == {"leads": [], "bookings": [], "nps": []}


async def test_erasure_anonymises_keeps_totals_and_is_idempotent(stub, privacy, make_org, stack):
    org_id, other_org = (await make_org()).org_id, (await make_org()).org_id
    made = await a_person(stub, org_id)
    person = await find(stub, org_id, lead_id=made["lead"])
    ours = (made["answered"], made["direct"])
    org = uuid.UUID(org_id)

    async def booking_rows() -> dict[str, tuple[Any, ...]]:
        rows = await sql(
            stack.admin_url,
            "SELECT id, lead_id, client_name, client_email, client_phone, address, postal_code, notes, "
            "total_before_tax_cents, currency, status, starts_at FROM booking.bookings WHERE org_id = %s",
            (org,),
        )
        return {str(r[0]): r[1:] for r in rows}

    before = await booking_rows()
    [(lead_total,)] = await sql(
        stack.admin_url,
        "SELECT total_before_tax_cents FROM booking.leads WHERE id = %s",
        (uuid.UUID(made["lead"]),),
    )

    def erase(metadata: Any) -> Any:
        return privacy.ErasePerson(
            privacy_pb2.ErasePersonRequest(request_id=str(uuid.uuid4()), person=person), metadata=metadata
        )

    for role in ("OWNER", "ADMIN"):
        assert (
            await rpc_error(erase(as_role(org_id, role)), Code.PERMISSION_DENIED)
        ).reason == "service_only"
    # In another org the same person matches nothing.
    assert (await erase(as_service(other_org))).changed == 0

    # The lead's and bookings' events name the person: forgotten once the relay has published them.
    await eventually(lambda: all_published(stack, org_id), message="the org's events published")
    first = await erase(as_service(org_id))
    # 2 bookings, 1 NPS comment, 1 survey token, 1 lead, and the published events naming them.
    assert first.pending_reason == "" and first.changed >= 5
    second = await erase(as_service(org_id))
    assert (second.changed, second.pending_reason) == (0, "")

    after = await booking_rows()
    for booking_id in ours:
        lead_id, name, email, phone, address, postal, notes, total, currency, status, starts = after[
            booking_id
        ]
        assert (lead_id, name, email, phone, address, postal) == (None, ERASED, "", "", "", "")
        assert "Kim" not in notes
        # What accounting and the schedule need stays as it was.
        assert (total, currency, status, starts) == before[booking_id][7:]
    assert after[made["bystander"]] == before[made["bystander"]]
    [(name, email, phone, postal, notes, total, anonymized, requested)] = await sql(
        stack.admin_url,
        "SELECT name, email, phone, postal_code, notes, total_before_tax_cents, anonymized_at, deletion_requested_at "
        "FROM booking.leads WHERE id = %s",
        (uuid.UUID(made["lead"]),),
    )
    assert (name, email, phone, postal, notes, total) == (ERASED, "", "", "", "", lead_total)
    assert anonymized is not None and requested is None
    nps = await sql(
        stack.admin_url,
        "SELECT booking_id, score, comment FROM booking.nps_responses WHERE org_id = %s ORDER BY score",
        (org,),
    )
    assert [(str(b), s, c) for b, s, c in nps] == [
        (made["bystander"], 3, "Alex says meh"),
        (made["answered"], 9, ""),
    ]
    surveys = await sql(
        stack.admin_url, "SELECT booking_id FROM booking.nps_surveys WHERE org_id = %s", (org,)
    )
    assert [str(b) for (b,) in surveys] == [made["bystander"]]
    # No row of the schema, and no event left in the outbox, holds the person's email, name or phone.
    for needle in ("kim.lee@example.com", "Kim Lee", "+17805550142"):
        [(hits,)] = await sql(
            stack.admin_url,
            "SELECT (SELECT count(*) FROM booking.leads l WHERE l.org_id = %(org)s AND l::text ILIKE %(n)s)"
            " + (SELECT count(*) FROM booking.bookings b WHERE b.org_id = %(org)s AND b::text ILIKE %(n)s)"
            " + (SELECT count(*) FROM booking.nps_responses r WHERE r.org_id = %(org)s AND r::text ILIKE %(n)s)"
            " + (SELECT count(*) FROM booking.event_outbox o WHERE o.org_id = %(org)s"
            "    AND position(convert_to(%(raw)s, 'UTF8') IN o.payload) > 0)",
            {"org": org, "n": f"%{needle}%", "raw": needle},  # type: ignore[arg-type]
        )
        assert hits == 0, needle
    # The export now shows the anonymised rows.
    exported = MessageToDict(
        (
            await privacy.ExportPerson(
                privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(org_id, "OWNER")
            )
        ).sections
    )
    assert [lead["name"] for lead in exported["leads"]] == [ERASED]
    assert {b["client_email"] for b in exported["bookings"]} == {""}
