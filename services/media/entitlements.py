"""Whether an org may upload photos, as its subscription allows (seed 002 "Pause/resume playbook").

The same rule and code shape as services/booking/entitlements.py: billing announces each pause and
resume (cws.billing.subscription.paused and .resumed); media keeps the latest of them per org in its
own `org_entitlements`, so an upload asks its own database, in its own transaction, instead of calling
billing. While paused, uploading photos is refused with FAILED_PRECONDITION `subscription_paused` (409
at the gateway); reads, reviews and deletes go on.

Ordering: each event carries the time of the change (billing makes it grow with every change of an
org), and a row keeps the time of the event it reflects. An event no newer than that is ignored, so a
pause delivered after the resume that followed it cannot pause the org again. An org with no row has
never been paused: it is active.

The check reads the row FOR SHARE: a pause arriving meanwhile waits for the create to commit (and the
create that started first wins), rather than the two interleaving."""

from __future__ import annotations

import uuid

from cws.billing.v1 import events_pb2 as billing_events
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import from_ts_or_none
from libs.common.db import UnitOfWork
from libs.common.errors import FailedPrecondition
from libs.common.event_types import EventMeta
from libs.common.logs import get_logger
from services.media.models import org_entitlements

log = get_logger(__name__)

PAUSED = "paused"


async def require_active(uow: UnitOfWork, what: str) -> None:
    """Refuse uploading `what` ("photos") while the org's subscription is paused."""
    paused = (
        await uow.session.execute(
            select(org_entitlements.c.paused)
            .where(org_entitlements.c.org_id == uow.org_id)
            .with_for_update(read=True)
        )
    ).scalar_one_or_none()
    if paused:
        raise FailedPrecondition(
            f"the organisation's subscription is paused: uploading {what} is refused until it is resumed "
            "(an owner, admin or finance user: POST /v1/billing/resume); everything can still be read",
            code="subscription_paused",
        )


async def on_subscription_changed(
    uow: UnitOfWork, message: billing_events.SubscriptionChanged, meta: EventMeta
) -> None:
    """Consumer of cws.billing.subscription.{paused,resumed}: the org's paused flag, unless the stored
    one comes from a newer event."""
    org_id = uuid.UUID(message.org_id)
    if uow.org_id != org_id:  # the consumer set the org from the event's header; the payload's wins
        await uow.set_org(org_id)
    # An event without its time (none billing sends) is ordered by when it was published.
    changed_at = from_ts_or_none(message.occurred_at) or meta.time
    paused = message.status == PAUSED
    statement = pg_insert(org_entitlements).values(org_id=org_id, paused=paused, changed_at=changed_at)
    applied = (
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[org_entitlements.c.org_id],
                set_={"paused": paused, "changed_at": changed_at, "updated_at": func.now()},
                where=org_entitlements.c.changed_at < statement.excluded.changed_at,
            ).returning(org_entitlements.c.org_id)
        )
    ).first()
    fields = {"event_id": meta.id, "org_id": message.org_id, "status": message.status}
    if applied is None:
        log.info("subscription_change_outdated", occurred_at=changed_at.isoformat(), **fields)
        return
    log.info("subscription_change_applied", **fields)
