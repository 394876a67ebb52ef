"""notify's ViewsService through its gRPC API (the session process, SMTP to the session's sink): a
booking's and an invoice's emails and outbox rows, found by the ids the enqueue read from the dedupe
key; the email and webhook figures of a period; roles, bad input and other orgs' ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cws.common.v1 import views_pb2, views_pb2_grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common.privacy import PII_KEYS
from services.notify.tests.own_notify import email_payload, enqueue, mailbox, wait_row
from tools.testkit import as_role, rpc_error, signing_channel, sql

Code = grpc.StatusCode


@pytest.fixture
async def views(notify: Any) -> AsyncIterator[views_pb2_grpc.ViewsServiceStub]:
    async with signing_channel(notify.target) as channel:
        yield views_pb2_grpc.ViewsServiceStub(channel)


def new_org() -> str:
    return str(uuid.uuid4())


async def sent_email(stack: Any, stub: Any, org: str, to: str, key: str, **extra: Any) -> str:
    """An email enqueued as the org's owner, once delivery has recorded its email event."""
    enqueued = await enqueue(stub, org, "email", email_payload(to, **extra), dedupe_key=key)
    outbox_id = enqueued.event.id
    await wait_row(stack.admin_url, outbox_id, lambda r: r["status"] == "sent", timeout=15)
    return outbox_id


async def outbox_rows(stack: Any, org: str, count: int, *, booking_id: str, kind: str = "webhook") -> None:
    """`count` outbox rows of the booking, as the superuser writes them (quicker than enqueueing)."""
    await sql(
        stack.admin_url,
        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status, booking_id,"
        " created_at) SELECT gen_random_uuid(), %s, %s, 'webhook:test:booking:' || %s || ':' || n, %s,"
        " 'hooks.example.com', 'sent', %s, now() - make_interval(mins => n) FROM generate_series(1, %s) AS n",
        (org, kind, booking_id, json.dumps({"url": "https://hooks.example.com/x"}), booking_id, count),
    )


def timeline(booking_id: str = "", invoice_id: str = "") -> views_pb2.GetTimelineRequest:
    return views_pb2.GetTimelineRequest(booking_id=booking_id, invoice_id=invoice_id)


def details(entry: views_pb2.TimelineEntry) -> dict[str, Any]:
    return MessageToDict(entry.details)


# --- timelines ---------------------------------------------------------------------------------------


async def test_a_bookings_emails_and_outbox_rows_newest_first(stack, stub, views, smtp_sink):
    org, to, booking_id = new_org(), mailbox(), str(uuid.uuid4())
    confirmed = await sent_email(
        stack, stub, org, to, f"email:booking_confirmed:booking:{booking_id}", booking_id=booking_id
    )
    reminded = await sent_email(
        stack,
        stub,
        org,
        to,
        f"email:booking_reminder:booking:{booking_id}:2026-12-02T09:00:00+00:00",
        booking_id=booking_id,
    )
    # A photo retake's payload names no booking: its email is the booking's through its outbox row.
    retake = await sent_email(
        stack, stub, org, mailbox(), f"email:photo_retake:booking:{booking_id}:photo:{uuid.uuid4()}:2026"
    )
    # Another booking's email, and one whose key only mentions the id somewhere else, are not its rows.
    other = str(uuid.uuid4())
    await sent_email(
        stack, stub, org, mailbox(), f"email:booking_confirmed:booking:{other}", booking_id=other
    )
    await enqueue(stub, org, "email", email_payload(mailbox()), dedupe_key=f"email:custom:{booking_id}")
    [(stored_booking,)] = await sql(
        stack.admin_url, "SELECT booking_id FROM notify.outbox_events WHERE id = %s", (confirmed,)
    )
    assert str(stored_booking) == booking_id

    found = await views.GetTimeline(timeline(booking_id), metadata=as_role(org, "VIEWER"))
    assert not found.truncated
    by_source: dict[str, list[views_pb2.TimelineEntry]] = {}
    for entry in found.entries:
        by_source.setdefault(entry.source, []).append(entry)
    assert {e.id for e in by_source["outbox"]} == {confirmed, reminded, retake}
    assert len(by_source["email"]) == 3
    assert [e.ToDatetime() for e in (x.at for x in found.entries)] == sorted(
        (x.at.ToDatetime() for x in found.entries), reverse=True
    )
    email = next(e for e in by_source["email"] if details(e)["recipient"] == to)
    assert email.kind == "email.sent" and email.actor == "service:notify"
    assert details(email) == {"recipient": to, "subject": f"Hello {to}", "email_type": "test"}
    row = next(e for e in by_source["outbox"] if e.id == confirmed)
    assert row.kind == "outbox.sent"
    assert details(row)["target"] == to and details(row)["kind"] == "email"
    assert details(row)["dedupe_key"] == f"email:booking_confirmed:booking:{booking_id}"
    assert "last_error" not in details(row)
    # Personal data only under PII keys: nothing else in an entry names the recipient.
    for entry in found.entries:
        assert to not in entry.summary + entry.kind + entry.actor
        assert all(to not in json.dumps(v) for k, v in details(entry).items() if k not in PII_KEYS)


async def test_an_invoices_outbox_rows_and_their_emails(stack, stub, views, smtp_sink):
    org, to, invoice_id = new_org(), mailbox(), str(uuid.uuid4())
    sent = await sent_email(stack, stub, org, to, f"email:invoice_sent:invoice:{invoice_id}:0badc0ffee")
    dunning = await sent_email(stack, stub, org, to, f"invoice:{invoice_id}:dunning:payment_failed")
    await sent_email(stack, stub, org, to, f"email:invoice_sent:invoice:{uuid.uuid4()}:0badc0ffee")
    found = await views.GetTimeline(timeline(invoice_id=invoice_id), metadata=as_role(org, "VIEWER"))
    outbox = [e for e in found.entries if e.source == "outbox"]
    emails = [e for e in found.entries if e.source == "email"]
    assert {e.id for e in outbox} == {sent, dunning}
    assert len(emails) == 2 and {e.kind for e in emails} == {"email.sent"}
    # Nothing of it is a booking's.
    nothing = await views.GetTimeline(timeline(booking_id=invoice_id), metadata=as_role(org, "VIEWER"))
    assert list(nothing.entries) == []


async def test_each_source_is_capped_at_its_newest_rows(stack, views):
    org, booking_id = new_org(), str(uuid.uuid4())
    await outbox_rows(stack, org, 101, booking_id=booking_id)
    found = await views.GetTimeline(timeline(booking_id), metadata=as_role(org, "VIEWER"))
    assert found.truncated and len(found.entries) == 100
    # The oldest (created 101 minutes ago) is the one left out.
    assert all(not details(e)["dedupe_key"].endswith(":101") for e in found.entries)
    exactly = str(uuid.uuid4())
    await outbox_rows(stack, org, 100, booking_id=exactly)
    capped = await views.GetTimeline(timeline(exactly), metadata=as_role(org, "VIEWER"))
    assert not capped.truncated and len(capped.entries) == 100


async def test_another_orgs_booking_and_invoice_show_nothing(stack, stub, views, smtp_sink):
    org, booking_id, invoice_id = new_org(), str(uuid.uuid4()), str(uuid.uuid4())
    await sent_email(
        stack, stub, org, mailbox(), f"email:booking_confirmed:booking:{booking_id}", booking_id=booking_id
    )
    await sent_email(stack, stub, org, mailbox(), f"email:invoice_sent:invoice:{invoice_id}:ab")
    stranger = new_org()
    for request in (timeline(booking_id), timeline(invoice_id=invoice_id)):
        assert list((await views.GetTimeline(request, metadata=as_role(stranger, "OWNER"))).entries) == []
        assert (await views.GetTimeline(request, metadata=as_role(org, "OWNER"))).entries


async def test_timeline_roles_and_bad_ids(views):
    org, booking_id = new_org(), str(uuid.uuid4())
    for role in ("OWNER", "ADMIN", "DISPATCHER", "FINANCE", "VIEWER"):
        await views.GetTimeline(timeline(booking_id), metadata=as_role(org, role))
    for role in ("WORKER", "CLIENT"):
        await rpc_error(
            views.GetTimeline(timeline(booking_id), metadata=as_role(org, role)), Code.PERMISSION_DENIED
        )
    error = await rpc_error(
        views.GetTimeline(timeline("not-a-uuid"), metadata=as_role(org, "VIEWER")), Code.INVALID_ARGUMENT
    )
    assert error.violations[0].field == "booking_id"
    error = await rpc_error(
        views.GetTimeline(timeline(invoice_id="12"), metadata=as_role(org, "VIEWER")), Code.INVALID_ARGUMENT
    )
    assert error.violations[0].field == "invoice_id"
    for both_or_none in (timeline(), timeline(booking_id, str(uuid.uuid4()))):
        await rpc_error(
            views.GetTimeline(both_or_none, metadata=as_role(org, "VIEWER")), Code.INVALID_ARGUMENT
        )


# --- metrics -----------------------------------------------------------------------------------------


def period(start: datetime, end: datetime) -> views_pb2.GetMetricsRequest:
    first, last = Timestamp(), Timestamp()
    first.FromDatetime(start)
    last.FromDatetime(end)
    return views_pb2.GetMetricsRequest(**{"from": first, "to": last})


async def test_metrics_count_the_periods_emails_and_webhooks(stack, stub, views, smtp_sink):
    org = new_org()
    start = datetime.now(UTC) - timedelta(hours=1)
    for _ in range(2):
        await sent_email(stack, stub, org, mailbox(), f"test:{uuid.uuid4()}")
    # Outcomes as delivery records them, written as the superuser: a failure and a bounce this hour,
    # a failure last year (out of the period), an email still waiting, webhooks sent and dead.
    for status, age in (("failed", "1 minute"), ("bounced", "1 minute"), ("failed", "400 days")):
        await sql(
            stack.admin_url,
            "INSERT INTO notify.email_events (id, org_id, email_type, recipient, status, created_at)"
            " VALUES (gen_random_uuid(), %s, 'test', 'x@example.com', %s, now() - %s::interval)",
            (org, status, age),
        )
    for kind, status, sent_at in (
        ("email", "pending", None),
        ("webhook", "sent", "now()"),
        ("webhook", "sent", "now()"),
        ("webhook", "dead", None),
    ):
        await sql(
            stack.admin_url,
            "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, status,"
            f" next_attempt_at, sent_at) VALUES (gen_random_uuid(), %s, %s, %s, '{{}}', %s,"
            f" now() + interval '1 day', {sent_at or 'NULL'})",
            (org, kind, f"test:{uuid.uuid4()}", status),
        )
    end = datetime.now(UTC) + timedelta(minutes=5)
    answer = await views.GetMetrics(period(start, end), metadata=as_role(org, "FINANCE"))
    found = {m.name: m.value for m in answer.metrics}
    assert found["emails_sent"] == 2
    assert found["emails_failed"] == 2 and found["emails_bounced"] == 1
    assert found["emails_pending"] == 1
    assert (found["webhooks_sent"], found["webhooks_dead"]) == (2, 1)
    # Another org's period is empty.
    other = await views.GetMetrics(period(start, end), metadata=as_role(new_org(), "OWNER"))
    assert {m.value for m in other.metrics} == {0}


async def test_metrics_roles_and_bad_periods(views):
    org, now = new_org(), datetime.now(UTC)
    good = period(now - timedelta(days=30), now)
    for role in ("OWNER", "ADMIN", "FINANCE"):
        await views.GetMetrics(good, metadata=as_role(org, role))
    for role in ("DISPATCHER", "VIEWER", "WORKER"):
        await rpc_error(views.GetMetrics(good, metadata=as_role(org, role)), Code.PERMISSION_DENIED)
    for bad, field in (
        (period(now, now), "to"),
        (period(now, now - timedelta(days=1)), "to"),
        (period(now - timedelta(days=367), now), "to"),
        (views_pb2.GetMetricsRequest(to=good.to), "from"),
    ):
        error = await rpc_error(views.GetMetrics(bad, metadata=as_role(org, "OWNER")), Code.INVALID_ARGUMENT)
        assert error.violations[0].field == field
