"""Usage counters and the drift they are checked for (services/billing/usage.py): months in the org's
zone, one counter row per event id under forced RLS, the recorded sums, and drift per metric."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from libs.common.db import Database, unit_of_work
from libs.common.errors import InvalidArgument
from libs.common.event_types import EventMeta
from services.billing import usage
from services.billing.models import SCHEMA, event_tables
from services.billing.subscriptions import Plan, Subscription

PLAN = Plan("free", "Free", 2, 30, 1024, 0, "CAD")


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=4)
    yield database
    await database.dispose()


def meta(event_id: str = "") -> EventMeta:
    return EventMeta(
        id=event_id or str(uuid.uuid4()),
        subject="cws.booking.worker.added",
        org_id="",
        request_id="test",
        time=datetime.now(UTC),
    )


def test_a_month_is_its_calendar_month_in_the_orgs_zone() -> None:
    toronto = usage.parse_month("2026-03", "America/Toronto")
    # DST starts on 8 March: the month starts at 05:00 UTC and ends at 04:00 UTC.
    assert (toronto.start, toronto.end) == (
        datetime(2026, 3, 1, 5, tzinfo=UTC),
        datetime(2026, 4, 1, 4, tzinfo=UTC),
    )
    december = usage.parse_month("2026-12", "UTC")
    assert (december.label, december.end) == ("2026-12", datetime(2027, 1, 1, tzinfo=UTC))
    # Empty: the current month there, which at 02:00 UTC on 1 May is still April in Edmonton.
    now = datetime(2026, 5, 1, 2, tzinfo=UTC)
    assert usage.parse_month("", "America/Edmonton", now).label == "2026-04"
    assert usage.parse_month("", "Not/A_Zone", now).time_zone == "UTC"


@pytest.mark.parametrize(
    "bad", ["2026-13", "2026-00", "2026-1", "202-01", "2026/01", "x", "1999-12", "9999-12"]
)
def test_a_malformed_month_names_the_format(bad: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        usage.parse_month(bad, "UTC")
    [violation] = raised.value.violations
    assert violation.field == "month" and "YYYY-MM" in violation.description


def test_drift_is_any_difference_and_unchecked_metrics_never_drift() -> None:
    month = usage.parse_month("2026-03", "UTC")
    counters = {"workers": 3, "bookings": 30, "storage_bytes": 2048}
    found = usage.report(
        month,
        Subscription(PLAN, "active"),
        counters,
        active_workers=3,
        bookings_created=31,
        stored_bytes=None,
        storage_not_checked=usage.STORAGE_UNAVAILABLE,
    )
    workers, bookings, storage = found.metrics
    assert storage.not_checked_reason == usage.STORAGE_UNAVAILABLE
    assert (workers.drift_detected, workers.over_limit, workers.difference) == (False, True, 0)
    assert (bookings.drift_detected, bookings.difference, bookings.used, bookings.over_limit) == (
        True,
        -1,
        31,
        True,
    )
    assert (storage.checked, storage.drift_detected, storage.used, storage.over_limit) == (
        False,
        False,
        2048,
        True,
    )
    assert found.drift_detected


def test_stored_bytes_media_answered_are_checked_and_used_for_the_limit() -> None:
    month = usage.parse_month("2026-03", "UTC")
    counters = {"workers": 0, "bookings": 0, "storage_bytes": 700}
    found = usage.report(
        month, Subscription(PLAN, "active"), counters, active_workers=0, bookings_created=0, stored_bytes=1000
    )
    storage = found.metrics[2]
    assert (storage.checked, storage.not_checked_reason, storage.difference, storage.used) == (
        True,
        "",
        -300,
        1000,
    )
    assert storage.drift_detected and found.drift_detected and not storage.over_limit


async def test_an_event_is_counted_once_and_sums_follow_the_month(db: Database) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    march = usage.parse_month("2026-03", "UTC")
    in_march, in_april = datetime(2026, 3, 31, 23, 59, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    once = meta()
    async with unit_of_work(db, org) as uow:
        assert await usage.record(uow, "workers", 1, subject_id="w1", meta=once, occurred_at=in_march)
        assert not await usage.record(uow, "workers", 1, subject_id="w1", meta=once, occurred_at=in_march)
        await usage.record(uow, "workers", 1, subject_id="w2", meta=meta(), occurred_at=in_april)
        await usage.record(uow, "workers", -1, subject_id="w2", meta=meta(), occurred_at=in_april)
        await usage.record(uow, "bookings", 1, subject_id="b1", meta=meta(), occurred_at=in_march)
        await usage.record(uow, "bookings", 1, subject_id="b2", meta=meta(), occurred_at=in_april)
    async with unit_of_work(db, other) as uow:
        # The same event id in another org is that org's own event.
        assert await usage.record(uow, "bookings", 1, subject_id="b9", meta=once, occurred_at=in_march)
    async with unit_of_work(db, org) as uow:
        assert await usage.recorded(uow, march) == {"workers": 1, "bookings": 1, "storage_bytes": 0}
    async with unit_of_work(db, other) as uow:
        assert await usage.recorded(uow, march) == {"workers": 0, "bookings": 1, "storage_bytes": 0}
    async with unit_of_work(db, uuid.uuid4()) as uow:
        assert await usage.recorded(uow, march) == dict.fromkeys(usage.METRICS, 0)
