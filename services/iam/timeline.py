"""iam's share of a booking's or an invoice's timeline (issue 13, seed 002): the admin audit entries
recorded about it. No gRPC here.

Every audited admin write names the resource its request named first (libs/common/db._resource_of:
("booking", id) for AssignBooking, ("invoice", id) for an invoice's calls), so the entries of one
booking are the rows with that resource_type and resource_id, newest AUDIT_CAP first, read through
ix_admin_audit_logs_org_resource (migration 0007), one more row to tell the caller the rest was cut.

The booking or invoice belongs to booking or billing, not iam: an id iam holds nothing about (another
org's, under RLS, or one that does not exist) is an empty answer, never NotFound.

Entries hold no personal data outside `details`:
- the actor is a principal ("user:<id>", "service:jobs"); a principal that is a name or an email
  (a Basic Auth username, a portal client) goes into details["name"] / details["email"];
- before/after are what the writing service chose to record: they go under details["before"] and
  details["after"]. The gateway masks PII_KEYS at any depth for a VIEWER, so a "subject" or
  "client_email" in them is masked; an email address under another key (media's consent
  `granted_by`) is moved under "email" (flag_emails); free text under another key would not be
  masked (no service records any on a booking or an invoice today);
- a break-glass reason is free text, so it is not shown; `break_glass` says there was one."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from libs.common.db import Database, unit_of_work
from libs.common.privacy import PII_KEYS
from services.iam.models import AuditEntry, admin_audit_logs

SOURCE = "audit"
AUDIT_CAP = 100
# An address on its own (a principal), not an email inside a sentence.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
BOOKING = "booking"
INVOICE = "invoice"


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    summary: str
    actor: str
    id: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeline:
    entries: list[Entry]
    truncated: bool


def newest_entries(org_id: uuid.UUID, resource_type: str, resource_id: uuid.UUID) -> Select[Any]:
    """One more than AUDIT_CAP of the resource's entries, newest first (a test EXPLAINs it)."""
    return (
        select(admin_audit_logs)
        .where(
            admin_audit_logs.c.org_id == org_id,
            admin_audit_logs.c.resource_type == resource_type,
            admin_audit_logs.c.resource_id == str(resource_id),
        )
        .order_by(admin_audit_logs.c.created_at.desc(), admin_audit_logs.c.id.desc())
        .limit(AUDIT_CAP + 1)
    )


async def for_resource(
    db: Database, org_id: uuid.UUID, resource_type: str, resource_id: uuid.UUID
) -> Timeline:
    """The newest AUDIT_CAP audit entries about one booking or invoice of the org, newest first."""
    async with unit_of_work(db, org_id) as uow:
        rows = (await uow.session.execute(newest_entries(org_id, resource_type, resource_id))).all()
    entries = [_entry(AuditEntry.of(row)) for row in rows[:AUDIT_CAP]]
    return Timeline(entries=entries, truncated=len(rows) > AUDIT_CAP)


def _entry(row: AuditEntry) -> Entry:
    actor, who = actor_of(row.actor)
    details: dict[str, Any] = {
        "role": row.role,
        "auth_method": row.auth_method,
        "request_id": row.request_id,
        **who,
    }
    if row.before is not None:
        details["before"] = flag_emails(row.before)
    if row.after is not None:
        details["after"] = flag_emails(row.after)
    if row.break_glass_session_id is not None:
        details["break_glass"] = True
    summary = f"{row.action} by {row.role or 'unknown role'}"
    if row.break_glass_session_id is not None:
        summary += " under break-glass"
    return Entry(row.created_at, row.action, summary, actor, str(row.id), details)


def actor_of(principal: str) -> tuple[str, dict[str, str]]:
    """(the entry's actor, details to add). What audit rows hold as actor (the caller's principal id):
    a staff user's id (a JWT's user id, bare), "service:<name>", "basic:<username>" (a configured
    Basic Auth user, whose name may be a person's), "anonymous", and, should a portal user's write
    ever be audited, a client's email (a worker's id would read as a user's)."""
    if not principal or principal == "anonymous":
        return "anonymous", {}
    if "@" in principal:
        return "client", {"email": principal}
    try:
        return f"user:{uuid.UUID(principal)}", {}
    except ValueError:
        pass
    kind, _, name = principal.partition(":")
    if kind in ("service", "user") and name:
        return principal, {}
    if kind == "basic" and name:
        return "basic", {"name": name}
    return "unknown", {"name": principal}


def flag_emails(value: Any, key: str = "") -> Any:
    """`value` (an audit entry's before/after) with every email address held under a key the gateway
    does not mask put under one it does: {"granted_by": "pat@example.com"} becomes
    {"granted_by": {"email": "pat@example.com"}}. A principal recorded by another service (media's
    consent `granted_by` is the client's email when the client granted it from the portal) would
    otherwise reach a VIEWER unmasked. Free text under other keys is not recognised here."""
    if isinstance(value, dict):
        return {k: v if k in PII_KEYS else flag_emails(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [flag_emails(item, key) for item in value]
    if isinstance(value, str) and _EMAIL.fullmatch(value.strip()):
        return {"email": value}
    return value
