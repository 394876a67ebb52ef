"""Domain events into emails and exports: the real processes end to end (gateway → booking or IAM →
NATS → notify → outbox → the SMTP sink), and the handlers themselves against the real database for
the settings the session's notify does not run with (EMAIL_TEMP_PASSWORDS, EXPORT_MODE)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import nats
import psycopg
import pytest
from cws.booking.v1 import events_pb2 as booking_events
from cws.iam.v1 import events_pb2 as iam_events
from nats.aio.msg import Msg

from libs.common.bus import event_headers, stream_name
from libs.common.db import Database, unit_of_work
from services.notify.events import Handlers
from services.notify.models import SCHEMA, event_tables
from services.notify.settings import NotifySettings
from services.notify.tests.support import new_booking, outbox, owner_headers, slot, wait_outbox
from tools.processes import DEV_SECRETS, wait_until

CONFIRMED = "cws.booking.booking.confirmed"


# --- end to end ------------------------------------------------------------------------------------


async def test_a_confirmed_booking_emails_the_client_with_times_in_the_org_zone(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org("Prairie Clean", "America/Edmonton")
    owner = await owner_headers(http, gateway.url, org)
    starts = slot(50)
    confirmed = await new_booking(http, gateway.url, owner, starts_at=starts)
    address = confirmed["client_email"]

    [row] = wait_outbox(stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{confirmed['id']}")
    assert (row["kind"], row["target"]) == ("email", address)
    payload = row["payload"]
    assert payload["to"] == address and payload["email_type"] == "booking_confirmed"
    assert payload["booking_id"] == confirmed["id"] and payload["from_name"] == "Prairie Clean"
    assert payload["redact_after_send"] is False

    local = starts.astimezone(ZoneInfo("America/Edmonton"))
    [message] = smtp_sink.wait_for(address)
    for text in (payload["text"], message.text):
        assert f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M} to " in text, text
        assert "(America/Edmonton)" in text
        assert f"{starts:%H:%M}" not in text  # not UTC
    assert message.subject == payload["subject"]


async def test_the_same_event_twice_or_a_second_confirmation_sends_one_email(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org()
    owner = await owner_headers(http, gateway.url, org)
    confirmed = await new_booking(http, gateway.url, owner, starts_at=slot(60))
    key = f"email:booking_confirmed:booking:{confirmed['id']}"
    wait_outbox(stack.admin_url, org.org_id, key)
    event_id, original, created_at = published_event(stack.admin_url, org.org_id, confirmed["id"])

    client = await nats.connect(stack.nats.url)
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
        await wait_acked(js, "notify-booking-confirmed", last.seq)
    finally:
        await client.close()

    assert inbox_has(stack.admin_url, "notify-booking-confirmed", again_id)
    assert len(outbox(stack.admin_url, org.org_id, key)) == 1
    assert outbox(stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{stranger.booking_id}") == []
    smtp_sink.wait_for(confirmed["client_email"])
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

    [row] = wait_outbox(stack.admin_url, org.org_id, "email:client_login:event:")
    assert row["payload"]["to"] == address and row["payload"]["email_type"] == "client_login"
    assert row["payload"]["redact_after_send"] is True
    [message] = smtp_sink.wait_for(address)
    found = re.search(r"https://portal\.cws\.test(/client/login/callback\?token=\S+)", message.text)
    assert found, message.text

    callback = await http.get(gateway.url + found.group(1))
    assert callback.status_code == 200, callback.text
    assert callback.json()["email"] == address and callback.json()["org_id"] == org.org_id
    # The credential does not stay in the outbox once the provider has it.
    wait_until(
        lambda: (
            found.group(1)
            not in outbox(stack.admin_url, org.org_id, "email:client_login:")[0]["payload"]["text"]
        ),
        10,
        "the link redacted from the outbox",
    )


async def test_new_users_and_password_resets_are_told_without_the_password_by_default(
    gateway, notify, smtp_sink, stack, http, make_org
):
    org = await make_org("Reset Org")
    owner = await owner_headers(http, gateway.url, org)
    address = f"staff-{uuid.uuid4().hex[:10]}@example.com"
    created = await http.post(
        f"{gateway.url}/v1/iam/users", headers=owner, json={"email": address, "role": "DISPATCHER"}
    )
    assert created.status_code == 201, created.text
    user_id, first_password = created.json()["user"]["id"], created.json()["temp_password"]
    reset = await http.post(f"{gateway.url}/v1/iam/users/{user_id}/reset-password", headers=owner)
    assert reset.status_code == 200, reset.text
    second_password = reset.json()["temp_password"]

    [welcome] = wait_outbox(stack.admin_url, org.org_id, "email:user_created:event:")
    [notice] = wait_outbox(stack.admin_url, org.org_id, "email:password_reset:event:")
    for row, email_type in ((welcome, "user_created"), (notice, "password_reset")):
        payload = row["payload"]
        assert payload["to"] == address and payload["email_type"] == email_type
        assert payload["redact_after_send"] is False
        assert "administrator" in payload["text"]
    messages = smtp_sink.wait_for(address, 2)
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
    return NotifySettings(internal_context_secret=DEV_SECRETS["INTERNAL_CONTEXT_SECRET"], **values)


def message(subject: str, event: Any, org_id: str, event_id: str | None = None) -> Msg:
    headers = event_headers(event_id or str(uuid.uuid4()), subject, "test", datetime.now(UTC), org_id, "")
    return Msg(_client=None, subject=subject, data=event.SerializeToString(), headers=headers)  # type: ignore[arg-type]


async def handle(db: Database, org_id: str, handler: Any, msg: Msg) -> None:
    async with unit_of_work(db, org_id) as uow:
        await handler(uow, msg)


async def test_temporary_passwords_are_emailed_only_when_enabled_and_then_redacted(
    notify_db, peers, notify, smtp_sink, stack, make_org
):
    org = await make_org("Temp Org")
    enabled, disabled = Handlers(settings(email_temp_passwords=True), peers), Handlers(settings(), peers)

    def created(role: str, password: str) -> iam_events.UserCreated:
        email = f"user-{uuid.uuid4().hex[:8]}@example.com"
        return iam_events.UserCreated(
            org_id=org.org_id, user_id=str(uuid.uuid4()), email=email, role=role, temp_password=password
        )

    with_password = created("ADMIN", "Temp-pass-4821")
    await handle(
        notify_db,
        org.org_id,
        enabled.user_created,
        message("cws.iam.user.created", with_password, org.org_id),
    )
    # IAM put a password in, but this notify does not email passwords.
    withheld = created("VIEWER", "Temp-pass-9930")
    await handle(
        notify_db, org.org_id, disabled.user_created, message("cws.iam.user.created", withheld, org.org_id)
    )
    founder = created("OWNER", "")
    await handle(
        notify_db, org.org_id, enabled.user_created, message("cws.iam.user.created", founder, org.org_id)
    )
    reset = iam_events.UserPasswordReset(
        org_id=org.org_id,
        user_id=with_password.user_id,
        email=with_password.email,
        temp_password="Temp-pass-7713",
    )
    await handle(
        notify_db,
        org.org_id,
        enabled.password_reset,
        message("cws.iam.user.password_reset", reset, org.org_id),
    )

    # The session's notify delivers what these handlers enqueued; the sink shows what was sent.
    [reset_notice, welcome] = sorted(
        smtp_sink.wait_for(with_password.email, 2), key=lambda m: "reset" not in m.subject
    )
    assert "Temp-pass-7713" in reset_notice.text and "Temp-pass-4821" in welcome.text
    [plain] = smtp_sink.wait_for(withheld.email)
    assert "Temp-pass-9930" not in plain.text and "Temp Org" in plain.text and "administrator" in plain.text

    def rows() -> dict[tuple[str, str], dict[str, Any]]:
        found = outbox(stack.admin_url, org.org_id)
        return {
            (r["target"], r["payload"]["email_type"]): {**r["payload"], "status": r["status"]} for r in found
        }

    # Once sent, the emails holding a password keep no copy of it; the plain one is kept as sent.
    wait_until(
        lambda: all(
            rows()[(with_password.email, kind)]["text"] == "[redacted after delivery]"
            for kind in ("user_created", "password_reset")
        ),
        10,
        "passwords redacted",
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
    await handle(
        notify_db, org.org_id, off.lead_created, message("cws.booking.lead.created", lead, org.org_id)
    )
    assert outbox(stack.admin_url, org.org_id, "export:") == []

    webhook = Handlers(
        settings(export_mode="webhook", export_webhook_url="https://hooks.example.com/in"), peers
    )
    msg = message("cws.booking.lead.created", lead, org.org_id)
    await handle(notify_db, org.org_id, webhook.lead_created, msg)
    await handle(
        notify_db, org.org_id, webhook.lead_created, message("cws.booking.lead.created", lead, org.org_id)
    )
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
    assert datetime.fromisoformat(data["created_at"]) == datetime.fromisoformat(msg.headers["ce-time"])  # type: ignore[index]

    sheets = Handlers(settings(export_mode="sheets"), peers)
    other = booking_events.LeadCreated()
    other.CopyFrom(lead)
    other.lead_id = str(uuid.uuid4())
    await handle(
        notify_db, org.org_id, sheets.lead_created, message("cws.booking.lead.created", other, org.org_id)
    )
    assert (
        outbox(stack.admin_url, org.org_id, f"export:lead_created:lead:{other.lead_id}")[0]["target"]
        == "sheets"
    )


async def test_an_org_notify_has_not_heard_of_is_looked_up_in_iam(notify_db, peers, stack, make_org):
    org = await make_org("Late Org", "Asia/Tokyo")
    # As if the org event had not reached notify yet.
    wait_until(lambda: org_profile(stack.admin_url, org.org_id) is not None, 10, "the org event")
    with psycopg.connect(stack.admin_url) as conn:
        conn.execute("DELETE FROM notify.org_profiles WHERE org_id = %s", (org.org_id,))
    event = booking_events.BookingChanged(
        org_id=org.org_id, booking_id=str(uuid.uuid4()), status="confirmed", client_email="late@example.com"
    )
    event.starts_at.FromDatetime(datetime(2026, 12, 1, 1, 30, tzinfo=UTC))
    event.ends_at.FromDatetime(datetime(2026, 12, 1, 3, 30, tzinfo=UTC))
    handlers = Handlers(settings(), peers)
    await handle(notify_db, org.org_id, handlers.booking_confirmed, message(CONFIRMED, event, org.org_id))
    [row] = outbox(stack.admin_url, org.org_id, f"email:booking_confirmed:booking:{event.booking_id}")
    assert "Tuesday 1 December 2026, 10:30 to 12:30 (Asia/Tokyo)" in row["payload"]["text"]
    assert org_profile(stack.admin_url, org.org_id) == ("Late Org", "Asia/Tokyo")


# --- helpers ------------------------------------------------------------------------------------------


def org_profile(admin_url: str, org_id: str) -> tuple[str, str] | None:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT name, time_zone FROM notify.org_profiles WHERE org_id = %s", (org_id,)
        ).fetchone()
    return (row[0], row[1]) if row else None


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(stream_name("booking"), durable)
        if info.ack_floor.stream_seq >= stream_seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{durable} did not acknowledge up to {stream_seq}")
