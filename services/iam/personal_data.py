"""What iam holds about a person (a client), for seed 002's data export/delete playbook (issue 13).
No gRPC here.

iam knows a client by email only: their client-portal magic links and portal sessions (`subject` is
the client's email, stored normalised to lower case), the admin audit entries whose before/after
(or break-glass reason) mention them, and its own events that carry their email (a client-login
request). Staff users are the org's own people, not the subjects of these requests.

Export: the portal links and sessions as metadata (kind, when created, expiring, used, revoked and
why); never a token hash.

Erasure, one idempotent step in one unit of work:
1. the client's magic links, then their portal sessions, are deleted. The gateway asks iam about a
   portal session on every portal request (gateway/portal_auth.py: no cache, and logout publishes
   nothing; cws.iam.session.revoked is for staff access tokens), so a session whose row is gone is
   refused on the very next request, and a link whose row is gone can no longer be redeemed. Nothing
   needs the rows afterwards (no revocation feed reads them), so they go rather than stay with an
   erased subject. Links first, as portal_sessions.end_access does: a redemption racing this holds
   the link's row lock, and the session it opens is then visible to the second statement.
2. admin_audit_logs of the org: each string inside before/after (and the break-glass reason and the
   actor) that contains one of the person's values has it replaced with ERASED. The rows stay: who
   did what, when, is the audit; only the person's values go.
3. iam's published events and dead letters that mention the person are forgotten; unpublished ones
   are left for the relay, and the step answers a pending reason so the driver runs it again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import Text, cast, delete, func, or_, select, update

from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.privacy import Scrubber, forget_published_events, needles
from services.iam import audit
from services.iam.models import admin_audit_logs, portal_links, portal_sessions
from services.iam.portal_sessions import CLIENT

PORTAL_ACCESS = "portal_access"


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _emails(person: Person) -> list[str]:
    return sorted({email.strip().lower() for email in person.emails if email.strip()})


async def export(db: Database, org_id: uuid.UUID, person: Person) -> dict[str, list[dict[str, Any]]]:
    """The person's client-portal magic links and sessions, oldest first: metadata only."""
    emails = _emails(person)
    if not emails:
        return {PORTAL_ACCESS: []}
    async with unit_of_work(db, org_id) as uow:
        links = (
            await uow.session.execute(
                select(
                    portal_links.c.kind,
                    portal_links.c.created_at,
                    portal_links.c.expires_at,
                    portal_links.c.used_at,
                    portal_links.c.revoked_at,
                    portal_links.c.revoked_reason,
                )
                .where(_client_links(org_id, emails))
                .order_by(portal_links.c.created_at, portal_links.c.id)
            )
        ).all()
        sessions = (
            await uow.session.execute(
                select(
                    portal_sessions.c.kind,
                    portal_sessions.c.created_at,
                    portal_sessions.c.expires_at,
                    portal_sessions.c.revoked_at,
                    portal_sessions.c.revoked_reason,
                )
                .where(_client_sessions(org_id, emails))
                .order_by(portal_sessions.c.created_at, portal_sessions.c.id)
            )
        ).all()
    records = [
        {
            "record": "magic_link",
            "kind": row.kind,
            "created_at": _time(row.created_at),
            "expires_at": _time(row.expires_at),
            "used_at": _time(row.used_at),
            "revoked_at": _time(row.revoked_at),
            "revoked_reason": row.revoked_reason,
        }
        for row in links
    ] + [
        {
            "record": "session",
            "kind": row.kind,
            "created_at": _time(row.created_at),
            "expires_at": _time(row.expires_at),
            "used_at": None,  # a session is not used up; its link is
            "revoked_at": _time(row.revoked_at),
            "revoked_reason": row.revoked_reason,
        }
        for row in sessions
    ]
    records.sort(key=lambda record: (record["created_at"] or "", record["record"]))
    return {PORTAL_ACCESS: records}


def _client_links(org_id: uuid.UUID, emails: Sequence[str]) -> Any:
    # lower(): subjects are stored normalised, but a row written before that must match too; the
    # (org_id, kind, subject) index still narrows the read to the org's client links.
    return (
        (portal_links.c.org_id == org_id)
        & (portal_links.c.kind == CLIENT)
        & func.lower(portal_links.c.subject).in_(emails)
    )


def _client_sessions(org_id: uuid.UUID, emails: Sequence[str]) -> Any:
    return (
        (portal_sessions.c.org_id == org_id)
        & (portal_sessions.c.kind == CLIENT)
        & func.lower(portal_sessions.c.subject).in_(emails)
    )


@dataclass(frozen=True)
class Erased:
    changed: int
    # Empty when the step is done; else why it must run again.
    pending_reason: str = ""


async def erase(db: Database, org_id: uuid.UUID, person: Person, request_id: str) -> Erased:
    values = needles(person)
    emails = _emails(person)
    async with unit_of_work(db, org_id) as uow:
        changed = await _end_portal_access(uow, emails) if emails else 0
        changed += await _scrub_audit(uow, values)
        forgotten = await forget_published_events(uow.session, db.tables, org_id, values)
        changed += forgotten.deleted
        if changed:
            # Written after the scrub and naming no value of the person: the erasure is audited too.
            await audit.record(
                uow,
                "iam.person.erase",
                resource_type="deletion_request",
                resource_id=request_id[:100],
                after={"erased_rows": changed},
            )
    if forgotten.unpublished:
        return Erased(
            changed, f"{forgotten.unpublished} iam events mentioning the person are not published yet"
        )
    return Erased(changed)


async def _end_portal_access(uow: UnitOfWork, emails: Sequence[str]) -> int:
    assert uow.org_id is not None
    links = await uow.session.execute(delete(portal_links).where(_client_links(uow.org_id, emails)))
    sessions = await uow.session.execute(delete(portal_sessions).where(_client_sessions(uow.org_id, emails)))
    return int(links.rowcount or 0) + int(sessions.rowcount or 0)  # type: ignore[attr-defined]


_JSON_COLUMNS = (admin_audit_logs.c.before, admin_audit_logs.c.after)
_TEXT_COLUMNS = (admin_audit_logs.c.break_glass_reason, admin_audit_logs.c.actor)


async def _scrub_audit(uow: UnitOfWork, values: Sequence[str]) -> int:
    """Rewrites the org's audit rows that mention the person. The candidates are found by a text
    search (ILIKE on before::text / after::text / the reason / the actor, per value), which reads
    every audit row of the org: acceptable for this rare, org-scoped job, where an index on the
    JSON's text would cost every audited write. The Scrubber then decides, value by value."""
    if not values:
        return 0
    scrubber = Scrubber(values)
    # ILIKE is case-blind, as the Scrubber is: one search per value, whatever its case. In the JSON's
    # text a value is JSON-escaped (a quote, a backslash), so that spelling is searched there.
    plain = sorted({value.lower() for value in values})
    escaped = sorted({json.dumps(value, ensure_ascii=False)[1:-1] for value in plain})
    searches = [
        *(
            cast(column, Text).icontains(value, autoescape=True)
            for column in _JSON_COLUMNS
            for value in escaped
        ),
        *(column.icontains(value, autoescape=True) for column in _TEXT_COLUMNS for value in plain),
    ]
    rows = (
        await uow.session.execute(
            select(
                admin_audit_logs.c.id,
                admin_audit_logs.c.before,
                admin_audit_logs.c.after,
                admin_audit_logs.c.break_glass_reason,
                admin_audit_logs.c.actor,
            ).where(
                admin_audit_logs.c.org_id == uow.org_id,
                or_(*searches),
            )
        )
    ).all()
    changed = 0
    for row in rows:
        new: dict[str, Any] = {}
        for name in ("before", "after", "break_glass_reason", "actor"):
            scrubbed, hit = scrubber.scrub(getattr(row, name))
            if hit:
                new[name] = scrubbed
        if new:
            await uow.session.execute(
                update(admin_audit_logs).where(admin_audit_logs.c.id == row.id).values(**new)
            )
            changed += 1
    return changed
