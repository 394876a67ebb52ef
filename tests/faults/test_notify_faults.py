"""Faults that must lose nothing (issue 4), against real processes: notify killed with SIGKILL in the
middle of a backlog, and NATS stopped while bookings are confirmed.

The SMTP-down faults (retries, dead then replayed) are with the delivery engine's tests."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterable

import httpx
import psycopg

from conftest import notify_env
from services.booking.tests.helpers import create_booking, slot
from tools.processes import ServiceProc, service_proc
from tools.smtp_sink import Received, SmtpSink
from tools.testkit import eventually, owner, ready, sql

CONCURRENCY = 4


async def insert_pending_emails(admin_url: str, org_id: str, recipients: list[str]) -> None:
    """Due email rows of one org in one transaction, with the notification an enqueue sends on
    commit: a backlog as the email consumers leave it."""
    rows = [
        (
            org_id,
            f"email:fault_sigkill:{address}",
            json.dumps(
                {
                    "to": address,
                    "subject": f"Reminder {i}",
                    "text": "Your cleaning is tomorrow.",
                    "email_type": "booking_reminder",
                    "booking_id": None,
                    "from_name": "Sigkill Cleaning",
                    "redact_after_send": False,
                }
            ),
            address,
        )
        for i, address in enumerate(recipients)
    ]
    async with await psycopg.AsyncConnection.connect(admin_url) as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target) "
            "VALUES (gen_random_uuid(), %s, 'email', %s, %s::jsonb, %s)",
            rows,
        )
        await cur.execute("SELECT pg_notify('cws_notify_due', '')")


async def outbox_statuses(admin_url: str, org_id: str) -> dict[str, tuple[str, int]]:
    """target → (status, attempts) of the org's outbox rows."""
    rows = await sql(
        admin_url, "SELECT target, status, attempts FROM notify.outbox_events WHERE org_id = %s", (org_id,)
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def sent_email_events(admin_url: str, org_id: str) -> dict[str, int]:
    rows = await sql(
        admin_url,
        "SELECT recipient, count(*) FROM notify.email_events WHERE org_id = %s AND status = 'sent' "
        "GROUP BY recipient",
        (org_id,),
    )
    return {r[0]: r[1] for r in rows}


def by_recipient(messages: Iterable[Received], recipients: set[str]) -> dict[str, list[Received]]:
    found: dict[str, list[Received]] = {r: [] for r in recipients}
    for message in messages:
        for rcpt in message.rcpt_tos:
            if rcpt in found:
                found[rcpt].append(message)
    return found


async def test_notify_killed_mid_backlog_delivers_everything_after_restart(
    stack, iam, booking, notify: ServiceProc, make_org
):
    org = await make_org("Sigkill Cleaning")
    count = 400
    token = secrets.token_hex(4)
    recipients = [f"sigkill-{token}-{i}@example.com" for i in range(count)]
    # The sink holds each "250 OK" a little after keeping the message: sends are in flight when the
    # kill comes, and the backlog takes long enough to be killed in its middle.
    sink = SmtpSink(accept_delay=0.01).start()
    env = {
        **notify_env(stack, iam, booking, sink),
        "OUTBOX_CONCURRENCY": str(CONCURRENCY),
        # The killed process's claimed rows are due again this soon (default 120 s).
        "OUTBOX_LEASE_SECONDS": "2",
    }
    logs = stack.work_dir / "logs"
    first = service_proc("notify", env, logs, label="notify-sigkill")
    second = service_proc("notify", env, logs, label="notify-sigkill-restart")
    # Claims are across orgs: the session's notify would take part of this backlog to its own sink.
    await asyncio.to_thread(notify.stop)
    try:
        await first.start().wait_ready_async()
        await insert_pending_emails(stack.admin_url, org.org_id, recipients)
        await eventually(
            lambda: sink.count() >= count // 5, timeout=20, message="the first fifth of the backlog"
        )
        first.kill()
        with sink.lock:
            at_kill = sum(1 for got in by_recipient(sink.messages, set(recipients)).values() if got)
        assert at_kill < count, "the backlog was done before the kill; nothing was tested"

        await second.start().wait_ready_async()
        wanted = set(recipients)

        def all_delivered() -> bool:
            with sink.lock:
                messages = list(sink.messages)
            return all(by_recipient(messages, wanted).values())

        async def all_recorded_sent() -> bool:
            statuses = await outbox_statuses(stack.admin_url, org.org_id)
            return {status for status, _ in statuses.values()} == {"sent"}

        await eventually(all_delivered, timeout=30, message=f"all {count} emails after the restart")
        await eventually(all_recorded_sent, timeout=10, message="every row recorded as sent")
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
        sink.stop()
        await notify.start().wait_ready_async()

    received = by_recipient(sink.messages, set(recipients))
    assert all(received.values())  # none lost
    duplicates = {r: msgs for r, msgs in received.items() if len(msgs) > 1}
    for recipient, msgs in duplicates.items():
        assert len({m.message_id for m in msgs}) == 1, (recipient, [m.message_id for m in msgs])
    # A duplicate only for a send in flight when the process died: one per delivery lane at most.
    assert sum(len(msgs) - 1 for msgs in duplicates.values()) <= CONCURRENCY, {
        r: len(m) for r, m in duplicates.items()
    }
    # Each row is its own message, and each is recorded as sent exactly once.
    assert len({msgs[0].message_id for msgs in received.values()}) == count
    events = await sent_email_events(stack.admin_url, org.org_id)
    assert events == dict.fromkeys(recipients, 1)
    attempts = {a for _, a in (await outbox_statuses(stack.admin_url, org.org_id)).values()}
    assert attempts <= {1, 2}, attempts  # only the killed process's unfinished rows were tried again


async def test_bookings_confirmed_while_nats_is_down_each_get_one_email(
    stack, iam, booking, notify, jobs, gateways, gateway, smtp_sink, make_org, http
):
    org = await make_org("Nats Down Cleaning")
    headers = await owner(http, gateway.url, org)
    token = secrets.token_hex(4)
    bookings = [
        await create_booking(
            http,
            gateway.url,
            headers,
            starts_at=slot(48 + 3 * i),
            client_email=f"nats-down-{token}-{i}@example.com",
        )
        for i in range(10)
    ]
    recipients = {f"nats-down-{token}-{i}@example.com" for i in range(len(bookings))}

    # Every process of the session loses NATS; later tests need back on it those that were ready
    # (a gateway another test started may be unready by design, e.g. with a stale jobs heartbeat).
    processes = [p.readyz_url for p in (iam, booking, notify, jobs, *gateways.running())]
    # The session gateway must be ready before NATS goes; on a loaded machine one probe can miss its
    # 2 s budget, so wait for it (and say why it is not, if it never is).
    try:
        await eventually(lambda: ready(gateway.readyz_url), timeout=30)
    except AssertionError:
        raise AssertionError(
            f"the session gateway is not ready: {await readyz_body(gateway.readyz_url)}"
        ) from None
    were_ready = [url for url in processes if await ready(url)]

    async def all_ready_again() -> bool:
        return all([await ready(url) for url in were_ready])

    await asyncio.to_thread(stack.nats.stop)
    try:
        for created in bookings:
            confirmed = await http.post(
                f"{gateway.url}/v1/admin/bookings/{created['id']}/confirm", headers=headers
            )
            assert confirmed.status_code == 200, confirmed.text
            assert confirmed.json()["status"] == "confirmed"
        # Nothing can have reached notify: the events wait in booking's outbox.
        assert not [m for m in list(smtp_sink.messages) if set(m.rcpt_tos) & recipients]
    finally:
        await asyncio.to_thread(stack.nats.start)
        # A revocation feed or a consumer notices a restarted server only after its missed heartbeats
        # (15 s) and then subscribes again; on a busy CI machine that has taken over 30 s.
        try:
            await eventually(all_ready_again, timeout=60)
        except AssertionError:
            bodies = {url: await readyz_body(url) for url in were_ready if not await ready(url)}
            raise AssertionError(f"not ready 60 s after NATS returned: {bodies}") from None

    for recipient in recipients:
        await smtp_sink.delivered(recipient, 1, 20)

    # Each booking's email is one outbox row, delivered and recorded once; so one message each.
    async def one_sent_row_each() -> bool:
        statuses = await outbox_statuses(stack.admin_url, org.org_id)
        return {r: s for r, (s, _) in statuses.items() if r in recipients} == dict.fromkeys(
            recipients, "sent"
        )

    await eventually(one_sent_row_each, timeout=10, message="one sent outbox row per confirmation")
    assert await sent_email_events(stack.admin_url, org.org_id) == dict.fromkeys(recipients, 1)
    for recipient in recipients:
        got = smtp_sink.to(recipient)
        assert len(got) == 1, (recipient, len(got))
        assert "confirmed" in got[0].subject.lower(), got[0].subject


async def readyz_body(url: str) -> str:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url)).text
    except httpx.HTTPError as error:
        return repr(error)
