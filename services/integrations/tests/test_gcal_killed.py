"""gcal-sync when the process running a pass is killed (SIGKILL) right after Google made an event and
before the pass recorded it: the next pass, by another process, makes no second event.

A second integrations process of its own (the session's one serves the other tests) runs the first
pass; the fake answers inserts after a delay, so the test can kill the process in between."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
from cws.booking.v1 import booking_pb2
from cws.integrations.v1 import integrations_pb2 as pb

from conftest import integrations_env
from services.integrations.tests.helpers import stub
from services.integrations.tests.test_gcal_sync import at, channels, connected  # noqa: F401 - fixtures
from tools.processes import service_proc
from tools.testkit import eventually, signing_channel, sql


async def test_a_pass_killed_after_google_made_an_event_makes_no_second_one(
    connected,  # noqa: F811 - the fixture
    stack: Any,
    iam: Any,
    booking: Any,
    billing: Any,
    notify: Any,
    fake_google: Any,
    fake_quickbooks: Any,
):
    org = await connected()
    made = [await org.make_booking(at(48 + 4 * i), f"Client {i}") for i in range(3)]
    env = integrations_env(
        stack, iam, booking, billing, notify, fake_google.base_url, fake_quickbooks.base_url
    )
    doomed = service_proc("integrations", env, stack.work_dir / "logs-killed").start()
    try:
        await doomed.wait_ready_async()
        await fake_google.acontrol("delay", {"method": "insert", "seconds": 30})
        async with signing_channel(doomed.target) as channel:
            running = asyncio.ensure_future(
                stub(channel).SyncGoogleCalendar(
                    pb.SyncGoogleCalendarRequest(force=True), metadata=org.user.md()
                )
            )

            async def first_insert_done() -> bool:
                calls = (await fake_google.acontrol("calls", method="GET"))["calls"]
                return any(c["operation"] == "events.insert" and c.get("done") for c in calls)

            await eventually(first_insert_done, message="the doomed pass's first insert reached Google")
            doomed.kill()
            try:
                await running
            except grpc.aio.AioRpcError:
                pass  # the caller sees the process die
    finally:
        doomed.kill()
        await fake_google.acontrol("clear-faults")

    assert len(await org.events()) == 1
    rows = await sql(
        stack.admin_url, "SELECT count(*) FROM integrations.gcal_events WHERE org_id = %s", (org.org_id,)
    )
    assert rows[0][0] == 0  # killed before it recorded anything

    counts = await org.sync()
    assert counts["events_recovered"] == 1 and counts["events_created"] == 2
    events = await org.events()
    assert set(events) == {uuid.UUID(b.id).hex for b in made}
    listed = await org.booking.ListBookings(booking_pb2.ListBookingsRequest(), metadata=org.owner)
    assert listed.total == 3
