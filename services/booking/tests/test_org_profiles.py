"""Booking's per-process cache of org profiles (time zone, currency) against the org.created event that
updates them: a reader must never keep the old time zone after the update has committed."""

from __future__ import annotations

import uuid
from typing import Any

from cws.iam.v1 import events_pb2 as iam_events
from nats.aio.msg import Msg

from libs.common.db import Database, unit_of_work
from services.booking import orgs
from services.booking.models import SCHEMA, event_tables


def org_created(org_id: uuid.UUID, time_zone: str) -> Msg:
    event = iam_events.OrgCreated(org_id=str(org_id), name="Paris Clean", time_zone=time_zone)
    return Msg(_client=None, subject="cws.iam.org.created", data=event.SerializeToString())  # type: ignore[arg-type]


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
            await orgs.on_org_created(event_work, org_created(org_id, "Europe/Paris"))
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
