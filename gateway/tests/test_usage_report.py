"""The usage report through the gateway, in front of the real booking and billing processes and NATS:
workers and bookings made at the gateway become usage counters (booking's events, billing's
consumers), the report checks them against booking's own counts (and stored bytes against media's:
test_photo_usage.py), and a lost or duplicated event shows up as drift. Also: the month filter in the org's time zone, bad months, roles, other orgs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cws.booking.v1 import events_pb2 as booking_events

from libs.common.bus import event_headers
from libs.common.convert import to_ts
from tools import testkit
from tools.testkit import assert_problem, eventually, sql

REPORT = "/v1/billing/usage/report"
METRICS = ("workers", "bookings", "storage_bytes")


async def report(http: httpx.AsyncClient, url: str, headers: dict[str, str], **params: str) -> dict[str, Any]:
    response = await http.get(f"{url}{REPORT}", headers=headers, params=params)
    testkit.assert_clean(response)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def settled(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    expect: Callable[[dict[str, Any]], bool],
    what: str,
    **params: str,
) -> dict[str, Any]:
    """The report once `expect` holds (the events reach billing asynchronously)."""

    async def check() -> dict[str, Any]:
        seen = await report(http, url, headers, **params)
        assert expect(seen), f"{what}: {seen}"
        return seen

    return await eventually(check, timeout=30, message=what)


def recorded_as(workers: int, bookings: int) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["recorded"]["workers"] == workers and r["recorded"]["bookings"] == bookings


async def create_booking(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], *, client_email: str
) -> dict[str, Any]:
    """A pending booking two days out, made by a dispatcher at the gateway."""
    starts = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    body = {
        "starts_at": starts.isoformat(),
        "duration_minutes": 120,
        "client_name": "Casey Client",
        "client_email": client_email,
        "cleaning_type": "standard",
        "beds": 2,
        "baths": 1,
    }
    response = await http.post(f"{url}/v1/admin/bookings", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_worker(http: httpx.AsyncClient, url: str, headers: dict[str, str], name: str) -> str:
    created = await http.post(f"{url}/v1/admin/workers", headers=headers, json={"name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def set_active(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], worker: str, on: bool
) -> None:
    changed = await http.patch(f"{url}/v1/admin/workers/{worker}", headers=headers, json={"active": on})
    assert changed.status_code == 200, changed.text


async def delete_worker(http: httpx.AsyncClient, url: str, headers: dict[str, str], worker: str) -> None:
    deleted = await http.delete(f"{url}/v1/admin/workers/{worker}", headers=headers)
    assert deleted.status_code in (200, 204), deleted.text


def assert_no_drift(seen: dict[str, Any]) -> None:
    assert seen["drift_detected"] is False, seen
    for metric in METRICS:
        drift = seen["drift"][metric]
        assert drift["checked"] is True and drift["drift_detected"] is False, seen
        assert drift["recorded"] == drift["actual"] == seen[metric] and drift["difference"] == 0, seen


async def test_workers_and_bookings_are_counted_from_events_with_no_drift(gateway, http, make_org, stack):
    url = gateway.url
    headers = await testkit.owner(http, url, await make_org())
    empty = await report(http, url, headers)
    assert (empty["workers"], empty["bookings"], empty["storage_bytes"]) == (0, 0, 0)
    assert empty["month"] == datetime.now(UTC).strftime("%Y-%m")  # the org's zone is UTC
    assert empty["period"]["start"] == datetime.now(UTC).strftime("%Y-%m-01T00:00:00Z")

    workers = [await make_worker(http, url, headers, f"Worker {n}") for n in range(3)]
    for n in range(2):
        await create_booking(http, url, headers, client_email=f"usage-{n}@example.com")
    seen = await settled(http, url, headers, recorded_as(3, 2), "three workers and two bookings recorded")
    assert_no_drift(seen)
    assert (seen["workers"], seen["bookings"], seen["storage_bytes"]) == (3, 2, 0)
    assert seen["plan"] == {"code": "starter", "name": "Starter"}
    assert seen["limits"] == {"workers": 10, "bookings": 300, "storage_bytes": 25 * 1024**3}
    assert seen["overage"] == dict.fromkeys(METRICS, False)
    # Storage is checked against media's count (no photos: 0 on both sides); photos are in
    # gateway/tests/test_photo_usage.py.
    assert seen["drift"]["storage_bytes"] == {
        "recorded": 0,
        "actual": 0,
        "difference": 0,
        "drift_detected": False,
        "checked": True,
    }

    # Deactivate, reactivate, deactivate then delete (counted once), delete an active one.
    a, b, c = workers
    await set_active(http, url, headers, a, False)
    assert_no_drift(await settled(http, url, headers, recorded_as(2, 2), "a deactivated"))
    await set_active(http, url, headers, a, True)
    assert_no_drift(await settled(http, url, headers, recorded_as(3, 2), "a reactivated"))
    await set_active(http, url, headers, b, False)
    await set_active(http, url, headers, b, False)  # already inactive: no event, nothing counted
    await delete_worker(http, url, headers, b)
    await delete_worker(http, url, headers, c)
    await make_worker(http, url, headers, "Worker 4")  # a later event, proving the deletes were handled
    seen = await settled(http, url, headers, lambda r: r["drift"]["workers"]["actual"] == 2, "deletes")
    seen = await settled(http, url, headers, recorded_as(2, 2), "b counted off once, c once, one added")
    assert_no_drift(seen)
    rows = await sql(
        stack.admin_url,
        "SELECT delta FROM billing.usage_events WHERE subject_id = %s ORDER BY occurred_at",
        (b,),
    )
    assert [delta for (delta,) in rows] == [1, -1]


async def test_a_lost_event_and_a_duplicated_event_show_up_as_drift(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await testkit.owner(http, url, org)
    worker = await make_worker(http, url, headers, "Wren")
    await make_worker(http, url, headers, "Robin")
    first = await create_booking(http, url, headers, client_email="lost@example.com")
    await create_booking(http, url, headers, client_email="kept@example.com")
    assert_no_drift(await settled(http, url, headers, recorded_as(2, 2), "all recorded"))

    # A lost event: its counter row never written (deleted behind billing's back, as superuser).
    await sql(
        stack.admin_url,
        "DELETE FROM billing.usage_events WHERE org_id = %s AND subject_id = %s",
        (uuid.UUID(org.org_id), first["id"]),
    )
    seen = await report(http, url, headers)
    assert seen["drift_detected"] is True
    assert seen["drift"]["bookings"] == {
        "recorded": 1,
        "actual": 2,
        "difference": -1,
        "drift_detected": True,
        "checked": True,
    }
    assert seen["bookings"] == 2 and seen["recorded"]["bookings"] == 1
    assert seen["drift"]["workers"]["drift_detected"] is False

    # A duplicated event: booking's worker.added for the same worker, published again under another
    # event id (as a producer that wrote its outbox row twice would). Billing counts it: it is
    # another event, and the report shows the difference rather than hiding it.
    await publish_worker_added(stack, org.org_id, worker, event_id=str(uuid.uuid4()))
    seen = await settled(http, url, headers, lambda r: r["recorded"]["workers"] == 3, "duplicate counted")
    assert seen["drift"]["workers"] == {
        "recorded": 3,
        "actual": 2,
        "difference": 1,
        "drift_detected": True,
        "checked": True,
    }
    assert seen["workers"] == 2 and seen["drift_detected"] is True


async def test_a_redelivered_event_is_counted_once(gateway, http, make_org, stack):
    """The same event id delivered twice (a lost ack; the second copy passes JetStream's duplicate
    window): one counter row."""
    url = gateway.url
    org = await make_org()
    headers = await testkit.owner(http, url, org)
    worker = await make_worker(http, url, headers, "Wren")
    assert_no_drift(await settled(http, url, headers, recorded_as(1, 0), "the worker recorded"))
    event_id = str(uuid.uuid4())
    await publish_worker_added(stack, org.org_id, worker, event_id=event_id)
    await publish_worker_added(stack, org.org_id, worker, event_id=event_id)
    # Robin's event comes after both copies on the same stream: once it is counted, so are they.
    robin = await make_worker(http, url, headers, "Robin")

    async def robin_counted() -> bool:
        found = await sql(
            stack.admin_url, "SELECT 1 FROM billing.usage_events WHERE subject_id = %s", (robin,)
        )
        return bool(found)

    await eventually(robin_counted, timeout=30, message="Robin's worker.added counted")
    seen = await report(http, url, headers)
    assert seen["recorded"]["workers"] == 3, seen  # Wren, Robin, and the forged event once
    rows = await sql(
        stack.admin_url, "SELECT count(*) FROM billing.usage_events WHERE source_event = %s", (event_id,)
    )
    assert rows == [(1,)]


async def publish_worker_added(stack: Any, org_id: str, worker_id: str, *, event_id: str) -> None:
    """cws.booking.worker.added as booking's relay publishes it (booking's NATS user and headers), with
    a fresh Nats-Msg-Id so JetStream's duplicate window lets a repeated event id through."""
    message = booking_events.WorkerAdded(
        org_id=org_id, worker_id=worker_id, reason="created", occurred_at=to_ts(datetime.now(UTC))
    )
    subject = "cws.booking.worker.added"
    headers = event_headers(event_id, subject, "booking", datetime.now(UTC), org_id, "test")
    headers["Nats-Msg-Id"] = str(uuid.uuid4())
    nc = await stack.nats.connect_as("booking")
    try:
        await nc.jetstream().publish(subject, message.SerializeToString(), headers=headers)
    finally:
        await nc.close()


async def test_the_month_is_the_orgs_calendar_month(gateway, http, make_org, stack):
    """A booking made at 23:30 on 31 January in Toronto is January's there (February's in UTC), on
    both sides of the comparison: booking's count and billing's counter."""
    url = gateway.url
    org = await make_org(time_zone="America/Toronto")
    headers = await testkit.owner(http, url, org)
    late = await create_booking(http, url, headers, client_email="late@example.com")
    await create_booking(http, url, headers, client_email="now@example.com")
    current = datetime.now(ZoneInfo("America/Toronto")).strftime("%Y-%m")
    await settled(http, url, headers, recorded_as(0, 2), "two bookings recorded")

    # Move one booking's creation (and its counter, which carries the booking's created_at) into the
    # past, as superuser: the clock cannot be turned back for one row otherwise.
    at = datetime(2026, 1, 31, 23, 30, tzinfo=ZoneInfo("America/Toronto"))
    await sql(stack.admin_url, "UPDATE booking.bookings SET created_at = %s WHERE id = %s", (at, late["id"]))
    await sql(
        stack.admin_url,
        "UPDATE billing.usage_events SET occurred_at = %s WHERE subject_id = %s",
        (at, late["id"]),
    )
    january = await report(http, url, headers, month="2026-01")
    assert january["month"] == "2026-01" and january["time_zone"] == "America/Toronto"
    assert january["period"] == {"start": "2026-01-01T05:00:00Z", "end": "2026-02-01T05:00:00Z"}
    assert (january["bookings"], january["recorded"]["bookings"]) == (1, 1)
    assert_no_drift(january)
    february = await report(http, url, headers, month="2026-02")
    assert (february["bookings"], february["recorded"]["bookings"]) == (0, 0)
    assert_no_drift(february)
    default = await report(http, url, headers)
    assert default["month"] == current
    assert (default["bookings"], default["recorded"]["bookings"]) == (1, 1)
    assert default == await report(http, url, headers, month=current)


async def test_a_pending_booking_the_cleanup_deletes_leaves_its_month_on_both_sides(
    gateway, http, make_org, stack
):
    """The cleanup job deletes pending bookings nobody confirmed; booking says so
    (cws.booking.booking.deleted) and billing takes each off the month it was counted in, so the
    counter and booking's count stay equal rather than drifting apart."""
    url = gateway.url
    org = await make_org()
    headers = await testkit.owner(http, url, org)
    stale = await create_booking(http, url, headers, client_email="stale@example.com")
    await create_booking(http, url, headers, client_email="fresh@example.com")
    await settled(http, url, headers, recorded_as(0, 2), "two bookings recorded")
    # Made 25 hours ago (past PENDING_BOOKING_TTL_HOURS), on both sides, as superuser.
    made = datetime.now(UTC) - timedelta(hours=25)
    await sql(
        stack.admin_url, "UPDATE booking.bookings SET created_at = %s WHERE id = %s", (made, stale["id"])
    )
    await sql(
        stack.admin_url,
        "UPDATE billing.usage_events SET occurred_at = %s WHERE subject_id = %s",
        (made, stale["id"]),
    )
    cleaned = await http.post(f"{url}/v1/admin/cleanup", headers=headers)
    assert cleaned.status_code == 202 and cleaned.json() == {"deleted": 1}, cleaned.text
    # The stale booking's month: the fresh one is there too unless 25 hours ago was last month.
    month = made.strftime("%Y-%m")
    left = 1 if month == datetime.now(UTC).strftime("%Y-%m") else 0
    seen = await settled(http, url, headers, recorded_as(0, left), "the stale booking taken off", month=month)
    assert seen["bookings"] == left
    assert_no_drift(seen)
    rows = await sql(
        stack.admin_url,
        "SELECT delta, occurred_at FROM billing.usage_events WHERE subject_id = %s ORDER BY delta",
        (stale["id"],),
    )
    assert [delta for delta, _ in rows] == [-1, 1] and rows[0][1] == rows[1][1] == made


async def test_overage_flags_follow_the_plans_limits(gateway, http, make_org, stack):
    url = gateway.url
    org = await make_org()
    headers = await testkit.owner(http, url, org)
    # The Free plan (2 workers), set as superuser: the plan change route is not what is tested here.
    await sql(
        stack.admin_url,
        "INSERT INTO billing.org_subscriptions (org_id, plan_code) VALUES (%s, 'free')",
        (uuid.UUID(org.org_id),),
    )
    for n in range(2):
        await make_worker(http, url, headers, f"Worker {n}")
    at_limit = await settled(http, url, headers, recorded_as(2, 0), "two workers")
    assert at_limit["plan"]["code"] == "free" and at_limit["limits"]["workers"] == 2
    assert at_limit["overage"]["workers"] is False
    await make_worker(http, url, headers, "One too many")
    over = await settled(http, url, headers, recorded_as(3, 0), "three workers")
    assert over["overage"] == {"workers": True, "bookings": False, "storage_bytes": False}
    assert_no_drift(over)


async def test_a_malformed_month_is_a_422_that_names_the_format(gateway, http, make_org):
    url = gateway.url
    headers = await testkit.owner(http, url, await make_org())
    for bad in (
        "2026-13",
        "2026-00",
        "2026-1",
        "26-01",
        "2026/01",
        "abcd-ef",
        "1999-12",
        "2026-01-01",
        "x" * 40,
    ):
        body = assert_problem(await http.get(f"{url}{REPORT}", headers=headers, params={"month": bad}), 422)
        assert "month" in str(body), body
        if len(bad) <= 32:
            assert "YYYY-MM" in str(body), body


async def test_finance_admin_and_owner_may_read_it_viewer_and_dispatcher_may_not(gateway, http, make_org):
    url = gateway.url
    owner = await testkit.owner(http, url, await make_org())
    for role in ("FINANCE", "ADMIN"):
        staff = await testkit.staff(http, url, owner, role)
        assert (await http.get(f"{url}{REPORT}", headers=staff)).status_code == 200
    for role in ("VIEWER", "DISPATCHER"):
        staff = await testkit.staff(http, url, owner, role)
        assert_problem(await http.get(f"{url}{REPORT}", headers=staff), 403)
    assert_problem(await http.get(f"{url}{REPORT}"), 401)


async def test_another_orgs_activity_is_never_counted_nor_its_report_reachable(gateway, http, make_org):
    url = gateway.url
    mine, theirs = await make_org(), await make_org()
    me, them = await testkit.owner(http, url, mine), await testkit.owner(http, url, theirs)
    await make_worker(http, url, them, "Theirs")
    await create_booking(http, url, them, client_email="theirs@example.com")
    await settled(http, url, them, recorded_as(1, 1), "their activity recorded")
    await make_worker(http, url, me, "Mine")
    seen = await settled(http, url, me, recorded_as(1, 0), "my worker recorded")
    assert (seen["workers"], seen["bookings"]) == (1, 0)
    assert_no_drift(seen)
    # No parameter names an org: whatever is asked for, the caller's org answers.
    other = await report(http, url, me, org_id=theirs.org_id)
    assert (other["workers"], other["bookings"], other["recorded"]) == (
        1,
        0,
        {"workers": 1, "bookings": 0, "storage_bytes": 0},
    )
