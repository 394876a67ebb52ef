"""Digests (seed 003 "Scheduled Jobs"): periods in the org's time zone, once per period however often
and however many runners ask, gated by module.notifications_center, and what a digest says."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import psycopg
import pytest
from cws.notify.v1 import notify_pb2
from psycopg.types.json import Jsonb

from libs.common.db import Database
from libs.common.errors import InvalidArgument
from services.notify import digests
from services.notify.models import SCHEMA, event_tables
from services.notify.orgs import OrgProfileUnavailable
from services.notify.tests.support import forget_org, new_booking, outbox
from tools.testkit import as_role, as_service, owner

# --- periods ----------------------------------------------------------------------------------------


def test_periods_are_taken_in_the_org_time_zone():
    moment = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # Sunday 22 November, 20:00 in Edmonton
    edmonton = moment.astimezone(ZoneInfo("America/Edmonton"))
    daily = digests.period_of("daily", edmonton)
    assert daily.key == "2026-11-22"
    assert (daily.start.isoformat(), daily.end.isoformat()) == (
        "2026-11-22T00:00:00-07:00",
        "2026-11-23T00:00:00-07:00",
    )
    weekly = digests.period_of("weekly", edmonton)
    assert weekly.key == "2026-W47" and weekly.start.date().isoformat() == "2026-11-16"
    assert weekly.end.date().isoformat() == "2026-11-23"
    assert digests.period_of("monthly", edmonton).key == "2026-11"
    # The same moment is already Monday of the next ISO week in UTC.
    assert digests.period_of("daily", moment).key == "2026-11-23"
    assert digests.period_of("weekly", moment).key == "2026-W48"

    new_year = datetime(2027, 1, 1, 9, 0, tzinfo=ZoneInfo("Pacific/Auckland"))
    assert digests.period_of("weekly", new_year).key == "2026-W53"
    monthly = digests.period_of("monthly", new_year)
    assert monthly.key == "2027-01" and digests.previous_period("monthly", monthly).key == "2026-12"
    assert digests.previous_period("daily", digests.period_of("daily", new_year)).key == "2026-12-31"
    # The day clocks go back lasts 25 hours.
    fall_back = digests.period_of("daily", datetime(2026, 11, 1, 12, tzinfo=ZoneInfo("America/Edmonton")))
    assert fall_back.end.astimezone(UTC) - fall_back.start.astimezone(UTC) == timedelta(hours=25)


def test_settings_are_checked():
    assert digests.check_recipients([" Ops@Example.com", "ops@example.com", "b@example.org"]) == [
        "ops@example.com",
        "b@example.org",
    ]
    for bad in (["not-an-email"], [f"r{i}@example.com" for i in range(51)]):
        with pytest.raises(InvalidArgument):
            digests.check_recipients(bad)
    for key in ("", "Has Upper", "x" * 101, "semi;colon"):
        with pytest.raises(InvalidArgument):
            digests.check_key(key)
    with pytest.raises(InvalidArgument):
        digests.check_schedule("hourly")


# --- through the notify process ------------------------------------------------------------------------


async def configure(
    stub: Any, org_id: str, key: str, schedule: str, recipients: list[str], enabled: bool = True
) -> None:
    await stub.UpdateDigestSetting(
        notify_pb2.UpdateDigestSettingRequest(
            digest=notify_pb2.DigestSetting(
                digest_key=key, enabled=enabled, schedule=schedule, recipients=recipients
            )
        ),
        metadata=as_role(org_id, "ADMIN"),
    )


async def run(stub: Any, org_id: str, schedule: str) -> tuple[int, int, bool]:
    done = await stub.RunDigests(notify_pb2.RunDigestsRequest(schedule=schedule), metadata=as_service(org_id))
    return done.sent, done.already_sent, done.module_enabled


def mailbox() -> str:
    return f"digest-{uuid.uuid4().hex[:10]}@example.com"


async def test_each_digest_goes_out_once_per_period(stub, smtp_sink, stack, make_org):
    org = await make_org("Digest Org", "Pacific/Auckland")
    ops, boss, weekly_reader = mailbox(), mailbox(), mailbox()
    await stub.SetNotificationsModule(
        notify_pb2.SetNotificationsModuleRequest(enabled=True), metadata=as_role(org.org_id, "OWNER")
    )
    await configure(stub, org.org_id, "ops_daily", "daily", [ops, boss])
    await configure(stub, org.org_id, "paused", "daily", [ops], enabled=False)
    await configure(stub, org.org_id, "weekly-summary", "weekly", [weekly_reader])

    assert await run(stub, org.org_id, "daily") == (1, 0, True)
    assert await run(stub, org.org_id, "daily") == (0, 1, True)  # the runner's next loop
    today = datetime.now(ZoneInfo("Pacific/Auckland")).date().isoformat()
    rows = outbox(stack.admin_url, org.org_id, "digest:")
    assert sorted(r["dedupe_key"] for r in rows) == sorted(
        f"digest:ops_daily:{today}:{address}" for address in (ops, boss)
    )
    for address in (ops, boss):
        [message] = await smtp_sink.delivered(address)
        assert today in message.subject and "Digest Org" in message.subject
        assert "Sends waiting in the dead-letter queue: 0" in message.text

    # Two runners at once: one of them sends.
    results = await asyncio.gather(*(run(stub, org.org_id, "weekly") for _ in range(4)))
    assert sorted(sent for sent, _, _ in results) == [0, 0, 0, 1]
    await smtp_sink.delivered(weekly_reader)
    assert len(outbox(stack.admin_url, org.org_id, "digest:weekly-summary:")) == 1
    assert await run(stub, org.org_id, "monthly") == (0, 0, True)  # none configured
    with psycopg.connect(stack.admin_url) as conn:
        state = conn.execute(
            "SELECT digest_key, period_key, outbox_id IS NOT NULL FROM notify.notifications_digest_state "
            "WHERE org_id = %s ORDER BY digest_key",
            (org.org_id,),
        ).fetchall()
    week = datetime.now(ZoneInfo("Pacific/Auckland")).isocalendar()
    assert state == [("ops_daily", today, True), ("weekly-summary", f"{week.year}-W{week.week:02d}", True)]


async def test_nothing_goes_out_while_the_module_is_off(stub, stack, make_org):
    org = await make_org()
    await configure(stub, org.org_id, "ops_daily", "daily", [mailbox()])
    assert await run(stub, org.org_id, "daily") == (0, 0, False)  # off by default
    for enabled in (True, False):
        await stub.SetNotificationsModule(
            notify_pb2.SetNotificationsModuleRequest(enabled=enabled), metadata=as_role(org.org_id, "ADMIN")
        )
    assert await run(stub, org.org_id, "daily") == (0, 0, False)
    assert outbox(stack.admin_url, org.org_id, "digest:") == []


async def test_the_rpcs_check_roles_and_input(stub, make_org):
    org = await make_org()
    for call in (
        stub.RunDigests(
            notify_pb2.RunDigestsRequest(schedule="daily"), metadata=as_role(org.org_id, "DISPATCHER")
        ),
        stub.SetNotificationsModule(
            notify_pb2.SetNotificationsModuleRequest(enabled=True), metadata=as_role(org.org_id, "VIEWER")
        ),
        stub.UpdateDigestSetting(
            notify_pb2.UpdateDigestSettingRequest(
                digest=notify_pb2.DigestSetting(digest_key="x", schedule="daily")
            ),
            metadata=as_role(org.org_id, "FINANCE"),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RunDigests(
            notify_pb2.RunDigestsRequest(schedule="hourly"), metadata=as_service(org.org_id)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    viewer = await stub.GetDigestSettings(
        notify_pb2.GetDigestSettingsRequest(), metadata=as_role(org.org_id, "VIEWER")
    )
    assert (viewer.module_enabled, list(viewer.digests)) == (False, [])


# --- what a digest says, period after period (the domain, with a chosen clock) ------------------------


async def test_a_digest_summarises_the_last_period_and_the_coming_bookings(
    gateway, peers, stack, http, make_org
):
    org = await make_org("Summary Org")  # UTC
    org_id = uuid.UUID(org.org_id)
    day = (datetime.now(UTC) + timedelta(days=1)).date()
    first_run = datetime(day.year, day.month, day.day, 0, 30, tzinfo=UTC)
    yesterday_noon = first_run - timedelta(hours=12, minutes=30)
    owner_auth = await owner(http, gateway.url, org)
    # No client emails: their confirmations would count among the emails of the day.
    await new_booking(
        http, gateway.url, owner_auth, starts_at=first_run + timedelta(hours=10), client_email=""
    )
    await new_booking(
        http,
        gateway.url,
        owner_auth,
        starts_at=first_run + timedelta(hours=12),
        confirm=False,
        client_email="",
    )
    await new_booking(
        http, gateway.url, owner_auth, starts_at=first_run + timedelta(days=1, hours=10), client_email=""
    )
    with psycopg.connect(stack.admin_url) as conn:
        for status in ("sent", "sent", "sent", "failed", "bounced"):
            conn.execute(
                "INSERT INTO notify.email_events (id, org_id, email_type, recipient, status, created_at) "
                "VALUES (%s, %s, 'booking_confirmed', 'x@example.com', %s, %s)",
                (uuid.uuid4(), org_id, status, yesterday_noon),
            )
        conn.execute(
            "INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, status) "
            "VALUES (%s, %s, 'email', 'test:dead', %s, 'dead')",
            (uuid.uuid4(), org_id, Jsonb({})),
        )
        conn.execute(
            "INSERT INTO notify.feature_toggles (org_id, key, enabled) VALUES (%s, %s, true)",
            (org_id, "module.notifications_center"),
        )
        conn.execute(
            "INSERT INTO notify.notifications_digest_settings (org_id, digest_key, schedule, recipients) "
            "VALUES (%s, 'ops', 'daily', %s)",
            (org_id, Jsonb([mailbox()])),
        )

    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    try:
        first = await digests.run(db, peers, org_id, "daily", now=first_run)
        later_that_day = await digests.run(db, peers, org_id, "daily", now=first_run + timedelta(hours=20))
        next_day = await digests.run(db, peers, org_id, "daily", now=first_run + timedelta(days=1))
    finally:
        await db.dispose()
    assert (first.sent, later_that_day.sent, later_that_day.already_sent, next_day.sent) == (1, 0, 1, 1)

    rows = outbox(stack.admin_url, org.org_id, "digest:ops:")
    assert len(rows) == 2
    texts = {row["dedupe_key"].split(":")[2]: row["payload"]["text"] for row in rows}
    today, yesterday, tomorrow = (
        day.isoformat(),
        (day - timedelta(days=1)).isoformat(),
        (day + timedelta(days=1)).isoformat(),
    )
    first_text = texts[today]
    assert f"Emails sent in {yesterday}: 3" in first_text
    assert f"Emails failed or bounced in {yesterday}: 2" in first_text
    assert "Sends waiting in the dead-letter queue: 1" in first_text
    assert f"Confirmed bookings from now to the end of {today}: 1" in first_text
    assert f"Emails sent in {today}: 0" in texts[tomorrow]
    assert f"Confirmed bookings from now to the end of {tomorrow}: 1" in texts[tomorrow]


async def test_a_digest_waits_while_iam_cannot_tell_the_org_zone(peers_without_iam, stack, make_org):
    """Its period is a day in the org's zone: taken in UTC instead, it could go out on the wrong day,
    or twice. So nothing is sent, nothing is marked sent, and the runner's next call tries again."""
    org = await make_org("Away Digest Org", "Pacific/Auckland")
    org_id = uuid.UUID(org.org_id)
    with psycopg.connect(stack.admin_url) as conn:
        conn.execute(
            "INSERT INTO notify.feature_toggles (org_id, key, enabled) VALUES (%s, %s, true)",
            (org_id, "module.notifications_center"),
        )
        conn.execute(
            "INSERT INTO notify.notifications_digest_settings (org_id, digest_key, schedule, recipients) "
            "VALUES (%s, 'ops', 'daily', %s)",
            (org_id, Jsonb([mailbox()])),
        )
    await forget_org(stack.admin_url, org.org_id)
    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    try:
        with pytest.raises(OrgProfileUnavailable):
            await digests.run(db, peers_without_iam, org_id, "daily")
    finally:
        await db.dispose()
    assert outbox(stack.admin_url, org.org_id, "digest:") == []
    with psycopg.connect(stack.admin_url) as conn:
        state = conn.execute(
            "SELECT count(*) FROM notify.notifications_digest_state WHERE org_id = %s", (org_id,)
        ).fetchone()
    assert state == (0,)
