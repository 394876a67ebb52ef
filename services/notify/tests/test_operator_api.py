"""The operators' RPCs through notify's gRPC API (the session process, a real database): dead letters,
replay, the DLQ queue, email events, the email-dlq retry and retention, through its typed stub.
Contexts are signed as the gateway signs them (tools.testkit); dead rows are written as the
superuser, which is quicker than failing them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest
from cws.notify.v1 import notify_pb2

from libs.common import status as rich_status
from services.notify.tests.own_notify import email_payload, enqueue, mailbox, struct, wait_row
from tools.testkit import as_role, as_service, sql

Code = grpc.StatusCode


async def rpc_error(awaitable: Any, code: grpc.StatusCode) -> rich_status.DecodedError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await awaitable
    assert raised.value.code() == code, f"{raised.value.code()}: {raised.value.details()}"
    return rich_status.decode(raised.value)


async def dead_row(
    url: str,
    org_id: str,
    *,
    kind: str = "email",
    payload: dict[str, Any] | None = None,
    minutes_ago: float = 1,
    status: str = "dead",
    dead_reason: str = "retries_exhausted",
    export_letter: bool = False,
) -> str:
    """An outbox row as delivery leaves it when it gives up (and its export dead letter, if asked)."""
    outbox_id = str(uuid.uuid4())
    payload = payload or (email_payload(mailbox()) if kind == "email" else {"type": "t", "data": {}})
    target = payload.get("to", "hooks.example.com")
    await sql(
        url,
        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status, attempts,"
        " last_error, dead_reason, updated_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 8, %s, %s,"
        " now() - make_interval(secs => %s), now() - interval '1 day')",
        (
            outbox_id,
            org_id,
            kind,
            f"test:{outbox_id}",
            json.dumps(payload),
            target,
            status,
            "SMTP 451 try later" if status == "dead" else None,
            dead_reason if status == "dead" else None,
            minutes_ago * 60,
        ),
    )
    if export_letter:
        await sql(
            url,
            "INSERT INTO notify.export_events (id, org_id, outbox_id, target, payload, last_error, attempts,"
            " created_at) VALUES (%s, %s, %s, %s, %s, 'webhook answered 500', 8,"
            " now() - make_interval(secs => %s))",
            (str(uuid.uuid4()), org_id, outbox_id, target, json.dumps(payload), minutes_ago * 60),
        )
    return outbox_id


def new_org() -> str:
    return str(uuid.uuid4())


def page(limit: int = 0, offset: int = 0) -> notify_pb2.ListOutboxDeadLettersRequest:
    return notify_pb2.ListOutboxDeadLettersRequest(limit=limit, offset=offset)


def export_page() -> notify_pb2.ListExportDeadLettersRequest:
    return notify_pb2.ListExportDeadLettersRequest()


# --- dead letters and replay -------------------------------------------------------------------------


async def test_dead_letters_are_listed_newest_first_with_pagination(stack, stub):
    org = new_org()
    oldest, middle, newest = [await dead_row(stack.admin_url, org, minutes_ago=m) for m in (30, 20, 10)]
    await dead_row(stack.admin_url, org, status="sent")
    listed = await stub.ListOutboxDeadLetters(page(), metadata=as_role(org, "OWNER"))
    assert [e.id for e in listed.events] == [newest, middle, oldest]
    assert {e.status for e in listed.events} == {"dead"} and listed.events[
        0
    ].last_error == "SMTP 451 try later"
    first = await stub.ListOutboxDeadLetters(page(limit=2), metadata=as_role(org, "OWNER"))
    second = await stub.ListOutboxDeadLetters(page(limit=2, offset=2), metadata=as_role(org, "OWNER"))
    assert [e.id for e in first.events] == [newest, middle] and [e.id for e in second.events] == [oldest]
    for bad in (page(limit=201), page(limit=-1), page(offset=-1)):
        error = await rpc_error(
            stub.ListOutboxDeadLetters(bad, metadata=as_role(org, "OWNER")), Code.INVALID_ARGUMENT
        )
        assert error.violations[0].field in ("limit", "offset")


async def test_replay_sends_a_dead_email_once(stack, stub, smtp_sink):
    org, to = new_org(), mailbox()
    outbox_id = await dead_row(stack.admin_url, org, payload=email_payload(to))
    replayed = await stub.ReplayOutbox(
        notify_pb2.ReplayOutboxRequest(id=outbox_id), metadata=as_role(org, "OWNER")
    )
    assert replayed.event.id == outbox_id
    assert (replayed.event.status, replayed.event.attempts, replayed.event.last_error) == ("pending", 0, "")
    [got] = await smtp_sink.delivered(to)
    assert got.message_id == f"<{outbox_id}@cws.test>"
    await wait_row(stack.admin_url, outbox_id, lambda r: r["status"] == "sent")
    error = await rpc_error(
        stub.ReplayOutbox(notify_pb2.ReplayOutboxRequest(id=outbox_id), metadata=as_role(org, "OWNER")),
        Code.ALREADY_EXISTS,
    )
    assert error.reason == "not_dead"
    assert len(smtp_sink.to(to)) == 1


async def test_replay_of_unknown_or_malformed_ids(stub):
    org = new_org()
    await rpc_error(
        stub.ReplayOutbox(
            notify_pb2.ReplayOutboxRequest(id=str(uuid.uuid4())), metadata=as_role(org, "OWNER")
        ),
        Code.NOT_FOUND,
    )
    error = await rpc_error(
        stub.ReplayOutbox(notify_pb2.ReplayOutboxRequest(id="nope"), metadata=as_role(org, "OWNER")),
        Code.INVALID_ARGUMENT,
    )
    assert error.violations[0].field == "id"
    await rpc_error(
        stub.ReplayExportDeadLetter(
            notify_pb2.ReplayExportDeadLetterRequest(id=str(uuid.uuid4())), metadata=as_role(org, "OWNER")
        ),
        Code.NOT_FOUND,
    )


async def test_export_dead_letters_list_and_replay_once(stack, stub):
    org = new_org()
    outbox_id = await dead_row(stack.admin_url, org, kind="export", export_letter=True)
    listed = await stub.ListExportDeadLetters(export_page(), metadata=as_role(org, "OWNER"))
    [letter] = listed.events
    assert (
        letter.outbox_id == outbox_id and letter.attempts == 8 and letter.last_error == "webhook answered 500"
    )
    assert not letter.HasField("replayed_at")
    replayed = await stub.ReplayExportDeadLetter(
        notify_pb2.ReplayExportDeadLetterRequest(id=letter.id), metadata=as_role(org, "OWNER")
    )
    assert replayed.event.id == outbox_id and replayed.event.status == "pending"
    # The session notify runs EXPORT_MODE=off: the replayed export is skipped, visibly.
    await wait_row(stack.admin_url, outbox_id, lambda r: r["status"] == "skipped")
    [(replayed_at,)] = await sql(
        stack.admin_url, "SELECT replayed_at FROM notify.export_events WHERE id = %s", (letter.id,)
    )
    assert replayed_at is not None
    assert (
        list((await stub.ListExportDeadLetters(export_page(), metadata=as_role(org, "OWNER"))).events) == []
    )
    error = await rpc_error(
        stub.ReplayExportDeadLetter(
            notify_pb2.ReplayExportDeadLetterRequest(id=letter.id), metadata=as_role(org, "OWNER")
        ),
        Code.ALREADY_EXISTS,
    )
    assert error.reason == "already_replayed"


async def test_replaying_a_dead_export_row_closes_its_export_dead_letter(stack, stub):
    org = new_org()
    outbox_id = await dead_row(stack.admin_url, org, kind="export", export_letter=True)
    await stub.ReplayOutbox(notify_pb2.ReplayOutboxRequest(id=outbox_id), metadata=as_role(org, "OWNER"))
    assert (
        list((await stub.ListExportDeadLetters(export_page(), metadata=as_role(org, "OWNER"))).events) == []
    )


async def test_the_dlq_queue_lists_both_kinds_in_one_page_with_their_counts(stack, stub):
    org = new_org()
    email_a = await dead_row(stack.admin_url, org, minutes_ago=50)
    export_a = await dead_row(stack.admin_url, org, kind="export", minutes_ago=40, export_letter=True)
    email_b = await dead_row(stack.admin_url, org, minutes_ago=30)
    export_b = await dead_row(stack.admin_url, org, kind="export", minutes_ago=20, export_letter=True)

    def dlq(kind: str = "all", limit: int = 0, offset: int = 0) -> Any:
        request = notify_pb2.DeadLetterQueueRequest(kind=kind, limit=limit, offset=offset)
        return stub.DeadLetterQueue(request, metadata=as_role(org, "OWNER"))

    everything = await dlq()
    assert (everything.outbox_dead_count, everything.export_dead_count, everything.total) == (4, 2, 6)
    # An export that died is in both lists: as a dead outbox row, and (written just after, so newer)
    # as an export dead letter.
    assert [(i.kind, i.outbox_id) for i in everything.items] == [
        ("export", export_b),
        ("outbox", export_b),
        ("outbox", email_b),
        ("export", export_a),
        ("outbox", export_a),
        ("outbox", email_a),
    ]
    assert everything.items[0].event_kind == "export" and everything.items[0].dedupe_key == f"test:{export_b}"
    assert everything.items[0].id != export_b and everything.items[1].id == export_b
    one = await dlq(limit=1)
    assert len(one.items) == 1 and (one.outbox_dead_count, one.export_dead_count) == (4, 2)
    window = await dlq(limit=2, offset=2)
    assert [i.outbox_id for i in window.items] == [email_b, export_a]
    exports = await dlq("export")
    assert [i.outbox_id for i in exports.items] == [export_b, export_a] and exports.total == 2
    outbox_only = await dlq("outbox", limit=3, offset=1)
    assert [i.outbox_id for i in outbox_only.items] == [email_b, export_a, email_a] and outbox_only.total == 4
    error = await rpc_error(dlq("bogus"), Code.INVALID_ARGUMENT)
    assert error.violations[0].field == "kind"


async def test_another_orgs_dead_letters_are_invisible_and_cannot_be_replayed(stack, stub):
    org_a, org_b = new_org(), new_org()
    outbox_id = await dead_row(stack.admin_url, org_a, kind="export", export_letter=True)
    [letter] = (await stub.ListExportDeadLetters(export_page(), metadata=as_role(org_a, "OWNER"))).events
    assert list((await stub.ListOutboxDeadLetters(page(), metadata=as_role(org_b, "OWNER"))).events) == []
    assert (
        list((await stub.ListExportDeadLetters(export_page(), metadata=as_role(org_b, "OWNER"))).events) == []
    )
    queue = await stub.DeadLetterQueue(
        notify_pb2.DeadLetterQueueRequest(kind="all"), metadata=as_role(org_b, "OWNER")
    )
    assert (list(queue.items), queue.outbox_dead_count, queue.export_dead_count) == ([], 0, 0)
    await rpc_error(
        stub.ReplayOutbox(notify_pb2.ReplayOutboxRequest(id=outbox_id), metadata=as_role(org_b, "OWNER")),
        Code.NOT_FOUND,
    )
    await rpc_error(
        stub.ReplayExportDeadLetter(
            notify_pb2.ReplayExportDeadLetterRequest(id=letter.id), metadata=as_role(org_b, "OWNER")
        ),
        Code.NOT_FOUND,
    )
    [(status,)] = await sql(
        stack.admin_url, "SELECT status FROM notify.outbox_events WHERE id = %s", (outbox_id,)
    )
    assert status == "dead"


@pytest.mark.parametrize("role", ["DISPATCHER", "FINANCE", "VIEWER"])
async def test_operator_calls_are_for_admins_only(stub, role):
    org = new_org()
    signed = as_role(org, role)
    for call in (  # made one after another, as each is awaited
        lambda: stub.ListOutboxDeadLetters(page(), metadata=signed),
        lambda: stub.ListExportDeadLetters(export_page(), metadata=signed),
        lambda: stub.DeadLetterQueue(notify_pb2.DeadLetterQueueRequest(kind="all"), metadata=signed),
        lambda: stub.ReplayOutbox(notify_pb2.ReplayOutboxRequest(id=str(uuid.uuid4())), metadata=signed),
        lambda: stub.ReplayExportDeadLetter(
            notify_pb2.ReplayExportDeadLetterRequest(id=str(uuid.uuid4())), metadata=signed
        ),
        lambda: stub.ListEmailEvents(notify_pb2.ListEmailEventsRequest(), metadata=signed),
        lambda: stub.RetryDeadEmails(notify_pb2.RetryDeadEmailsRequest(), metadata=signed),
        lambda: stub.RetentionCleanup(notify_pb2.RetentionCleanupRequest(), metadata=signed),
        lambda: stub.DeliverDue(notify_pb2.DeliverDueRequest(), metadata=signed),
    ):
        await rpc_error(call(), Code.PERMISSION_DENIED)


# --- enqueue -----------------------------------------------------------------------------------------


async def test_enqueue_is_for_staff_who_send_and_is_idempotent_per_key(stub, smtp_sink):
    org, to = new_org(), mailbox()
    request = notify_pb2.EnqueueRequest(
        kind="email", dedupe_key="email:custom:1", payload=struct(email_payload(to))
    )
    await rpc_error(stub.Enqueue(request, metadata=as_role(org, "VIEWER")), Code.PERMISSION_DENIED)
    first = await stub.Enqueue(request, metadata=as_role(org, "DISPATCHER"))
    again = await stub.Enqueue(request, metadata=as_role(org, "ADMIN"))
    assert first.created and not again.created and again.event.id == first.event.id
    assert (
        first.event.kind == "email"
        and first.event.dedupe_key == "email:custom:1"
        and first.event.target == to
    )
    await smtp_sink.delivered(to)


@pytest.mark.parametrize(
    ("kind", "dedupe_key", "payload", "field"),
    [
        ("sms", "k", {"to": "a@b.co"}, "kind"),
        ("email", "", email_payload("a@b.co"), "dedupe_key"),
        ("email", "k" * 301, email_payload("a@b.co"), "dedupe_key"),
        ("email", "k", {**email_payload("a@b.co"), "to": "not-an-address"}, "payload.to"),
        ("email", "k", {**email_payload("a@b.co"), "subject": ""}, "payload.subject"),
        ("email", "k", {"to": "a@b.co", "subject": "s"}, "payload.text"),
        ("webhook", "k", {"url": "ftp://example.com/x", "body": {}}, "payload.url"),
        ("webhook", "k", {"url": "https://example.com/x", "body": [1]}, "payload.body"),
        ("export", "k", {"data": {}}, "payload.type"),
        ("export", "k", {"type": "t", "data": "x"}, "payload.data"),
        ("export", "k", {"type": "t", "data": {"blob": "x" * 70_000}}, "payload"),
    ],
)
async def test_enqueue_refuses_what_it_cannot_send(stub, kind, dedupe_key, payload, field):
    request = notify_pb2.EnqueueRequest(kind=kind, dedupe_key=dedupe_key, payload=struct(payload))
    error = await rpc_error(
        stub.Enqueue(request, metadata=as_role(new_org(), "OWNER")), Code.INVALID_ARGUMENT
    )
    assert error.violations[0].field == field


# --- email events, the email-dlq retry, retention ------------------------------------------------------


async def test_email_events_record_what_was_sent_and_filter_by_booking(stack, stub, smtp_sink):
    org, to, booking_id = new_org(), mailbox(), str(uuid.uuid4())
    enqueued = await enqueue(stub, org, "email", email_payload(to, booking_id=booking_id))
    await enqueue(stub, org, "email", email_payload(mailbox()))
    await wait_row(stack.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")

    def events(booking: str = "", other_org: str = "") -> Any:
        request = notify_pb2.ListEmailEventsRequest(booking_id=booking)
        return stub.ListEmailEvents(request, metadata=as_role(other_org or org, "OWNER"))

    [event] = (await events(booking_id)).events
    assert (event.outbox_id, event.recipient, event.status, event.email_type) == (
        enqueued.event.id,
        to,
        "sent",
        "test",
    )
    assert event.booking_id == booking_id and event.subject == f"Hello {to}"
    assert list((await events(booking_id, other_org=new_org())).events) == []
    error = await rpc_error(events("nope"), Code.INVALID_ARGUMENT)
    assert error.violations[0].field == "booking_id"


async def test_the_email_dlq_retry_waits_its_time_and_skips_refused_emails(stack, stub, smtp_sink):
    org, to = new_org(), mailbox()
    # Dead two hours (EMAIL_DLQ_RETRY_AFTER_SECONDS is an hour), dead a minute, refused two hours ago.
    due = await dead_row(stack.admin_url, org, payload=email_payload(to), minutes_ago=120)
    fresh = await dead_row(stack.admin_url, org, minutes_ago=1)
    refused = await dead_row(stack.admin_url, org, minutes_ago=120, dead_reason="refused")
    export = await dead_row(stack.admin_url, org, kind="export", minutes_ago=120)
    result = await stub.RetryDeadEmails(notify_pb2.RetryDeadEmailsRequest(), metadata=as_service(org))
    assert (result.requeued, result.left_dead) == (1, 2)
    await smtp_sink.delivered(to)
    row = await wait_row(stack.admin_url, due, lambda r: r["status"] == "sent")
    assert row["attempts"] == 8  # the one extra attempt: a failure would have been the last
    statuses = dict(
        await sql(
            stack.admin_url,
            "SELECT id::text, status FROM notify.outbox_events WHERE id = ANY(%s)",
            ([fresh, refused, export],),
        )
    )
    assert statuses == {fresh: "dead", refused: "dead", export: "dead"}
    # Another org's run touches nothing of this org.
    other = await stub.RetryDeadEmails(notify_pb2.RetryDeadEmailsRequest(), metadata=as_service(new_org()))
    assert (other.requeued, other.left_dead) == (0, 0)


async def test_retention_deletes_old_delivered_rows_and_email_events_of_the_callers_org_only(stack, stub):
    org, other = new_org(), new_org()
    month_and_more = 40 * 24 * 60
    old_sent = await dead_row(stack.admin_url, org, status="sent", minutes_ago=month_and_more)
    old_skipped = await dead_row(stack.admin_url, org, status="skipped", minutes_ago=month_and_more)
    recent_sent = await dead_row(stack.admin_url, org, status="sent", minutes_ago=60)
    old_dead = await dead_row(stack.admin_url, org, minutes_ago=month_and_more)
    others_old = await dead_row(stack.admin_url, other, status="sent", minutes_ago=month_and_more)
    for org_id, days in ((org, 400), (org, 10), (other, 400)):
        await sql(
            stack.admin_url,
            "INSERT INTO notify.email_events (id, org_id, email_type, recipient, status, created_at)"
            " VALUES (%s, %s, 'test', 'a@b.co', 'sent', now() - make_interval(days => %s))",
            (str(uuid.uuid4()), org_id, days),
        )
    result = await stub.RetentionCleanup(notify_pb2.RetentionCleanupRequest(), metadata=as_service(org))
    assert result.deleted == 3  # two outbox rows and one email event
    left = {
        row_id
        for (row_id,) in await sql(
            stack.admin_url,
            "SELECT id::text FROM notify.outbox_events WHERE id = ANY(%s)",
            ([old_sent, old_skipped, recent_sent, old_dead, others_old],),
        )
    }
    assert left == {recent_sent, old_dead, others_old}
    counts = dict(
        await sql(
            stack.admin_url,
            "SELECT org_id::text, count(*) FROM notify.email_events WHERE org_id = ANY(%s::uuid[]) GROUP BY 1",
            ([org, other],),
        )
    )
    assert counts == {org: 1, other: 1}
    again = await stub.RetentionCleanup(notify_pb2.RetentionCleanupRequest(), metadata=as_role(org, "OWNER"))
    assert again.deleted == 0
