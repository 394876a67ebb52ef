"""Org profiles: the booking side of an org (public key, time zone, currency). Created from IAM's
cws.iam.org.created event, and lazily on first use so a request never waits for the event.

Every replica caches profiles for a minute; events.py feeds each replica's cache the org.created
broadcast, so a changed time zone is served everywhere as soon as it has committed."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass

from cws.iam.v1 import events_pb2 as iam_events
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common import context as request_context
from libs.common.db import UnitOfWork
from libs.common.errors import NotFound, PermissionDenied
from libs.common.event_types import EventMeta
from services.booking import pricing
from services.booking.models import org_profiles


@dataclass(frozen=True)
class OrgProfile:
    org_id: uuid.UUID
    time_zone: str
    currency: str


def public_key_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "org"
    return f"{slug}-{secrets.token_hex(3)}"


async def ensure_profile(
    uow: UnitOfWork, *, name: str = "", time_zone: str = "UTC", currency: str = "CAD", update: bool = False
) -> OrgProfile:
    """The org's profile and an active pricing config, creating defaults if the org is new here."""
    assert uow.org_id is not None
    statement = pg_insert(org_profiles).values(
        org_id=uow.org_id, name=name, public_key=public_key_for(name), time_zone=time_zone, currency=currency
    )
    if update:
        statement = statement.on_conflict_do_update(
            index_elements=[org_profiles.c.org_id], set_={"name": name, "time_zone": time_zone}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=[org_profiles.c.org_id])
    await uow.session.execute(statement)
    row = (await uow.session.execute(select(org_profiles).where(org_profiles.c.org_id == uow.org_id))).one()
    await pricing.ensure_default_config(uow, row.currency)
    return OrgProfile(row.org_id, row.time_zone, row.currency)


class ProfileCache:
    """A short per-process cache of profiles (time zones rarely change).

    Two rules keep it from serving an old time zone after a change:
    - A reader keeps what it read only if no profile was forgotten since it began: a read that started
      before an update committed may have seen the old row, and must not put it back after the update
      emptied the cache (`generation`).
    - Every replica hears of a change (the org.created broadcast) when IAM publishes it, which may be
      before the replica whose consumer took the event has committed it. Until a read shows the
      announced time zone, what is read is served but not kept (`awaited`); should the change never
      commit (its event parked as a dead letter), caching resumes after `await_seconds`.
    """

    def __init__(self, seconds: float = 60.0, await_seconds: float = 300.0) -> None:
        self.seconds = seconds
        self.await_seconds = await_seconds
        self.entries: dict[uuid.UUID, tuple[float, OrgProfile]] = {}
        self.awaited: dict[uuid.UUID, tuple[float, str]] = {}
        self.generation = 0

    def get(self, org_id: uuid.UUID) -> OrgProfile | None:
        cached = self.entries.get(org_id)
        return cached[1] if cached and cached[0] > time.monotonic() else None

    def keep(self, profile: OrgProfile, generation: int) -> None:
        if generation != self.generation:
            return
        now = time.monotonic()
        awaited = self.awaited.get(profile.org_id)
        if awaited is not None:
            until, time_zone = awaited
            if profile.time_zone != time_zone and until > now:
                return  # the announced change has not committed yet: read the row again next time
            del self.awaited[profile.org_id]
        self.entries[profile.org_id] = (now + self.seconds, profile)

    def forget(self, org_id: uuid.UUID) -> None:
        self.generation += 1
        self.entries.pop(org_id, None)

    def expect(self, org_id: uuid.UUID, time_zone: str) -> None:
        """A change to the org was announced: forget it, and keep none without `time_zone` for a while."""
        now = time.monotonic()
        self.forget(org_id)
        # Orgs this replica never reads would stay here for good: drop the stale ones on the way.
        self.awaited = {key: value for key, value in self.awaited.items() if value[0] > now}
        self.awaited[org_id] = (now + self.await_seconds, time_zone)


_cache = ProfileCache()


async def profile(uow: UnitOfWork) -> OrgProfile:
    """The org's profile for reads on the hot path: from the per-process cache, else one primary-key
    read, else created with defaults (with the org's default pricing config)."""
    assert uow.org_id is not None
    cached = _cache.get(uow.org_id)
    if cached is not None:
        return cached
    generation = _cache.generation
    row = (await uow.session.execute(select(org_profiles).where(org_profiles.c.org_id == uow.org_id))).first()
    found = OrgProfile(row.org_id, row.time_zone, row.currency) if row else await ensure_profile(uow)
    _cache.keep(found, generation)
    return found


async def resolve_public_org(uow: UnitOfWork, org_key: str) -> uuid.UUID:
    """The org a public request acts for: its public key, else the context's org (DEFAULT_ORG_ID)."""
    if org_key:
        found = (
            await uow.session.execute(text("SELECT org_id FROM booking.org_for_key(:key)"), {"key": org_key})
        ).first()
        if found is None:
            raise NotFound("unknown organisation key", code="unknown_org")
        return found.org_id  # type: ignore[no-any-return]
    ctx = request_context.current()
    if not ctx.org_id:
        raise PermissionDenied(
            "no organisation: send X-Org-Key or configure DEFAULT_ORG_ID", code="org_required"
        )
    return uuid.UUID(ctx.org_id)


def _time_zone(message: iam_events.OrgCreated) -> str:
    return message.time_zone or "UTC"


async def on_org_created(uow: UnitOfWork, message: iam_events.OrgCreated, meta: EventMeta) -> None:
    """Consumer of cws.iam.org.created (one replica takes each event): the org's booking profile and
    default pricing; sent again for an existing org, its new name and time zone."""
    org_id = uuid.UUID(message.org_id)
    await uow.set_org(org_id)
    await ensure_profile(uow, name=message.name, time_zone=_time_zone(message), update=True)
    # Forgotten once committed: until then, readers still see (and may cache) the old row.
    uow.on_commit(lambda: _cache.forget(org_id))


async def on_org_announced(message: iam_events.OrgCreated, meta: EventMeta) -> None:
    """Broadcast of cws.iam.org.created (every replica hears each event): this replica forgets its copy
    of the profile, and keeps none without the new time zone until the consumer's change commits."""
    _cache.expect(uuid.UUID(message.org_id), _time_zone(message))
