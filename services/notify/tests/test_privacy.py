"""notify's PrivacyService through its gRPC API (the session process, SMTP to the session's sink):
the person's email events for an export, and notify's erasure step: their unsent emails skipped and
never sent afterwards, their sent ones without body or address, their email events anonymised, the
digests without their address, free text scrubbed, and a second run changing nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest
from cws.common.v1 import privacy_pb2, privacy_pb2_grpc
from google.protobuf.json_format import MessageToDict

from libs.common.privacy import ERASED
from services.notify.adapters.base import Outbound
from services.notify.delivery.outcomes import WRITE_OUTCOMES, Job, Outcome
from services.notify.tests.own_notify import email_payload, enqueue, mailbox, outbox_row, wait_row
from tools.testkit import as_role, as_service, eventually, rpc_error, signing_channel, sql

Code = grpc.StatusCode
NAME = "Jordan Quill"


@pytest.fixture
async def privacy(notify: Any) -> AsyncIterator[privacy_pb2_grpc.PrivacyServiceStub]:
    async with signing_channel(notify.target) as channel:
        yield privacy_pb2_grpc.PrivacyServiceStub(channel)


def new_org() -> str:
    return str(uuid.uuid4())


def person(email: str, booking_ids: list[str] = [], invoice_ids: list[str] = []) -> privacy_pb2.Person:  # noqa: B006
    return privacy_pb2.Person(
        emails=[email.lower()], booking_ids=booking_ids, invoice_ids=invoice_ids, pii_values=[NAME]
    )


async def sent_email(stack: Any, stub: Any, org: str, to: str, key: str, **extra: Any) -> str:
    enqueued = await enqueue(stub, org, "email", email_payload(to, **extra), dedupe_key=key)
    await wait_row(stack.admin_url, enqueued.event.id, lambda r: r["status"] == "sent", timeout=15)
    await eventually(
        lambda: sql(
            stack.admin_url, "SELECT 1 FROM notify.email_events WHERE outbox_id = %s", (enqueued.event.id,)
        ),
        message="the email event",
    )
    return enqueued.event.id


async def held_row(
    stack: Any, org: str, to: str, *, status: str = "pending", booking_id: str | None = None
) -> str:
    """An email not sent yet: pending and due in an hour, or `sending` as a worker's claim leaves it
    (attempts 1, its lease running), written as the superuser."""
    outbox_id = str(uuid.uuid4())
    await sql(
        stack.admin_url,
        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status, attempts,"
        " booking_id, next_attempt_at) VALUES (%s, %s, 'email', %s, %s, %s, %s, %s, %s,"
        " now() + interval '1 hour')",
        (
            outbox_id,
            org,
            f"email:booking_reminder:booking:{booking_id or uuid.uuid4()}:{outbox_id}",
            json.dumps(email_payload(to, text=f"Hello {NAME}, see you soon.", booking_id=booking_id)),
            to,
            status,
            1 if status == "sending" else 0,
            booking_id,
        ),
    )
    return outbox_id


async def mentions(stack: Any, org: str, *values: str) -> list[tuple[Any, ...]]:
    """Every notify row of the org whose text holds one of the values (the superuser reads all)."""
    found: list[tuple[Any, ...]] = []
    for value in values:
        needle = value.lower()
        found += await sql(
            stack.admin_url,
            "SELECT 'outbox', id::text FROM notify.outbox_events WHERE org_id = %(org)s AND strpos(lower("
            "payload::text || target || dedupe_key || coalesce(last_error, '')), %(v)s) > 0"
            " UNION ALL SELECT 'email', id::text FROM notify.email_events WHERE org_id = %(org)s AND"
            " strpos(lower(recipient || subject || coalesce(error, '')), %(v)s) > 0"
            " UNION ALL SELECT 'export', id::text FROM notify.export_events WHERE org_id = %(org)s AND"
            " strpos(lower(payload::text || target || coalesce(last_error, '')), %(v)s) > 0"
            " UNION ALL SELECT 'digest', digest_key FROM notify.notifications_digest_settings"
            " WHERE org_id = %(org)s AND strpos(lower(recipients::text), %(v)s) > 0",
            {"org": org, "v": needle},  # type: ignore[arg-type]
        )
    return found


async def erase(privacy: Any, org: str, who: privacy_pb2.Person) -> privacy_pb2.ErasePersonResponse:
    request = privacy_pb2.ErasePersonRequest(request_id=str(uuid.uuid4()), person=who)
    answer: privacy_pb2.ErasePersonResponse = await privacy.ErasePerson(request, metadata=as_service(org))
    return answer


# --- erasure -----------------------------------------------------------------------------------------


async def test_erasure_skips_unsent_emails_anonymises_sent_ones_and_is_idempotent(
    stack, stub, privacy, smtp_sink
):
    org, to, booking_id, invoice_id = new_org(), mailbox(), str(uuid.uuid4()), str(uuid.uuid4())
    bystander = mailbox()
    sent = await sent_email(
        stack, stub, org, to, f"email:booking_confirmed:booking:{booking_id}", booking_id=booking_id
    )
    # An invoice email to an address booking did not know, found by its invoice.
    invoiced = await sent_email(
        stack, stub, org, "billing-only@example.com", f"invoice:{invoice_id}:dunning:x"
    )
    worker = mailbox()
    retake = await sent_email(stack, stub, org, worker, f"email:photo_retake:booking:{booking_id}:photo:1:2")
    pending = await held_row(stack, org, to.upper())
    someone_elses = await held_row(stack, org, bystander)
    # A digest that lists them by name, to a manager; the digests' recipients; a stored export.
    await sql(
        stack.admin_url,
        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status)"
        " VALUES (gen_random_uuid(), %s, 'email', %s, %s, 'boss@example.com', 'sent')",
        (
            org,
            f"digest:daily:2026-12-01:{to}",
            json.dumps(email_payload("boss@example.com", text=f"New lead {NAME}")),
        ),
    )
    await sql(
        stack.admin_url,
        "INSERT INTO notify.notifications_digest_settings (org_id, digest_key, schedule, recipients)"
        " VALUES (%s, 'daily', 'daily', %s)",
        (org, json.dumps([to, bystander])),
    )
    await sql(
        stack.admin_url,
        "INSERT INTO notify.export_events (id, org_id, mode, dedupe_key, payload, attempts)"
        " VALUES (gen_random_uuid(), %s, 'accounting_csv', 'export:accounting_csv:2026-11', %s, 0)",
        (org, json.dumps({"csv": f"number,client\nINV-1,{NAME}\n"})),
    )
    assert await mentions(stack, org, to, NAME)

    first = await erase(privacy, org, person(to, [booking_id], [invoice_id]))
    assert first.changed > 0 and first.pending_reason == ""
    assert await mentions(stack, org, to, NAME, "billing-only@example.com") == []

    row = await outbox_row(stack.admin_url, pending)
    assert (row["status"], row["payload"], row["target"]) == ("skipped", {}, "")
    row = await outbox_row(stack.admin_url, sent)
    assert (row["status"], row["payload"], row["target"]) == ("sent", {}, "")
    assert (await outbox_row(stack.admin_url, invoiced))["target"] == ""
    assert (await outbox_row(stack.admin_url, someone_elses))["status"] == "pending"
    events = await sql(
        stack.admin_url,
        "SELECT recipient, subject, status, email_type FROM notify.email_events WHERE outbox_id IN (%s, %s, %s)",
        (sent, invoiced, retake),
    )
    assert sorted(events) == [(ERASED, ERASED, "sent", "test")] * 3
    [(recipients,)] = await sql(
        stack.admin_url,
        "SELECT recipients FROM notify.notifications_digest_settings WHERE org_id = %s",
        (org,),
    )
    assert recipients == [bystander]

    # Due now, the skipped email is still never sent: mail to someone else goes, theirs does not.
    await sql(
        stack.admin_url, "UPDATE notify.outbox_events SET next_attempt_at = now() WHERE org_id = %s", (org,)
    )
    await smtp_sink.delivered(bystander)
    assert len(smtp_sink.to(to)) == 1  # the confirmation sent before the erasure
    assert (await outbox_row(stack.admin_url, pending))["status"] == "skipped"

    again = await erase(privacy, org, person(to, [booking_id], [invoice_id]))
    assert (again.changed, again.pending_reason) == (0, "")


async def test_a_send_in_flight_when_erased_does_not_turn_its_row_back(stack, privacy):
    """A row a worker holds (sending) is skipped; the worker's outcome, written as delivery writes it
    (only while the row is still sending under its claim), then changes nothing."""
    org, to = new_org(), mailbox()
    held = await held_row(stack, org, to, status="sending")
    await erase(privacy, org, person(to))
    job = Job(Outbound(uuid.UUID(held), uuid.UUID(org), "email", to, email_payload(to)), attempts=1)
    statement = str(WRITE_OUTCOMES).replace(":outcomes", "%(outcomes)s")
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        written = conn.execute(
            statement, {"outcomes": json.dumps([Outcome(job, "sent").as_record()])}
        ).fetchall()
    assert written == []
    row = await outbox_row(stack.admin_url, held)
    assert (row["status"], row["payload"], row["sent_at"]) == ("skipped", {}, None)


async def test_erasure_in_another_org_changes_nothing_here(stack, stub, privacy, smtp_sink):
    org, to, booking_id = new_org(), mailbox(), str(uuid.uuid4())
    await sent_email(
        stack, stub, org, to, f"email:booking_confirmed:booking:{booking_id}", booking_id=booking_id
    )
    pending = await held_row(stack, org, to, booking_id=booking_id)
    other = await erase(privacy, new_org(), person(to, [booking_id]))
    assert other.changed == 0
    assert (await outbox_row(stack.admin_url, pending))["status"] == "pending"
    assert len(await mentions(stack, org, to)) == 3  # two outbox rows and the email event


async def test_erasure_is_for_suite_services_only_and_checks_its_input(privacy):
    org = new_org()
    request = privacy_pb2.ErasePersonRequest(request_id="r", person=person(mailbox()))
    for role in ("OWNER", "ADMIN"):
        await rpc_error(privacy.ErasePerson(request, metadata=as_role(org, role)), Code.PERMISSION_DENIED)
    error = await rpc_error(
        privacy.ErasePerson(
            privacy_pb2.ErasePersonRequest(person=privacy_pb2.Person(booking_ids=["nope"])),
            metadata=as_service(org),
        ),
        Code.INVALID_ARGUMENT,
    )
    assert error.violations[0].field == "person.booking_ids"
    await rpc_error(
        privacy.ErasePerson(privacy_pb2.ErasePersonRequest(request_id="r"), metadata=as_service(org)),
        Code.INVALID_ARGUMENT,
    )
    # Nobody to erase (an unknown person): done, nothing changed.
    nobody = await privacy.ErasePerson(
        privacy_pb2.ErasePersonRequest(request_id="r", person=privacy_pb2.Person()), metadata=as_service(org)
    )
    assert (nobody.changed, nobody.pending_reason) == (0, "")


# --- export ------------------------------------------------------------------------------------------


async def test_export_lists_the_persons_emails_metadata_only(stack, stub, privacy, smtp_sink):
    org, to, booking_id = new_org(), mailbox(), str(uuid.uuid4())
    by_address = await sent_email(stack, stub, org, to, f"test:{uuid.uuid4()}")
    by_booking = await sent_email(
        stack,
        stub,
        org,
        "someone@example.com",
        f"email:booking_confirmed:booking:{booking_id}",
        booking_id=booking_id,
    )
    await sent_email(stack, stub, org, mailbox(), f"test:{uuid.uuid4()}")
    # A worker's retake email about their booking is the worker's mail, not theirs.
    await sent_email(stack, stub, org, mailbox(), f"email:photo_retake:booking:{booking_id}:photo:1:2")
    request = privacy_pb2.ExportPersonRequest(person=person(to.upper(), [booking_id]))
    answer = await privacy.ExportPerson(request, metadata=as_role(org, "ADMIN"))
    emails = MessageToDict(answer.sections)["emails"]
    assert len(emails) == 2
    [(first_event,)] = await sql(
        stack.admin_url, "SELECT id::text FROM notify.email_events WHERE outbox_id = %s", (by_address,)
    )
    record = next(e for e in emails if e["id"] == first_event)
    assert record == {
        "id": first_event,
        "email_type": "test",
        "subject": f"Hello {to}",
        "status": "sent",
        "recipient": to,
        "booking_id": None,
        "created_at": record["created_at"],
    }
    assert next(e for e in emails if e["recipient"] == "someone@example.com")["booking_id"] == booking_id
    assert by_booking
    assert all("text" not in e and "error" not in e for e in emails)

    # Another org's person, an unknown person: empty, not an error.
    elsewhere = await privacy.ExportPerson(request, metadata=as_role(new_org(), "OWNER"))
    assert MessageToDict(elsewhere.sections) == {"emails": []}
    unknown = privacy_pb2.ExportPersonRequest(person=privacy_pb2.Person(emails=["nobody@example.com"]))
    assert MessageToDict((await privacy.ExportPerson(unknown, metadata=as_role(org, "OWNER"))).sections) == {
        "emails": []
    }


async def test_export_roles_and_bad_input(privacy):
    org = new_org()
    request = privacy_pb2.ExportPersonRequest(person=person(mailbox()))
    for role in ("OWNER", "ADMIN"):
        await privacy.ExportPerson(request, metadata=as_role(org, role))
    for role in ("DISPATCHER", "FINANCE", "VIEWER"):
        await rpc_error(privacy.ExportPerson(request, metadata=as_role(org, role)), Code.PERMISSION_DENIED)
    error = await rpc_error(
        privacy.ExportPerson(
            privacy_pb2.ExportPersonRequest(person=privacy_pb2.Person(invoice_ids=["12"])),
            metadata=as_role(org, "OWNER"),
        ),
        Code.INVALID_ARGUMENT,
    )
    assert error.violations[0].field == "person.invoice_ids"
    await rpc_error(
        privacy.ExportPerson(privacy_pb2.ExportPersonRequest(), metadata=as_role(org, "OWNER")),
        Code.INVALID_ARGUMENT,
    )
