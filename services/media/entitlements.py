"""Whether an org may upload photos, as its subscription allows (seed 002 "Pause/resume playbook").

While the org is paused, uploading photos is refused with FAILED_PRECONDITION `subscription_paused`;
reads, reviews and deletes go on. The gate, its table's rules and the event ordering are
libs/common/entitlements.py's, shared with booking."""

from __future__ import annotations

from cws.billing.v1 import events_pb2 as billing_events

from libs.common import entitlements
from libs.common.db import UnitOfWork
from libs.common.event_types import EventMeta
from services.media.models import org_entitlements


async def require_active(uow: UnitOfWork, what: str) -> None:
    """Refuse uploading `what` ("photos") while the org's subscription is paused."""
    await entitlements.require_active(uow, org_entitlements, f"uploading {what}")


async def on_subscription_changed(
    uow: UnitOfWork, message: billing_events.SubscriptionChanged, meta: EventMeta
) -> None:
    """Consumer of cws.billing.subscription.{paused,resumed}."""
    await entitlements.record_change(uow, org_entitlements, message, meta)
