"""Data deletion requests (seed 002's playbook, issue 13): recorded by an owner or admin, driven to
completion by the jobs service one step per service (media, billing, notify, iam, booking last).

A request keeps a snapshot of the person it names (ids, emails and identifying values) so the driver
can finish it even after booking's own rows are anonymised; once every step is done the emails and
values are dropped from it and only ids stay. At most one request per person is open in an org at a
time: a partial unique index on (org_id, subject_hash) WHERE status = 'pending', written with
INSERT ... ON CONFLICT, so two concurrent requests for the same person leave one row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from cws.common.v1.privacy_pb2 import Person
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import NotFound, invalid
from libs.common.privacy import uuids
from services.booking import persons
from services.booking.models import DELETION_STATUSES, Record, data_deletion_requests, leads

# In the order the driver runs them; booking is last, as its rows are how the others find the person.
STEPS = ("media", "billing", "notify", "iam", "booking")
MAX_ERROR_LENGTH = 500
PENDING = "pending"
COMPLETED = "completed"

_requests = data_deletion_requests


def _snapshot(person: Person) -> dict[str, list[str]]:
    return {
        "lead_ids": list(person.lead_ids),
        "emails": list(person.emails),
        "booking_ids": list(person.booking_ids),
        "invoice_ids": list(person.invoice_ids),
        "pii_values": list(person.pii_values),
    }


def person_of(row: Record) -> Person:
    """The request's stored snapshot as a Person."""
    snapshot: dict[str, list[str]] = row.person or {}
    return Person(**{key: snapshot.get(key, []) for key in Person.DESCRIPTOR.fields_by_name})


def _new_steps() -> dict[str, dict[str, Any]]:
    return {
        name: {"done": False, "done_at": None, "attempts": 0, "last_error": "", "last_attempt_at": None}
        for name in STEPS
    }


async def create(uow: UnitOfWork, subject: persons.Subject, requested_by: str) -> tuple[Record, bool, int]:
    """(the request, whether it is new, bookings matched). A second request for a person with an
    open one answers the open one; the person's leads are marked pending deletion either way."""
    found, matched_leads = await persons.find(uow, subject)
    statement = (
        pg_insert(_requests)
        .values(
            id=uuid.uuid4(),
            org_id=uow.org_id,
            status=PENDING,
            subject=subject.label,
            subject_hash=subject.digest,
            requested_by=requested_by[:200],
            person=_snapshot(found.person()),
            steps=_new_steps(),
            matched_leads=matched_leads,
        )
        .on_conflict_do_nothing(
            index_elements=[_requests.c.org_id, _requests.c.subject_hash],
            index_where=text("status = 'pending'"),
        )
        .returning(*_requests.c)
    )
    row = (await uow.session.execute(statement)).first()
    created = row is not None
    if row is None:
        # Another request for this person is open (perhaps committed a moment ago by a concurrent
        # call, which the insert waited for): answer it.
        row = (
            await uow.session.execute(
                select(_requests).where(
                    _requests.c.org_id == uow.org_id,
                    _requests.c.subject_hash == subject.digest,
                    _requests.c.status == PENDING,
                )
            )
        ).one()
    lead_ids = uuids(found.lead_ids)
    if lead_ids:
        await uow.session.execute(
            update(leads)
            .where(
                leads.c.org_id == uow.org_id,
                leads.c.id.in_(lead_ids),
                leads.c.deletion_requested_at.is_(None),
            )
            .values(deletion_requested_at=func.now())
        )
    return row, created, len(found.booking_ids)


async def get(uow: UnitOfWork, request_id: str, *, for_update: bool = False) -> Record:
    query = select(_requests).where(
        _requests.c.org_id == uow.org_id, _requests.c.id == parse_id(request_id, "request_id")
    )
    row = (await uow.session.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise NotFound("deletion request not found")
    return row


def check_status(status: str) -> str:
    if status and status not in DELETION_STATUSES:
        raise invalid("status", "must be pending, completed or empty")
    return status


async def list_requests(uow: UnitOfWork, *, status: str, limit: int) -> list[Record]:
    """Newest first."""
    query = select(_requests).where(_requests.c.org_id == uow.org_id)
    if check_status(status):
        query = query.where(_requests.c.status == status)
    query = query.order_by(_requests.c.created_at.desc(), _requests.c.id).limit(limit)
    return list((await uow.session.execute(query)).all())


async def pending(uow: UnitOfWork, *, limit: int) -> list[tuple[Record, Person]]:
    """The org's open requests, oldest first, each with its person: the snapshot together with a
    resolution made now from its leads and emails, so bookings made since the request are erased
    too. What the resolution adds is kept in the snapshot (the ids outlive the request)."""
    rows = (
        await uow.session.execute(
            select(_requests)
            .where(_requests.c.org_id == uow.org_id, _requests.c.status == PENDING)
            .order_by(_requests.c.created_at, _requests.c.id)
            .limit(limit)
        )
    ).all()
    out: list[tuple[Record, Person]] = []
    for row in rows:
        stored = person_of(row)
        fresh = await persons.resolve(uow, uuids(stored.lead_ids), stored.emails)
        person = fresh.merge(stored).person()
        if person != stored:
            await uow.session.execute(
                update(_requests).where(_requests.c.id == row.id).values(person=_snapshot(person))
            )
        out.append((row, person))
    return out


def check_step(step: str, invoice_ids: list[str]) -> None:
    if step not in STEPS:
        raise invalid("step", f"must be one of {', '.join(STEPS)}")
    if len(uuids(invoice_ids)) != len(invoice_ids):
        raise invalid("invoice_ids", "must be UUIDs")


async def record_step(
    uow: UnitOfWork, request_id: str, step: str, *, done: bool, error: str, invoice_ids: list[str]
) -> Record:
    """One attempt of one step. A done step stays done (a repeat only adds invoice ids it did not
    know), and a completed request is answered as it is: the driver may report twice. When every
    step is done the request is completed and its snapshot forgets the emails and identifying
    values: only ids stay."""
    check_step(step, invoice_ids)
    row = await get(uow, request_id, for_update=True)
    steps: dict[str, dict[str, Any]] = {**_new_steps(), **(row.steps or {})}
    if row.status == COMPLETED:
        return row
    progress = dict(steps[step])
    snapshot = _snapshot(person_of(row))
    known_invoices = set(snapshot["invoice_ids"])
    all_done = all(steps[name]["done"] for name in STEPS)
    if progress["done"] and known_invoices.issuperset(invoice_ids) and not all_done:
        return row
    if not progress["done"]:
        now = datetime.now(UTC).isoformat()
        progress["attempts"] = int(progress.get("attempts", 0)) + 1
        progress["last_attempt_at"] = now
        if done:
            progress.update(done=True, done_at=now, last_error="")
        else:
            progress["last_error"] = (error or "not done")[:MAX_ERROR_LENGTH]
        steps[step] = progress
    snapshot["invoice_ids"] = sorted(known_invoices.union(invoice_ids))
    values: dict[str, Any] = {"steps": steps, "person": snapshot}
    if all(steps[name]["done"] for name in STEPS):
        snapshot.update(emails=[], pii_values=[])
        values.update(status=COMPLETED, completed_at=func.now())
    await uow.session.execute(update(_requests).where(_requests.c.id == row.id).values(**values))
    return await get(uow, request_id)
