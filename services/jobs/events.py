"""The jobs service's events: it publishes none and consumes none.

Its tables describe the scheduler itself (heartbeats, runs, job status), not any org's data, and its
process does not raise the admin audit event (ServiceApp's audit_admin_writes is off): the writes a
job causes are made, and audited, by the services it calls (booking, notify). A job that comes to
publish something declares its Event here and lists it in PUBLISHED."""

from __future__ import annotations

from typing import Any

from libs.common.event_types import Consumer, Event

PUBLISHED: tuple[Event[Any], ...] = ()

CONSUMERS: tuple[Consumer[Any], ...] = ()
