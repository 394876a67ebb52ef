"""The paused-subscription gate, shared by every service that refuses creates while an org is paused
(booking: bookings and workers; media: photo uploads). Seed 002 "Pause/resume playbook".

Billing owns the subscription and announces each pause and resume (cws.billing.subscription.paused
and .resumed). Each gated service keeps the latest of them per org in its own `org_entitlements` table
(org_id, paused, changed_at, updated_at; RLS forced), so a create asks its own database, in its own
transaction, instead of calling billing on every write.

Ordering: each event carries the time of the change (billing makes it grow with every change of an
org), and a row keeps the time of the event it reflects. An event no newer than that is ignored, so a
pause delivered after the resume that followed it cannot pause the org again. An org with no row has
never been paused: it is active.

The check reads the row FOR SHARE: a pause arriving meanwhile waits for the create to commit (and the
create that started first wins), rather than the two interleaving.

The event's message is billing's; this module reads only the three fields it needs (a Protocol), so
libs/common stays free of any service's contract."""

from __future__ import annotations

import uuid
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import from_ts_or_none
from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition
from libs.common.event_types import EventMeta
from libs.common.logs import get_logger

log = get_logger(__name__)

PAUSED = "paused"


class SubscriptionChange(Protocol):
    """What the gate reads of cws.billing.v1.SubscriptionChanged."""

    @property
    def org_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def occurred_at(self) -> Timestamp: ...


async def require_active(uow: UnitOfWork, table: Table, refused: str) -> None:
    """Refuse with FAILED_PRECONDITION `subscription_paused` (409 at the gateway) while the org of the
    unit of work is paused; `refused` says what, e.g. "creating bookings"."""
    paused = (
        await uow.session.execute(
            select(table.c.paused).where(table.c.org_id == uow.org_id).with_for_update(read=True)
        )
    ).scalar_one_or_none()
    if paused:
        raise FailedPrecondition(
            f"the organisation's subscription is paused: {refused} is refused until it is resumed "
            "(an owner, admin or finance user: POST /v1/billing/resume); everything can still be read",
            code="subscription_paused",
        )


async def record_change(uow: UnitOfWork, table: Table, message: SubscriptionChange, meta: EventMeta) -> None:
    """The consumer's work for cws.billing.subscription.{paused,resumed}: the org's paused flag, unless
    the stored one comes from a newer event."""
    org_id = uuid.UUID(message.org_id)
    if uow.org_id != org_id:  # the consumer set the org from the event's header; the payload's wins
        await uow.set_org(org_id)
    # An event without its time (none billing sends) is ordered by when it was published.
    changed_at = from_ts_or_none(message.occurred_at) or meta.time
    paused = message.status == PAUSED
    statement = pg_insert(table).values(org_id=org_id, paused=paused, changed_at=changed_at)
    applied = (
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.org_id],
                set_={"paused": paused, "changed_at": changed_at, "updated_at": func.now()},
                where=table.c.changed_at < statement.excluded.changed_at,
            ).returning(table.c.org_id)
        )
    ).first()
    fields = {"event_id": meta.id, "org_id": message.org_id, "status": message.status}
    if applied is None:
        log.info("subscription_change_outdated", occurred_at=changed_at.isoformat(), **fields)
        return
    log.info("subscription_change_applied", **fields)
