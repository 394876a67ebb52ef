"""Media's events as code: what it publishes (subject paired with message type) and what it consumes.

Published events leave through the outbox: `uow.add_event(PHOTO_STORED, message)` writes them in the
transaction that wrote the photo's row. Consumed events are re-declared here exactly as their producer
declares them (services never import each other; tests/test_event_catalogue.py keeps the two equal)."""

from __future__ import annotations

from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from cws.media.v1 import events_pb2 as media_events

from libs.common.event_types import Consumer, Event, audit_event
from services.media import entitlements

# --- published ----------------------------------------------------------------------------------

PHOTO_STORED = Event(
    "cws.media.photo.stored",
    media_events.PhotoStored,
    doc="a job photo was stored (its object written, its row committed); bytes count toward the org's storage",
)
PHOTO_DELETED = Event(
    "cws.media.photo.deleted",
    media_events.PhotoDeleted,
    doc="a job photo was deleted and tombstoned; the storage janitor removes its object from the backend",
)
# Raised by the unit of work for every admin write (Database(audit_admin_writes=True)), not by a module.
AUDIT_RECORDED = audit_event("media")

PUBLISHED: tuple[Event[Any], ...] = (PHOTO_STORED, PHOTO_DELETED, AUDIT_RECORDED)

# --- consumed -----------------------------------------------------------------------------------

BILLING_SUBSCRIPTION_PAUSED = Event(
    "cws.billing.subscription.paused",
    billing_events.SubscriptionChanged,
    doc="an org's subscription was paused (reason code given); creating bookings, workers and photos stops",
)
BILLING_SUBSCRIPTION_RESUMED = Event(
    "cws.billing.subscription.resumed",
    billing_events.SubscriptionChanged,
    doc="an org's paused subscription was resumed (reason code given); creating work is allowed again",
)

# Unannotated, so that mypy checks each handler against its event's message type.
CONSUMERS = (
    Consumer(
        "media-subscription-paused",
        BILLING_SUBSCRIPTION_PAUSED,
        entitlements.on_subscription_changed,
        doc="the org marked paused: photo uploads refused (an older event than the last is ignored)",
    ),
    Consumer(
        "media-subscription-resumed",
        BILLING_SUBSCRIPTION_RESUMED,
        entitlements.on_subscription_changed,
        doc="the org marked active again (an event older than the last one applied is ignored)",
    ),
)
