"""The delivery engine against real processes: the session notify (SMTP to the session sink) and
notify processes of the tests' own configurations, each with its own database and NATS (see
own_notify.py), in front of real SMTP and HTTP servers."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cws.notify.v1 import notify_pb2
from standardwebhooks import Webhook, WebhookVerificationError

from services.notify.tests.own_notify import (
    SPREADSHEET,
    GoogleStandIn,
    HttpRecorder,
    OwnNotify,
    Recorded,
    email_payload,
    enqueue,
    mailbox,
    metric,
    start_own_notify,
    stop_all,
    wait_row,
)
from tools.smtp_sink import SmtpSink
from tools.testkit import as_role, as_service, eventually, sql

WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
SENDGRID_KEY = "SG.test-key-for-notify"


class Receiver(HttpRecorder):
    """A webhook receiver that checks each request's Standard Webhooks signature, as a real one
    would: 401 when it does not verify, 400 for the leads it is told to refuse, else 204."""

    def __init__(self) -> None:
        super().__init__(respond=self._respond)
        self.refuse: set[str] = set()

    def _respond(self, request: Recorded) -> int:
        try:
            Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
        except WebhookVerificationError:
            return 401
        data = request.json().get("data") or {}
        return 400 if data.get("lead_id") in self.refuse else 204


@dataclass
class Fleet:
    """The tests' own notify processes and the servers they talk to."""

    flaky: OwnNotify  # SMTP to flaky_sink, a breaker that opens after 3 failures
    flaky_sink: SmtpSink
    strict: OwnNotify  # SMTP to strict_sink, two attempts, the email-dlq retry at once
    strict_sink: SmtpSink
    http: OwnNotify  # EMAIL_MODE=sendgrid and EXPORT_MODE=webhook
    sendgrid: HttpRecorder
    receiver: Receiver
    quiet: OwnNotify  # EMAIL_MODE=off, EXPORT_MODE=sheets without its settings, no poll to speak of
    sheets: OwnNotify  # EXPORT_MODE=sheets to the Google stand-in
    google: GoogleStandIn


@pytest.fixture(scope="module")
def fleet(stack, tmp_path_factory) -> Iterator[Fleet]:
    flaky_sink, strict_sink = SmtpSink().start(), SmtpSink().start()
    google = GoogleStandIn()
    sendgrid, receiver = HttpRecorder(status=202).start(), Receiver().start()
    smtp = {"EMAIL_MODE": "smtp", "SMTP_HOST": "127.0.0.1"}
    configs = {
        "notify-flaky": {**smtp, "SMTP_PORT": str(flaky_sink.port), "CIRCUIT_FAILURE_THRESHOLD": "3"},
        "notify-strict": {
            **smtp,
            "SMTP_PORT": str(strict_sink.port),
            "OUTBOX_MAX_ATTEMPTS": "2",
            "EMAIL_DLQ_RETRY_AFTER_SECONDS": "0",
        },
        "notify-http": {
            "EMAIL_MODE": "sendgrid",
            "SENDGRID_API_URL": sendgrid.url,
            "SENDGRID_API_KEY": SENDGRID_KEY,
            "EXPORT_MODE": "webhook",
            "EXPORT_WEBHOOK_URL": f"{receiver.url}/exports",
            "EXPORT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "EXPORT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        },
        "notify-quiet": {"EMAIL_MODE": "off", "EXPORT_MODE": "sheets", "OUTBOX_POLL_SECONDS": "3600"},
        "notify-sheets": {
            "EXPORT_MODE": "sheets",
            "SHEETS_SPREADSHEET_ID": SPREADSHEET,
            "GOOGLE_SERVICE_ACCOUNT_FILE": str(google.write_key(tmp_path_factory.mktemp("google"))),
            "SHEETS_API_URL": google.sheets.url,
        },
    }
    started: list[OwnNotify] = []
    try:
        for label, env in configs.items():
            started.append(start_own_notify(stack, label, env))
        for own in started:  # booting side by side
            own.proc.wait_ready()
        flaky, strict, http, quiet, sheets = started
        yield Fleet(flaky, flaky_sink, strict, strict_sink, http, sendgrid, receiver, quiet, sheets, google)
    finally:
        stop_all(started)
        for server in (flaky_sink, strict_sink, sendgrid, receiver, google):
            server.stop()


async def breaker_state(own: OwnNotify, state: float) -> bool:
    return await metric(own.metrics_url, "circuit_breaker_state", breaker="smtp") == state


async def code_of(awaitable) -> str:
    try:
        await awaitable
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


# --- the session notify ---------------------------------------------------------------------------


async def test_email_is_delivered_within_a_second_with_its_message_id(stack, stub, smtp_sink):
    org_id, to = str(uuid.uuid4()), mailbox()
    started = time.monotonic()
    enqueued = await enqueue(stub, org_id, "email", email_payload(to, from_name="Sparkle Co"))
    [got] = await smtp_sink.delivered(to, timeout=5)
    assert got.at - started < 1.0 + 0.5  # the sink's clock is this process's monotonic clock
    event = enqueued.event
    assert enqueued.created and event.status == "pending" and event.target == to
    assert got.message_id == f"<{event.id}@cws.test>"
    assert got.message["From"] == "Sparkle Co <bookings@cws.test>"
    assert got.message["To"] == to
    assert got.subject == f"Hello {to}"
    assert got.text.strip() == "Your booking is confirmed."
    row = await wait_row(stack.admin_url, event.id, lambda r: r["status"] == "sent")
    assert row["attempts"] == 1 and row["sent_at"] is not None and row["last_error"] is None
    events = await sql(
        stack.admin_url,
        "SELECT status, recipient, email_type FROM notify.email_events WHERE outbox_id = %s",
        (event.id,),
    )
    assert events == [("sent", to, "test")]


async def test_enqueueing_twice_makes_one_row_and_one_email(stack, stub, smtp_sink):
    org_id, to = str(uuid.uuid4()), mailbox()
    key = f"email:booking_confirmed:booking:{uuid.uuid4()}"
    first = await enqueue(stub, org_id, "email", email_payload(to), dedupe_key=key)
    second = await enqueue(stub, org_id, "email", email_payload(to), dedupe_key=key)
    assert first.created and not second.created
    assert second.event.id == first.event.id
    # A second, different email to the same address: once it is in, the duplicate had its chance.
    await enqueue(stub, org_id, "email", {**email_payload(to), "subject": "Sentinel"})
    arrived = await smtp_sink.delivered(to, count=2)
    await wait_row(stack.admin_url, first.event.id, lambda r: r["status"] == "sent")
    assert sorted(m.subject for m in smtp_sink.to(to)) == ["Hello " + to, "Sentinel"], arrived
    rows = await sql(
        stack.admin_url,
        "SELECT count(*) FROM notify.outbox_events WHERE org_id = %s AND dedupe_key = %s",
        (org_id, key),
    )
    assert rows == [(1,)]


async def test_a_temporary_password_is_redacted_once_delivered(stack, stub, smtp_sink):
    org_id, to = str(uuid.uuid4()), mailbox()
    payload = email_payload(to, text="Your temporary password: Tmp-123456", redact_after_send=True)
    enqueued = await enqueue(stub, org_id, "email", payload)
    [got] = await smtp_sink.delivered(to)
    assert "Tmp-123456" in got.text
    row = await wait_row(stack.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    assert row["payload"]["text"] == "[redacted after delivery]"
    assert row["payload"]["to"] == to


# --- SMTP down, dead letters, replay -----------------------------------------------------------------


async def test_smtp_down_for_a_while_retries_with_backoff_then_delivers_once(fleet, notify_at):
    own, sink = fleet.flaky, fleet.flaky_sink
    notify = notify_at(own.target)
    org_id, to = str(uuid.uuid4()), mailbox()
    sink.stop()
    try:
        enqueued = await enqueue(notify, org_id, "email", email_payload(to))
        row = await wait_row(
            own.admin_url, enqueued.event.id, lambda r: r["status"] == "pending" and r["attempts"] >= 2
        )
        assert "cannot connect to SMTP" in row["last_error"]
        assert row["next_attempt_at"] > row["updated_at"]  # waiting out its backoff
    finally:
        sink.start()  # the same port
    [got] = await sink.delivered(to)
    row = await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    assert got.message_id == f"<{enqueued.event.id}@cws.test>"
    assert len(sink.to(to)) == 1 and row["last_error"] is None


async def test_the_circuit_opens_while_smtp_is_down_and_closes_when_it_is_back(fleet, notify_at):
    own, sink = fleet.flaky, fleet.flaky_sink
    notify = notify_at(own.target)
    org_id, to = str(uuid.uuid4()), mailbox()
    opened_before = await metric(own.metrics_url, "circuit_breaker_opened_total", breaker="smtp") or 0
    sink.stop()
    try:
        ids = [(await enqueue(notify, org_id, "email", email_payload(to))).event.id for _ in range(4)]
        await eventually(lambda: breaker_state(own, 1), timeout=10, message="the smtp circuit to open")
        opened = await metric(own.metrics_url, "circuit_breaker_opened_total", breaker="smtp")
        assert opened is not None and opened > opened_before
        # While open nothing is attempted: rows wait as pending, none has run out of attempts.
        rows = await sql(own.admin_url, "SELECT status FROM notify.outbox_events WHERE id = ANY(%s)", (ids,))
        assert {status for (status,) in rows} <= {"pending", "sending"}
    finally:
        sink.start()
    await sink.delivered(to, count=4)
    await eventually(lambda: breaker_state(own, 0), timeout=10, message="the smtp circuit to close")
    deferred = await metric(own.metrics_url, "notify_deliveries_total", kind="email", outcome="deferred")
    assert deferred is not None and deferred > 0


async def test_dead_after_the_last_attempt_then_delivered_once_on_replay(fleet, notify_at):
    own, sink = fleet.strict, fleet.strict_sink
    notify = notify_at(own.target)
    org_id, to = str(uuid.uuid4()), mailbox()
    sink.refuse_with = "451 4.3.0 mailbox busy, try later"
    try:
        enqueued = await enqueue(notify, org_id, "email", email_payload(to))
        dead = await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "dead")
    finally:
        sink.refuse_with = ""
    assert dead["attempts"] == 2 and "451" in dead["last_error"]
    assert dead["dead_reason"] == "retries_exhausted"
    listed = await notify.ListOutboxDeadLetters(
        notify_pb2.ListOutboxDeadLettersRequest(), metadata=as_role(org_id, "OWNER")
    )
    assert [e.id for e in listed.events] == [enqueued.event.id]
    events = await sql(
        own.admin_url,
        "SELECT status, error FROM notify.email_events WHERE outbox_id = %s",
        (enqueued.event.id,),
    )
    assert [status for status, _ in events] == ["failed"] and "451" in events[0][1]

    replayed = await notify.ReplayOutbox(
        notify_pb2.ReplayOutboxRequest(id=enqueued.event.id), metadata=as_role(org_id, "OWNER")
    )
    assert replayed.event.status == "pending" and replayed.event.attempts == 0
    [got] = await sink.delivered(to)
    row = await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    assert row["attempts"] == 1 and len(sink.to(to)) == 1
    assert got.message_id == f"<{enqueued.event.id}@cws.test>"


async def test_a_bounce_is_dead_at_once(fleet, notify_at):
    own, sink = fleet.strict, fleet.strict_sink
    notify = notify_at(own.target)
    org_id, to = str(uuid.uuid4()), mailbox()
    sink.refuse_with = "550 5.1.1 no such user"
    try:
        enqueued = await enqueue(notify, org_id, "email", email_payload(to))
        dead = await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "dead")
    finally:
        sink.refuse_with = ""
    assert dead["attempts"] == 1 and dead["dead_reason"] == "refused" and "550" in dead["last_error"]
    events = await sql(
        own.admin_url, "SELECT status FROM notify.email_events WHERE outbox_id = %s", (enqueued.event.id,)
    )
    assert events == [("bounced",)]
    # The backlog gauge (every org) counts it among the dead.
    [(dead_rows,)] = await sql(
        own.admin_url, "SELECT count(*) FROM notify.outbox_events WHERE status = 'dead'"
    )

    async def counted() -> bool:
        return await metric(own.metrics_url, "notify_outbox_rows", status="dead") == dead_rows

    await eventually(counted, timeout=5, message="notify_outbox_rows to count the dead row")


async def test_the_email_dlq_job_retries_an_exhausted_email_once_and_leaves_bounces(fleet, notify_at):
    own, sink = fleet.strict, fleet.strict_sink
    notify = notify_at(own.target)
    org_id, busy, gone = str(uuid.uuid4()), mailbox(), mailbox()
    sink.refuse_with = "451 4.3.0 mailbox busy, try later"
    try:
        exhausted = await enqueue(notify, org_id, "email", email_payload(busy))
        await wait_row(own.admin_url, exhausted.event.id, lambda r: r["status"] == "dead")
        sink.refuse_with = "550 5.1.1 no such user"
        bounced = await enqueue(notify, org_id, "email", email_payload(gone))
        await wait_row(own.admin_url, bounced.event.id, lambda r: r["status"] == "dead")
    finally:
        sink.refuse_with = ""

    first = await notify.RetryDeadEmails(notify_pb2.RetryDeadEmailsRequest(), metadata=as_service(org_id))
    assert (first.requeued, first.left_dead) == (1, 1)
    await sink.delivered(busy)
    row = await wait_row(own.admin_url, exhausted.event.id, lambda r: r["status"] == "sent")
    assert row["dlq_retried_at"] is not None
    second = await notify.RetryDeadEmails(notify_pb2.RetryDeadEmailsRequest(), metadata=as_service(org_id))
    assert (second.requeued, second.left_dead) == (0, 1)
    assert sink.to(gone) == []


# --- SendGrid and signed webhooks ---------------------------------------------------------------------


async def test_sendgrid_gets_the_email_as_its_v3_api_wants_it(fleet, notify_at):
    own, api = fleet.http, fleet.sendgrid
    notify = notify_at(own.target)
    org_id, to = str(uuid.uuid4()), mailbox()
    enqueued = await enqueue(notify, org_id, "email", email_payload(to, from_name="Sparkle Co"))
    await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    [request] = [
        r for r in api.at("/v3/mail/send") if r.json()["personalizations"][0]["to"][0]["email"] == to
    ]
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {SENDGRID_KEY}"
    body = request.json()
    assert body["from"] == {"email": "bookings@cws.test", "name": "Sparkle Co"}
    assert body["subject"] == f"Hello {to}"
    assert body["content"] == [{"type": "text/plain", "value": "Your booking is confirmed."}]
    assert body["headers"]["Message-ID"] == f"<{enqueued.event.id}@cws.test>"


async def test_an_export_is_posted_signed_and_the_receiver_verifies_it(fleet, notify_at):
    own, receiver = fleet.http, fleet.receiver
    notify = notify_at(own.target)
    org_id, lead_id = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {"type": "lead.created", "data": {"lead_id": lead_id, "name": "Robin"}}
    enqueued = await enqueue(notify, org_id, "export", payload)
    assert enqueued.event.target == "127.0.0.1"
    await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    [request] = [r for r in receiver.at("/exports") if r.headers["webhook-id"] == enqueued.event.id]
    assert Webhook(WEBHOOK_SECRET).verify(request.body, request.headers) == payload
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["content-type"] == "application/json"


async def test_an_export_is_appended_to_the_sheet_as_one_row(fleet, notify_at):
    own, google = fleet.sheets, fleet.google
    notify = notify_at(own.target)
    org_id, lead_id = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {
        "type": "lead.created",
        "data": {"lead_id": lead_id, "name": "Robin", "email": "r@example.com"},
    }
    enqueued = await enqueue(notify, org_id, "export", payload)
    assert enqueued.event.target == "sheets"
    await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    [request] = [r for r in google.sheets.requests if r.json()["values"][0][0] == enqueued.event.id]
    assert request.path.startswith(f"/v4/spreadsheets/{SPREADSHEET}/values/Leads%21A1:append?")
    assert request.headers["authorization"].startswith("Bearer token-")
    assert request.json()["values"] == [
        [enqueued.event.id, "lead.created", "", lead_id, "Robin", "r@example.com", "", "", "", ""]
    ]


async def test_a_webhook_to_a_host_off_the_allowlist_is_dead_at_once(fleet, notify_at):
    own, receiver = fleet.http, fleet.receiver
    notify = notify_at(own.target)
    org_id = str(uuid.uuid4())
    before = len(receiver.requests)
    enqueued = await enqueue(
        notify, org_id, "webhook", {"url": "http://example.com/hooks", "body": {"hello": "world"}}
    )
    dead = await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "dead")
    assert dead["attempts"] == 1 and dead["dead_reason"] == "refused"
    assert dead["last_error"] == "host example.com is not in EXPORT_WEBHOOK_ALLOWED_HOSTS"
    assert len(receiver.requests) == before


async def test_a_webhook_to_an_allowlisted_address_is_delivered(fleet, notify_at):
    own, receiver = fleet.http, fleet.receiver
    notify = notify_at(own.target)
    org_id = str(uuid.uuid4())
    body = {"event": "booking.confirmed", "id": str(uuid.uuid4())}
    enqueued = await enqueue(notify, org_id, "webhook", {"url": f"{receiver.url}/hooks", "body": body})
    await wait_row(own.admin_url, enqueued.event.id, lambda r: r["status"] == "sent")
    [request] = [r for r in receiver.at("/hooks") if r.headers["webhook-id"] == enqueued.event.id]
    assert json.loads(request.body) == body


async def test_a_refused_export_lands_in_the_export_dlq_and_replays_with_the_same_webhook_id(
    fleet, notify_at
):
    own, receiver = fleet.http, fleet.receiver
    notify = notify_at(own.target)
    org_id = str(uuid.uuid4())
    payload = {"type": "lead.created", "data": {"lead_id": str(uuid.uuid4())}}
    receiver.refuse.add(payload["data"]["lead_id"])
    enqueued = await enqueue(notify, org_id, "export", payload)
    outbox_id = enqueued.event.id
    row = await wait_row(own.admin_url, outbox_id, lambda r: r["status"] == "dead")
    receiver.refuse.clear()
    assert row["dead_reason"] == "refused" and "400" in row["last_error"]

    listed = await notify.ListExportDeadLetters(
        notify_pb2.ListExportDeadLettersRequest(), metadata=as_role(org_id, "OWNER")
    )
    [dead_letter] = listed.events
    assert dead_letter.outbox_id == outbox_id and dead_letter.target == "127.0.0.1"
    replayed = await notify.ReplayExportDeadLetter(
        notify_pb2.ReplayExportDeadLetterRequest(id=dead_letter.id), metadata=as_role(org_id, "OWNER")
    )
    assert replayed.event.id == outbox_id and replayed.event.status == "pending"
    await wait_row(own.admin_url, outbox_id, lambda r: r["status"] == "sent")
    requests = [r for r in receiver.at("/exports") if r.headers["webhook-id"] == outbox_id]
    assert len(requests) == 2  # the refused one and the replay, under one webhook-id
    after = await notify.ListExportDeadLetters(
        notify_pb2.ListExportDeadLettersRequest(), metadata=as_role(org_id, "OWNER")
    )
    assert list(after.events) == []


# --- EMAIL_MODE=off, EXPORT_MODE=sheets unconfigured, and the catch-up RPC -----------------------------------------


async def test_email_off_skips_and_unconfigured_sheets_exports_fail_visibly(fleet, notify_at):
    own = fleet.quiet
    notify = notify_at(own.target)
    org_id, to = str(uuid.uuid4()), mailbox()
    email = await enqueue(notify, org_id, "email", email_payload(to))
    export = await enqueue(notify, org_id, "export", {"type": "lead.created", "data": {"lead_id": "1"}})
    assert export.event.target == "sheets"
    skipped = await wait_row(own.admin_url, email.event.id, lambda r: r["status"] == "skipped")
    assert skipped["sent_at"] is None
    dead = await wait_row(own.admin_url, export.event.id, lambda r: r["status"] == "dead")
    assert (
        dead["last_error"] == "EXPORT_MODE=sheets needs SHEETS_SPREADSHEET_ID and GOOGLE_SERVICE_ACCOUNT_FILE"
        and dead["attempts"] == 1
    )
    assert await sql(
        own.admin_url, "SELECT status FROM notify.email_events WHERE outbox_id = %s", (email.event.id,)
    ) == [("skipped",)]
    assert await sql(
        own.admin_url, "SELECT last_error FROM notify.export_events WHERE outbox_id = %s", (export.event.id,)
    ) == [("EXPORT_MODE=sheets needs SHEETS_SPREADSHEET_ID and GOOGLE_SERVICE_ACCOUNT_FILE",)]


async def test_deliver_due_catches_up_rows_the_loop_was_not_woken_for(fleet, notify_at):
    own = fleet.quiet
    notify = notify_at(own.target)
    org_id = str(uuid.uuid4())
    # Written behind notify's back: no NOTIFY, and this process polls once an hour.
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    await sql(
        own.admin_url,
        "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target) VALUES "
        "(%s, %s, 'email', 'catch-up:1', %s, 'x@example.com'), "
        "(%s, %s, 'export', 'catch-up:2', %s, 'sheets')",
        (
            ids[0],
            org_id,
            json.dumps(email_payload("x@example.com")),
            ids[1],
            org_id,
            json.dumps({"type": "lead.created", "data": {}}),
        ),
    )
    denied = await code_of(
        notify.DeliverDue(notify_pb2.DeliverDueRequest(), metadata=as_role(org_id, "VIEWER"))
    )
    assert denied == "PERMISSION_DENIED"
    assert [
        s
        for (s,) in await sql(
            own.admin_url, "SELECT status FROM notify.outbox_events WHERE id = ANY(%s)", (ids,)
        )
    ] == [
        "pending",
        "pending",
    ]
    counts = await notify.DeliverDue(notify_pb2.DeliverDueRequest(), metadata=as_service(org_id))
    assert (counts.claimed, counts.sent, counts.retried, counts.dead, counts.deferred) == (2, 0, 0, 1, 0)
    statuses = dict(
        await sql(own.admin_url, "SELECT kind, status FROM notify.outbox_events WHERE id = ANY(%s)", (ids,))
    )
    assert statuses == {"email": "skipped", "export": "dead"}
    again = await notify.DeliverDue(notify_pb2.DeliverDueRequest(max_rows=5), metadata=as_service(org_id))
    assert again.claimed == 0


# --- the outcome writer, in this process against the session database -----------------------------


async def test_an_outcome_is_written_with_its_email_event_only_while_the_claim_is_still_ours(stack):
    """WRITE_OUTCOMES updates a row only if it is still this claim's (status sending, same attempts),
    and adds its email_events row in the same statement: a row another worker claimed since (its
    lease ran out) keeps its state and gets no email event from the stale claim."""
    from libs.common.db import Database
    from services.notify.adapters.base import Outbound
    from services.notify.delivery.outcomes import Job, Outcome, OutcomeWriter
    from services.notify.models import SCHEMA, event_tables

    org_id, booking_id = uuid.uuid4(), uuid.uuid4()
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    payloads = {
        ours: {
            **email_payload("ours@example.com"),
            "email_type": "booking_confirmation",
            "booking_id": str(booking_id),
        },
        theirs: email_payload("theirs@example.com"),
    }
    for row_id, payload in payloads.items():
        # Claimed twice already (attempts 2), leased for an hour: no notify process touches them.
        await sql(
            stack.admin_url,
            "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target, status, attempts,"
            " next_attempt_at) VALUES (%s, %s, 'email', %s, %s, %s, 'sending', 2, now() + interval '1 hour')",
            (row_id, org_id, f"writer:{row_id}", json.dumps(payload), payload["to"]),
        )
    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    try:
        writer = OutcomeWriter(db)

        def job(row_id: uuid.UUID, attempts: int) -> Job:
            payload = payloads[row_id]
            return Job(Outbound(row_id, org_id, "email", payload["to"], payload), attempts)

        await writer.write(Outcome(job(ours, 2), "sent", email_status="sent"))
        await writer.write(Outcome(job(theirs, 1), "sent", email_status="sent"))  # a stale claim
    finally:
        await db.engine.dispose()
    rows = dict(
        (r[0], r[1:])
        for r in await sql(
            stack.admin_url,
            "SELECT id, status, attempts, sent_at IS NOT NULL FROM notify.outbox_events WHERE id = ANY(%s)",
            ([ours, theirs],),
        )
    )
    assert rows == {ours: ("sent", 2, True), theirs: ("sending", 2, False)}
    events = await sql(
        stack.admin_url,
        "SELECT outbox_id, org_id, email_type, recipient, subject, status, error, booking_id"
        " FROM notify.email_events WHERE outbox_id = ANY(%s)",
        ([ours, theirs],),
    )
    assert events == [
        (
            ours,
            org_id,
            "booking_confirmation",
            "ours@example.com",
            payloads[ours]["subject"],
            "sent",
            None,
            booking_id,
        )
    ]
