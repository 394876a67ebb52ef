"""Booking's per-process cache of org profiles (time zone, currency) against the org.created event that
updates them: a reader must never keep the old time zone after the update has committed, on the replica
whose consumer applied the event nor on any other."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cws.booking.v1 import booking_pb2, booking_pb2_grpc
from cws.iam.v1 import events_pb2 as iam_events

from libs.common import context as request_context
from libs.common.bus import event_headers
from libs.common.db import Database, unit_of_work
from libs.common.event_types import EventMeta
from services.booking import orgs
from services.booking.events import IAM_ORG_CREATED
from services.booking.models import SCHEMA, event_tables
from services.booking.tests.helpers import applied_profile
from tools.processes import ServiceProc, service_proc
from tools.testkit import eventually, signed, signing_channel


def org_created(org_id: uuid.UUID | str, time_zone: str, name: str = "Paris Clean") -> iam_events.OrgCreated:
    return iam_events.OrgCreated(org_id=str(org_id), name=name, time_zone=time_zone)


def meta_for(org_id: uuid.UUID) -> EventMeta:
    return EventMeta(
        id=str(uuid.uuid4()),
        subject=IAM_ORG_CREATED.subject,
        org_id=str(org_id),
        request_id="",
        time=datetime.now(UTC),
    )


async def test_a_read_while_the_org_event_commits_never_caches_the_old_time_zone(
    stack: Any, booking: Any
) -> None:
    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    org_id = uuid.uuid4()
    try:
        # A request before the event: the profile is created with defaults (UTC) and cached.
        async with unit_of_work(db, org_id) as uow:
            assert (await orgs.profile(uow)).time_zone == "UTC"
        # The event has written Europe/Paris but not committed yet; a request reads meanwhile.
        async with unit_of_work(db, org_id) as event_work:
            await orgs.on_org_created(event_work, org_created(org_id, "Europe/Paris"), meta_for(org_id))
            async with unit_of_work(db, org_id) as request:
                assert (await orgs.profile(request)).time_zone == "UTC"  # still the committed truth
        async with unit_of_work(db, org_id) as uow:
            assert (await orgs.profile(uow)).time_zone == "Europe/Paris"
    finally:
        await db.dispose()


def test_a_read_that_began_before_a_change_is_not_kept() -> None:
    cache = orgs.ProfileCache()
    org_id = uuid.uuid4()
    old = orgs.OrgProfile(org_id, "UTC", "CAD")
    began = cache.generation  # a reader starts, and reads the old row
    cache.forget(org_id)  # the update commits meanwhile
    cache.keep(old, began)  # the reader would now remember what it read
    assert cache.get(org_id) is None
    cache.keep(orgs.OrgProfile(org_id, "Europe/Paris", "CAD"), cache.generation)
    assert cache.get(org_id) == orgs.OrgProfile(org_id, "Europe/Paris", "CAD")


def test_an_announced_change_is_not_cached_before_it_has_committed() -> None:
    """The broadcast reaches this replica when IAM publishes, maybe before the replica whose consumer
    took the event has committed it: a read in between sees the old row, serves it, but keeps it not."""
    cache = orgs.ProfileCache()
    org_id = uuid.uuid4()
    cache.keep(orgs.OrgProfile(org_id, "UTC", "CAD"), cache.generation)
    cache.expect(org_id, "Europe/Paris")
    assert cache.get(org_id) is None
    cache.keep(orgs.OrgProfile(org_id, "UTC", "CAD"), cache.generation)  # read before the commit
    assert cache.get(org_id) is None
    paris = orgs.OrgProfile(org_id, "Europe/Paris", "CAD")
    cache.keep(paris, cache.generation)  # read after it
    assert cache.get(org_id) == paris and org_id not in cache.awaited


def test_a_change_that_never_commits_stops_holding_the_cache_back() -> None:
    cache = orgs.ProfileCache(await_seconds=0)
    org_id = uuid.uuid4()
    cache.expect(org_id, "Europe/Paris")  # its event parked as a dead letter, say
    utc = orgs.OrgProfile(org_id, "UTC", "CAD")
    cache.keep(utc, cache.generation)
    assert cache.get(org_id) == utc


# --- two replicas --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(stack: Any, iam: ServiceProc) -> Iterator[list[ServiceProc]]:
    """Two booking processes on one database and one NATS, as deploy/k8s runs booking (replicas: 2);
    each on its own ports. They share the durable org.created consumer (with the session's booking,
    if it runs): each event reaches one of them only."""
    logs = stack.work_dir / "logs"
    procs = [service_proc("booking", stack.env(), logs, label=f"booking-replica-{n}") for n in (1, 2)]
    for proc in procs:
        proc.start()
    try:
        yield [proc.wait_ready() for proc in procs]
    finally:
        for proc in procs:
            proc.stop()


async def announce(stack: Any, message: iam_events.OrgCreated) -> None:
    """cws.iam.org.created as IAM's outbox relay publishes it: same stream, same headers, same user."""
    nc = await stack.nats.connect_as("iam")
    try:
        event_id = str(uuid.uuid4())
        headers = event_headers(
            event_id,
            IAM_ORG_CREATED.subject,
            "iam",
            datetime.now(UTC),
            message.org_id,
            f"test-{event_id[:8]}",
        )
        await nc.jetstream().publish(IAM_ORG_CREATED.subject, message.SerializeToString(), headers=headers)
    finally:
        await nc.close()


async def test_every_replica_serves_a_changed_time_zone_long_before_its_cache_expires(
    replicas: list[ServiceProc], stack: Any, make_org: Any
) -> None:
    name = f"Two Replicas {uuid.uuid4().hex[:6]}"
    org = await make_org(name, time_zone="UTC")
    key, time_zone, _ = await applied_profile(stack, org.org_id)
    assert time_zone == "UTC"
    public = request_context.RequestContext(request_id=f"test-{uuid.uuid4().hex[:12]}")
    channels = [signing_channel(proc.target) for proc in replicas]
    try:
        stubs = [booking_pb2_grpc.BookingServiceStub(channel) for channel in channels]

        async def zones() -> list[str]:
            request = booking_pb2.ResolvePublicOrgRequest(org_key=key)
            return [
                (await stub.ResolvePublicOrg(request, metadata=signed(public))).time_zone for stub in stubs
            ]

        # Both replicas now hold the profile in their cache (for 60 s).
        assert await zones() == ["UTC", "UTC"]
        await announce(stack, org_created(org.org_id, "Europe/Paris", name))

        async def both_moved() -> bool:
            assert await zones() == ["Europe/Paris", "Europe/Paris"]
            return True

        await eventually(both_moved, timeout=15, message="both replicas serve the org's new time zone")
        # And once moved, no replica goes back to the old one.
        assert await zones() == ["Europe/Paris", "Europe/Paris"]
    finally:
        for channel in channels:
            await channel.close()
