"""Notify's view of an org: the name its emails come from and the time zone they show times in.

Filled from IAM's cws.iam.org.created event. An org notify has not heard of yet (the org event still
on its way, or notify started after a stream was trimmed) is looked up once in IAM and remembered.

If IAM cannot be asked, nothing is guessed: `profile` raises OrgProfileUnavailable. An email that
shows a time in UTC because IAM was briefly away is wrong for a reader in Tokyo, and a digest whose
period is taken in UTC goes out on the wrong day or twice. Each caller waits for IAM instead:
- an event consumer's handler fails, its unit of work rolls back (no outbox row), and JetStream
  redelivers the event with backoff; after the last attempt it is parked as a dead letter an
  operator can replay, so the failure is visible rather than a quietly wrong email;
- RunDigests answers UNAVAILABLE; the jobs runner records that org as failed and runs the digest
  again on its next minute, when the period is still the right one.
An org IAM answers it does not know is a different case: IAM has spoken, and its emails carry no org
name and show times in UTC, named as such (every time an email shows names its zone)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from cws.iam.v1 import events_pb2 as iam_events
from cws.iam.v1 import iam_pb2
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.context import service_context
from libs.common.db import UnitOfWork
from libs.common.errors import Unavailable
from libs.common.event_types import EventMeta
from libs.common.grpc_client import acting_as
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


class OrgProfileUnavailable(Unavailable):
    """IAM could not be asked for an org notify has no profile of."""

    default_code = "org_profile_unavailable"


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


async def known(uow: UnitOfWork) -> OrgProfile | None:
    """The profile notify holds for the unit of work's org, if it has heard of it."""
    assert uow.org_id is not None
    row = (
        await uow.session.execute(
            select(org_profiles.c.name, org_profiles.c.time_zone).where(org_profiles.c.org_id == uow.org_id)
        )
    ).first()
    return OrgProfile(row.name, row.time_zone) if row is not None else None


async def profile(uow: UnitOfWork, peers: Peers) -> OrgProfile:
    """The org of this unit of work; asks IAM (and remembers the answer) when notify has no row yet.
    Raises OrgProfileUnavailable when IAM cannot answer (see the module's docstring for why)."""
    found = await known(uow)
    if found is not None:
        return found
    assert uow.org_id is not None
    asked = await _ask_iam(peers, uow.org_id)
    if asked is None:
        log.warning("org_profile_unknown_to_iam", org_id=str(uow.org_id))
        return DEFAULT
    await uow.session.execute(
        pg_insert(org_profiles)
        .values(org_id=uow.org_id, name=asked.name[:200], time_zone=asked.time_zone[:64])
        .on_conflict_do_nothing(index_elements=[org_profiles.c.org_id])
    )
    return asked


async def _ask_iam(peers: Peers, org_id: uuid.UUID) -> OrgProfile | None:
    # ListOrgs pages by id: the page of one right after (id - 1) is this org, if it exists.
    before = uuid.UUID(int=org_id.int - 1) if org_id.int else org_id
    request = iam_pb2.ListOrgsRequest(after_org_id=str(before), limit=1)
    try:
        with acting_as(service_context("notify", str(org_id))):
            page = await peers.iam.stub.ListOrgs(request)
    except grpc.aio.AioRpcError as error:
        raise OrgProfileUnavailable(
            f"the org's name and time zone could not be had from IAM ({error.code().name}); "
            "nothing is sent in a zone that may be wrong"
        ) from error
    if not page.orgs or page.orgs[0].org_id != str(org_id):
        return None
    return OrgProfile(page.orgs[0].name, page.orgs[0].time_zone or "UTC")


async def on_org_created(uow: UnitOfWork, event: iam_events.OrgCreated, meta: EventMeta) -> None:
    """Consumer of cws.iam.org.created: the org's name and time zone, for its emails and digests."""
    if uow.org_id is None or str(uow.org_id) != event.org_id:
        await uow.set_org(uuid.UUID(event.org_id))
    await save(uow, name=event.name, time_zone=event.time_zone)
