"""Domain events into emails and exports: the real processes end to end (gateway → booking or IAM →
NATS → notify → outbox → the SMTP sink), the handlers themselves against the real database for
the settings the session's notify does not run with (EMAIL_TEMP_PASSWORDS, EXPORT_MODE), and what
happens while IAM cannot tell notify an org's time zone."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events
from google.protobuf.message import Message
from nats.js.errors import NotFoundError

from libs.common.bus import EventBus, event_headers, stream_name
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.event_types import Event, EventMeta
from services.notify.events import (
    BOOKING_CONFIRMED,
    BOOKING_LEAD_CREATED,
    IAM_USER_CREATED,
    IAM_USER_PASSWORD_RESET,
)
from services.notify.handlers import Handlers
from services.notify.models import SCHEMA, event_tables
from services.notify.orgs import OrgProfileUnavailable
from services.notify.settings import NotifySettings
from services.notify.tests.own_notify import start_own_notify
from services.notify.tests.support import (
    forget_org,
    new_booking,
    org_profile,
    outbox,
    slot,
    wait_outbox,
)
from tools.devstack import free_port
from tools.iam_seed import hold_temp_password, iam_database
from tools.processes import DEV_KEYRING, DEV_SECRETS, service_proc
from tools.testkit import eventually, owner, sql

CONFIRMED = BOOKING_CONFIRMED.subject


# --- end to end ------------------------------------------------------------------------------------


async def test_a_confirmed_booking_emails_the_client_with_times_in_the_org_zone(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org("Prairie Clean", "America/Edmonton")
    owner_auth = await owner(http, gateway.url, org)
    starts = slot(50)
    confirmed = await new_booking(http, gateway.url, owner_auth, starts_at=starts)
    address = confirmed["client_email"]

    [row] = await wait_outbox(
        stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{confirmed['id']}"
    )
    assert (row["kind"], row["target"]) == ("email", address)
    payload = row["payload"]
    assert payload["to"] == address and payload["email_type"] == "booking_confirmed"
    assert payload["booking_id"] == confirmed["id"] and payload["from_name"] == "Prairie Clean"
    assert payload["redact_after_send"] is False

    local = starts.astimezone(ZoneInfo("America/Edmonton"))
    [message] = await smtp_sink.delivered(address)
    for text in (payload["text"], message.text):
        assert f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M} to " in text, text
        assert "(America/Edmonton)" in text
        assert f"{starts:%H:%M}" not in text  # not UTC
    assert message.subject == payload["subject"]


async def test_the_same_event_twice_or_a_second_confirmation_sends_one_email(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org()
    owner_auth = await owner(http, gateway.url, org)
    confirmed = await new_booking(http, gateway.url, owner_auth, starts_at=slot(60))
    key = f"email:booking_confirmed:booking:{confirmed['id']}"
    await wait_outbox(stack.admin_url, org.org_id, key)
    event_id, original, created_at = published_event(stack.admin_url, org.org_id, confirmed["id"])

    client = await stack.nats.connect_as("booking")  # the events are booking's to publish
    watcher = await stack.nats.connect_as("admin")  # notify's consumer is notify's: only admin may look
    try:
        js = client.jetstream()
        # The same event id again (a redelivery after a lost ack), here carrying another booking: the
        # consumer's inbox drops it before the handler runs, so that booking gets nothing.
        stranger = booking_events.BookingChanged()
        stranger.CopyFrom(original)
        stranger.booking_id = str(uuid.uuid4())
        same_id = event_headers(event_id, CONFIRMED, "booking", created_at, org.org_id, "")
        same_id["Nats-Msg-Id"] = str(uuid.uuid4())  # past JetStream's own duplicate window
        await js.publish(CONFIRMED, stranger.SerializeToString(), headers=same_id)
        # A new event for the same booking (confirmed again): the dedupe key keeps one email.
        again_id = str(uuid.uuid4())
        again = event_headers(again_id, CONFIRMED, "booking", datetime.now(UTC), org.org_id, "")
        last = await js.publish(CONFIRMED, original.SerializeToString(), headers=again)
        await wait_acked(watcher.jetstream(), "notify-booking-confirmed", last.seq)
    finally:
        await client.close()
        await watcher.close()

    assert inbox_has(stack.admin_url, "notify-booking-confirmed", again_id)
    assert len(outbox(stack.admin_url, org.org_id, key)) == 1
    assert outbox(stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{stranger.booking_id}") == []
    await smtp_sink.delivered(confirmed["client_email"])
    assert len(smtp_sink.to(confirmed["client_email"])) == 1


async def test_a_client_login_request_emails_a_magic_link_that_signs_in(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org("Link Org")
    address = f"portal-{uuid.uuid4().hex[:10]}@example.com"
    requested = await http.post(
        f"{gateway.url}/client/login/request", json={"email": address}, headers={"X-Test-Org": org.org_id}
    )
    assert requested.status_code == 202, requested.text
    assert "magic_link" not in requested.json()  # the link travels by email only

    [row] = await wait_outbox(stack.admin_url, org.org_id, "email:client_login:event:")
    assert row["payload"]["to"] == address and row["payload"]["email_type"] == "client_login"
    assert row["payload"]["redact_after_send"] is True
    [message] = await smtp_sink.delivered(address)
    found = re.search(r"https://portal\.cws\.test(/client/login/callback\?token=\S+)", message.text)
    assert found, message.text

    # The link opens a page; its POST (the token in the body) signs the client in (issue 9, hole 8).
    page = await http.get(gateway.url + found.group(1))
    assert page.status_code == 200 and address in page.text, page.text
    token = parse_qs(urlsplit(found.group(1)).query)["token"][0]
    signed_in = await http.post(f"{gateway.url}/client/login/confirm", data={"token": token})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["email"] == address and signed_in.json()["org_id"] == org.org_id
    # The credential does not stay in the outbox once the provider has it.
    await eventually(
        lambda: (
            found.group(1)
            not in outbox(stack.admin_url, org.org_id, "email:client_login:")[0]["payload"]["text"]
        ),
        message="the link redacted from the outbox",
    )


async def test_new_users_and_password_resets_are_told_without_the_password_by_default(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org("Reset Org")
    owner_auth = await owner(http, gateway.url, org)
    address = f"staff-{uuid.uuid4().hex[:10]}@example.com"
    created = await http.post(
        f"{gateway.url}/v1/iam/users", headers=owner_auth, json={"email": address, "role": "DISPATCHER"}
    )
    assert created.status_code == 201, created.text
    user_id, first_password = created.json()["user"]["id"], created.json()["temp_password"]
    reset = await http.post(f"{gateway.url}/v1/iam/users/{user_id}/reset-password", headers=owner_auth)
    assert reset.status_code == 200, reset.text
    second_password = reset.json()["temp_password"]

    [welcome] = await wait_outbox(stack.admin_url, org.org_id, "email:user_created:event:")
    [notice] = await wait_outbox(stack.admin_url, org.org_id, "email:password_reset:event:")
    for row, email_type in ((welcome, "user_created"), (notice, "password_reset")):
        payload = row["payload"]
        assert payload["to"] == address and payload["email_type"] == email_type
        assert payload["redact_after_send"] is False
        assert "administrator" in payload["text"]
    messages = await smtp_sink.delivered(address, 2)
    for message in messages:
        assert first_password not in message.text and second_password not in message.text
    assert {m.subject for m in messages} == {welcome["payload"]["subject"], notice["payload"]["subject"]}
    # The founding owner chose their own password: no "you will get a password" email for them.
    assert [r for r in outbox(stack.admin_url, org.org_id) if r["target"] == org.owner_email] == []


# --- the handlers, with the settings the session's notify does not use ----------------------------------


@pytest.fixture
async def notify_db(stack) -> AsyncIterator[Database]:
    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    yield db
    await db.dispose()


def settings(**values: Any) -> NotifySettings:
    return NotifySettings(internal_signing_key=DEV_KEYRING.private["notify"], **values)


def meta(event: Event[Any], org_id: str) -> EventMeta:
    """What a delivery of `event` would tell its handler, read from the headers the relay sets."""
    headers = event_headers(str(uuid.uuid4()), event.subject, "test", datetime.now(UTC), org_id, "")
    return EventMeta.from_headers(event.subject, headers)


Handler = Callable[[UnitOfWork, Any, EventMeta], Awaitable[None]]


async def handle(db: Database, org_id: str, handler: Handler, message: Message, about: EventMeta) -> None:
    """As the durable consumer runs a handler: in the event's org, in one unit of work."""
    async with unit_of_work(db, org_id) as uow:
        await handler(uow, message, about)


async def hold_password(stack: Any, org_id: str, user_id: str, password: str) -> None:
    """What iam does with EMAIL_TEMP_PASSWORDS=true: keep the password for notify to claim (the
    session's iam runs without it), through iam's own code, as make_org creates orgs."""
    db = iam_database(stack.app_url)
    try:
        await hold_temp_password(
            db,
            org_id=org_id,
            user_id=user_id,
            password=password,
            auth_secret=DEV_SECRETS["AUTH_SECRET_KEY"],
        )
    finally:
        await db.dispose()


async def test_temporary_passwords_are_claimed_from_iam_emailed_only_when_enabled_and_then_redacted(
    notify_db, peers, notify, smtp_sink, stack, make_org
):
    org = await make_org("Temp Org")
    enabled, disabled = Handlers(settings(email_temp_passwords=True), peers), Handlers(settings(), peers)

    async def created(role: str, password: str) -> iam_events.UserCreated:
        """A user row (the hand-off names one), written behind iam's back so that iam raises no event
        of its own for the session's notify to answer too, and the event iam would raise for it."""
        email = f"user-{uuid.uuid4().hex[:8]}@example.com"
        user_id = str(uuid.uuid4())
        await sql(
            stack.admin_url,
            "INSERT INTO iam.users (id, org_id, email, role, password_hash, must_change_password) "
            "VALUES (%s, %s, %s, %s, 'not-a-hash', true)",
            (user_id, org.org_id, email, role),
        )
        if password:
            await hold_password(stack, org.org_id, user_id, password)
        return iam_events.UserCreated(
            org_id=org.org_id, user_id=user_id, email=email, role=role, temp_password_waiting=bool(password)
        )

    async def waiting(user_id: str) -> int:
        [(count,)] = await sql(
            stack.admin_url, "SELECT count(*) FROM iam.temp_password_handoffs WHERE user_id = %s", (user_id,)
        )
        return int(count)

    with_password = await created("ADMIN", "Temp-pass-4821")
    await handle(
        notify_db, org.org_id, enabled.user_created, with_password, meta(IAM_USER_CREATED, org.org_id)
    )
    # iam held a password, but this notify does not email passwords: claimed all the same, so that
    # it does not wait in iam for nobody, and not sent.
    withheld = await created("VIEWER", "Temp-pass-9930")
    await handle(notify_db, org.org_id, disabled.user_created, withheld, meta(IAM_USER_CREATED, org.org_id))
    founder = iam_events.UserCreated(
        org_id=org.org_id, user_id=org.owner_id, email=org.owner_email, role="OWNER"
    )
    await handle(notify_db, org.org_id, enabled.user_created, founder, meta(IAM_USER_CREATED, org.org_id))
    await hold_password(stack, org.org_id, with_password.user_id, "Temp-pass-7713")
    reset = iam_events.UserPasswordReset(
        org_id=org.org_id,
        user_id=with_password.user_id,
        email=with_password.email,
        temp_password_waiting=True,
    )
    await handle(
        notify_db, org.org_id, enabled.password_reset, reset, meta(IAM_USER_PASSWORD_RESET, org.org_id)
    )
    assert [await waiting(u) for u in (with_password.user_id, withheld.user_id)] == [0, 0]
    # Nothing left to claim (a redelivery after a claim whose email never committed): the email goes
    # without a password, never with an old one.
    late = await created("VIEWER", "")
    again = iam_events.UserPasswordReset(
        org_id=org.org_id, user_id=late.user_id, email=late.email, temp_password_waiting=True
    )
    await handle(
        notify_db, org.org_id, enabled.password_reset, again, meta(IAM_USER_PASSWORD_RESET, org.org_id)
    )
    [unsent] = await smtp_sink.delivered(late.email)
    assert "administrator" in unsent.text and "temporary password is" not in unsent.text

    # The session's notify delivers what these handlers enqueued; the sink shows what was sent.
    [reset_notice, welcome] = sorted(
        await smtp_sink.delivered(with_password.email, 2), key=lambda m: "reset" not in m.subject
    )
    assert "Temp-pass-7713" in reset_notice.text and "Temp-pass-4821" in welcome.text
    [plain] = await smtp_sink.delivered(withheld.email)
    assert "Temp-pass-9930" not in plain.text and "Temp Org" in plain.text and "administrator" in plain.text

    def rows() -> dict[tuple[str, str], dict[str, Any]]:
        found = outbox(stack.admin_url, org.org_id)
        return {
            (r["target"], r["payload"]["email_type"]): {**r["payload"], "status": r["status"]} for r in found
        }

    # Once sent, the emails holding a password keep no copy of it; the plain one is kept as sent.
    await eventually(
        lambda: all(
            rows()[(with_password.email, kind)]["text"] == "[redacted after delivery]"
            for kind in ("user_created", "password_reset")
        ),
        message="passwords redacted",
    )
    found = rows()
    assert found[(with_password.email, "user_created")]["redact_after_send"] is True
    assert found[(withheld.email, "user_created")]["redact_after_send"] is False
    assert "administrator" in found[(withheld.email, "user_created")]["text"]
    assert found[(withheld.email, "user_created")]["from_name"] == "Temp Org"
    assert not [key for key in found if key[0] == founder.email]


async def test_lead_exports_follow_export_mode(notify_db, peers, stack, make_org):
    org = await make_org()
    lead = booking_events.LeadCreated(
        org_id=org.org_id,
        lead_id=str(uuid.uuid4()),
        email="lead@example.com",
        total_before_tax_cents=15900,
        name="Lee Lead",
        postal_code="T5J0N3",
        cleaning_type="deep",
    )
    off = Handlers(settings(), peers)
    await handle(notify_db, org.org_id, off.lead_created, lead, meta(BOOKING_LEAD_CREATED, org.org_id))
    assert outbox(stack.admin_url, org.org_id, "export:") == []

    webhook = Handlers(
        settings(export_mode="webhook", export_webhook_url="https://hooks.example.com/in"), peers
    )
    first = meta(BOOKING_LEAD_CREATED, org.org_id)
    await handle(notify_db, org.org_id, webhook.lead_created, lead, first)
    await handle(notify_db, org.org_id, webhook.lead_created, lead, meta(BOOKING_LEAD_CREATED, org.org_id))
    [row] = outbox(stack.admin_url, org.org_id, "export:")
    assert (row["kind"], row["target"], row["dedupe_key"]) == (
        "export",
        "hooks.example.com",
        f"export:lead_created:lead:{lead.lead_id}",
    )
    assert row["payload"]["type"] == "lead.created"
    data = row["payload"]["data"]
    assert {k: data[k] for k in ("lead_id", "name", "email", "postal_code", "cleaning_type")} == {
        "lead_id": lead.lead_id,
        "name": "Lee Lead",
        "email": "lead@example.com",
        "postal_code": "T5J0N3",
        "cleaning_type": "deep",
    }
    assert data["total_before_tax_cents"] == 15900
    assert datetime.fromisoformat(data["created_at"]) == first.time

    sheets = Handlers(settings(export_mode="sheets"), peers)
    other = booking_events.LeadCreated()
    other.CopyFrom(lead)
    other.lead_id = str(uuid.uuid4())
    await handle(notify_db, org.org_id, sheets.lead_created, other, meta(BOOKING_LEAD_CREATED, org.org_id))
    assert (
        outbox(stack.admin_url, org.org_id, f"export:lead_created:lead:{other.lead_id}")[0]["target"]
        == "sheets"
    )


def confirmation(org_id: str, email: str = "late@example.com") -> booking_events.BookingChanged:
    """A booking confirmed for Tuesday 1 December 2026, 01:30 to 03:30 UTC."""
    event = booking_events.BookingChanged(
        org_id=org_id, booking_id=str(uuid.uuid4()), status="confirmed", client_email=email
    )
    event.starts_at.FromDatetime(datetime(2026, 12, 1, 1, 30, tzinfo=UTC))
    event.ends_at.FromDatetime(datetime(2026, 12, 1, 3, 30, tzinfo=UTC))
    return event


TOKYO_SLOT = "Tuesday 1 December 2026, 10:30 to 12:30 (Asia/Tokyo)"


async def test_an_org_notify_has_not_heard_of_is_looked_up_in_iam(notify_db, peers, stack, make_org):
    org = await make_org("Late Org", "Asia/Tokyo")
    await forget_org(stack.admin_url, org.org_id)
    event = confirmation(org.org_id)
    handlers = Handlers(settings(), peers)
    await handle(
        notify_db, org.org_id, handlers.booking_confirmed, event, meta(BOOKING_CONFIRMED, org.org_id)
    )
    [row] = outbox(stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{event.booking_id}")
    assert TOKYO_SLOT in row["payload"]["text"]
    assert org_profile(stack.admin_url, org.org_id) == ("Late Org", "Asia/Tokyo")


async def test_while_iam_cannot_be_asked_the_handler_fails_and_enqueues_nothing(
    notify_db, peers_without_iam, stack, make_org
):
    org = await make_org("Away Org", "Asia/Tokyo")
    await forget_org(stack.admin_url, org.org_id)
    event = confirmation(org.org_id)
    handlers = Handlers(settings(), peers_without_iam)
    with pytest.raises(OrgProfileUnavailable, match=r"could not be had from IAM \(UNAVAILABLE\)"):
        await handle(
            notify_db, org.org_id, handlers.booking_confirmed, event, meta(BOOKING_CONFIRMED, org.org_id)
        )
    # No email in UTC, and no UTC profile remembered for the org either.
    assert outbox(stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{event.booking_id}") == []
    assert org_profile(stack.admin_url, org.org_id) is None


async def test_an_event_waits_for_iam_and_is_then_emailed_in_the_org_zone(stack, iam, make_org):
    """Real processes: a notify that cannot reach IAM takes a confirmation for an org it has not heard
    of; its handler fails, nothing is enqueued, and JetStream delivers the event again. A notify that
    can reach IAM (the same database and NATS) then emails it in the org's zone."""
    org = await make_org("Tokyo Clean", "Asia/Tokyo")
    own = await asyncio.to_thread(
        start_own_notify, stack, "notify-iam-away", {"IAM_GRPC_TARGET": f"127.0.0.1:{free_port()}"}
    )
    back = service_proc(
        "notify", {**own.env, "IAM_GRPC_TARGET": iam.target}, stack.work_dir / "logs", label="notify-iam-back"
    )
    bus = EventBus(own.nats.url, "test-booking", **own.nats.login("booking"))
    watcher = EventBus(own.nats.url, "test-watcher", **own.nats.login("admin"))
    try:
        await own.proc.wait_ready_async()
        await bus.connect()
        await watcher.connect()
        event = confirmation(org.org_id, email="tokyo@example.com")
        headers = event_headers(str(uuid.uuid4()), CONFIRMED, "booking", datetime.now(UTC), org.org_id, "")
        await bus.js.publish(CONFIRMED, event.SerializeToString(), headers=headers)

        async def delivered_again() -> bool:
            try:
                info = await watcher.js.consumer_info(stream_name("booking"), "notify-booking-confirmed")
            except NotFoundError:  # notify has not made its consumer on the new stream yet
                return False
            return info.num_redelivered >= 1

        await eventually(delivered_again, timeout=20, message="the event delivered again after a failure")
        key = f"email:booking_confirmed:booking:{event.booking_id}"
        assert outbox(own.admin_url, org.org_id, key) == []  # not in UTC, not at all
        failures = [
            line
            for line in log_lines(own.proc.log_path.read_text())
            if line.get("event") == "event_handler_failed"
            and line.get("consumer") == "notify-booking-confirmed"
        ]
        assert failures and "could not be had from IAM" in failures[0]["error"], failures

        await asyncio.to_thread(own.proc.stop)
        await back.start().wait_ready_async()
        [row] = await wait_outbox(own.admin_url, org.org_id, key, timeout=30)
        assert TOKYO_SLOT in row["payload"]["text"] and row["payload"]["from_name"] == "Tokyo Clean"
        assert org_profile(own.admin_url, org.org_id) == ("Tokyo Clean", "Asia/Tokyo")
    finally:
        await bus.close()
        await watcher.close()
        await asyncio.to_thread(back.stop)
        await asyncio.to_thread(own.stop)


# --- helpers ------------------------------------------------------------------------------------------


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output."""
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return [line for line in lines if isinstance(line, dict)]


def published_event(admin_url: str, org_id: str, booking_id: str) -> tuple[str, Any, datetime]:
    """The confirmation event booking wrote to its event outbox (and published)."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT id, payload, created_at FROM booking.event_outbox WHERE subject = %s AND org_id = %s",
            (CONFIRMED, org_id),
        ).fetchall()
    for event_id, payload, created_at in rows:
        event = booking_events.BookingChanged.FromString(payload)
        if event.booking_id == booking_id:
            return str(event_id), event, created_at
    raise AssertionError("no confirmation event for the booking")


def inbox_has(admin_url: str, consumer: str, event_id: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT 1 FROM notify.event_inbox WHERE consumer = %s AND event_id = %s", (consumer, event_id)
        ).fetchone()
    return row is not None


async def wait_acked(js: Any, durable: str, stream_seq: int, timeout: float = 15) -> None:
    """Until notify has acknowledged every message of the stream up to `stream_seq`."""

    async def acked() -> bool:
        info = await js.consumer_info(stream_name("booking"), durable)
        return bool(info.ack_floor.stream_seq >= stream_seq)

    await eventually(acked, timeout=timeout, message=f"{durable} acknowledging up to {stream_seq}")
