"""Integrations' events: it publishes no domain event and consumes none.

Its event tables exist because every service has them (ServiceApp's relay reads the outbox), and its
admin writes (connect, choose a calendar, disconnect) raise the audit event through the unit of work
(Database(audit_admin_writes=True)), which iam turns into admin_audit_logs."""

from __future__ import annotations

from typing import Any

from libs.common.event_types import Consumer, Event, audit_event

# Raised by the unit of work for every admin write, not by a module.
AUDIT_RECORDED = audit_event("integrations")

PUBLISHED: tuple[Event[Any], ...] = (AUDIT_RECORDED,)

CONSUMERS: tuple[Consumer[Any], ...] = ()
