"""Notify's view of an org: the name its emails come from and the time zone they show times in.

Filled from IAM's cws.iam.org.created event. An org notify has not heard of yet (the org event still
on its way, or notify started after a stream was trimmed) is looked up once in IAM and remembered;
if IAM cannot answer either, UTC is used for this one email (every time an email shows names its
zone, so the text is never wrong, only less convenient)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cws.iam.v1 import events_pb2 as iam_events
from cws.iam.v1 import iam_pb2
from nats.aio.msg import Msg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import UnitOfWork
from libs.common.logs import get_logger
from services.notify.models import org_profiles
from services.notify.peers import Peers

log = get_logger(__name__)


@dataclass(frozen=True)
class OrgProfile:
    name: str
    time_zone: str

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.time_zone)


DEFAULT = OrgProfile(name="", time_zone="UTC")


def zone(name: str) -> ZoneInfo:
    """The org's zone, or UTC for a name this machine's tz database does not know."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def save(uow: UnitOfWork, *, name: str, time_zone: str) -> None:
    assert uow.org_id is not None
    values = {"name": name[:200], "time_zone": (time_zone or "UTC")[:64]}
    await uow.session.execute(
        pg_insert(org_profiles)
        .values(org_id=uow.org_id, **values)
        .on_conflict_do_update(
            index_elements=[org_profiles.c.org_id], set_={**values, "updated_at": func.now()}
        )
    )


async def profile(uow: UnitOfWork, peers: Peers | None = None) -> OrgProfile:
    """The org of this unit of work; asks IAM (and remembers the answer) when notify has no row yet."""
    assert uow.org_id is not None
    row = (
        await uow.session.execute(
            select(org_profiles.c.name, org_profiles.c.time_zone).where(org_profiles.c.org_id == uow.org_id)
        )
    ).first()
    if row is not None:
        return OrgProfile(row.name, row.time_zone)
    if peers is None:
        return DEFAULT
    found = await _ask_iam(peers, uow.org_id)
    if found is None:
        return DEFAULT
    await uow.session.execute(
        pg_insert(org_profiles)
        .values(org_id=uow.org_id, name=found.name[:200], time_zone=found.time_zone[:64])
        .on_conflict_do_nothing(index_elements=[org_profiles.c.org_id])
    )
    return found


async def _ask_iam(peers: Peers, org_id: uuid.UUID) -> OrgProfile | None:
    # ListOrgs pages by id: the page of one right after (id - 1) is this org, if it exists.
    before = uuid.UUID(int=org_id.int - 1) if org_id.int else org_id
    try:
        page = await peers.call_iam(
            "ListOrgs", iam_pb2.ListOrgsRequest(after_org_id=str(before), limit=1), str(org_id)
        )
    except Exception as exc:  # IAM down: the email goes out in UTC rather than not at all
        log.warning("org_profile_lookup_failed", org_id=str(org_id), error=str(exc))
        return None
    if not page.orgs or page.orgs[0].org_id != str(org_id):
        return None
    return OrgProfile(page.orgs[0].name, page.orgs[0].time_zone or "UTC")


async def on_org_created(uow: UnitOfWork, message: Msg) -> None:
    """Consumer of cws.iam.org.created."""
    event = iam_events.OrgCreated.FromString(message.data)
    if uow.org_id is None or str(uow.org_id) != event.org_id:
        await uow.set_org(uuid.UUID(event.org_id))
    await save(uow, name=event.name, time_zone=event.time_zone)
