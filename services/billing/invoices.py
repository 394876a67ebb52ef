"""Invoices finance staff write by hand: a DRAFT whose items may be replaced, then issued (numbered, its
totals snapshot frozen) or voided. Every function takes a unit of work already in the org; row-level
security confines it to that org, so another org's invoice is simply not found.

Numbers are per org, sequential and gap-free. `issue` takes the next one in its own transaction from
the org's counter row with `INSERT ... ON CONFLICT (org_id) DO UPDATE SET last_number = last_number + 1
RETURNING last_number`. The upsert keeps that row locked until the transaction ends: a concurrent issuer
in the same org waits on it and then reads the committed value (no duplicate), and an issue that rolls
back (a failed check after the number, a lost connection) rolls the counter back with it, so the next
issuer gets the same number (no gap). A Postgres sequence would not do: nextval is never rolled back.
The price is that issuing in one org is serialized for the rest of the issuing transaction, which is
short (a few statements) and rare next to reads.

Currency "follows the org": the caller passes the org's currency (booking keeps it in its org profile);
here it is only checked against the currencies billing accepts (currency.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cws.billing.v1 import events_pb2 as billing_events
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import (
    Conflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    invalid,
)
from services.billing.currency import normalise_currency
from services.billing.models import invoice_items, invoice_number_counters, invoices
from services.billing.status import InvoiceStatus, check_items_editable, status_after_payments
from services.billing.totals import LineItem, Totals, line_item, recalculate_totals

MAX_ITEMS = 100
MAX_CLIENT_NAME = 200
MAX_EMAIL = 320
NUMBER_PREFIX = "INV-"
NUMBER_DIGITS = 6  # INV-000001; the 1 000 000th invoice is INV-1000000 (the CHECK allows 6 or more)

# Void cancels an invoice nobody has paid anything on. PARTIAL and PAID have money against them (a
# refund must come first, and billing has no payments yet); VOID is already closed.
VOIDABLE = frozenset({InvoiceStatus.DRAFT, InvoiceStatus.SENT, InvoiceStatus.OVERDUE})

ItemInput = Mapping[str, Any] | LineItem


@dataclass(frozen=True)
class Invoice:
    id: uuid.UUID
    number: str | None
    status: InvoiceStatus
    currency: str
    client_name: str
    client_email: str
    booking_id: uuid.UUID | None
    issued_at: datetime | None
    due_date: date | None
    totals: Totals
    items: tuple[LineItem, ...]
    sent_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


def format_number(n: int) -> str:
    return f"{NUMBER_PREFIX}{n:0{NUMBER_DIGITS}d}"


async def create_draft(
    uow: UnitOfWork,
    currency: str,
    client_name: str,
    client_email: str,
    items: Sequence[ItemInput],
    due_date: date | None = None,
    booking_id: uuid.UUID | str | None = None,
) -> Invoice:
    """A new DRAFT with its items and their snapshot; every bad field is named in one error."""
    problems: list[FieldViolation] = []
    try:
        code = normalise_currency(currency)
    except InvalidArgument as bad:
        problems.extend(bad.violations)
    name = _client_name(client_name, problems)
    email = _client_email(client_email, problems)
    lines = _lines(items, problems)
    booking = None
    if booking_id is not None and booking_id != "":
        try:
            booking = parse_id(str(booking_id), "booking_id")
        except InvalidArgument as bad:
            problems.extend(bad.violations)
    if due_date is not None and not isinstance(due_date, date):
        problems.append(FieldViolation("due_date", "must be a date"))
    if problems:
        raise InvalidArgument.of(problems)
    invoice_id = uuid.uuid4()
    totals = recalculate_totals(lines)
    # One invoice per booking (ux_invoices_booking): the booking-completed consumer drafts one as soon
    # as the booking completes, so an invoice created by hand for it may come second, even at the same
    # instant. That is the caller's conflict to hear about (409), not a unique violation (a 502).
    created = await uow.session.execute(
        pg_insert(invoices)
        .values(
            id=invoice_id,
            org_id=uow.org_id,
            status=InvoiceStatus.DRAFT.value,
            currency=code,
            client_name=name,
            client_email=email,
            booking_id=booking,
            due_date=due_date,
            **snapshot_values(totals),
        )
        .on_conflict_do_nothing(
            index_elements=[invoices.c.org_id, invoices.c.booking_id],
            index_where=invoices.c.booking_id.is_not(None),
        )
        .returning(invoices.c.id)
    )
    if created.first() is None:
        raise Conflict(
            f"booking {booking} has an invoice already (one per booking; completing it drafts one)",
            code="booking_has_invoice",
        )
    await write_items(uow, invoice_id, lines)
    return await get(uow, invoice_id)


async def replace_items(uow: UnitOfWork, invoice_id: uuid.UUID | str, items: Sequence[ItemInput]) -> Invoice:
    """A DRAFT's items, all replaced, and its snapshot recomputed from them: the only place a snapshot
    is ever recomputed. Any other status is refused (409 invoice_not_draft) and nothing changes."""
    row = await _row(uow, invoice_id, for_update=True)
    check_items_editable(row.status)
    problems: list[FieldViolation] = []
    lines = _lines(items, problems)
    if problems:
        raise InvalidArgument.of(problems)
    totals = recalculate_totals(lines)
    await uow.session.execute(delete(invoice_items).where(invoice_items.c.invoice_id == row.id))
    await write_items(uow, row.id, lines)
    await uow.session.execute(
        update(invoices)
        .where(invoices.c.id == row.id)
        .values(updated_at=func.now(), **snapshot_values(totals))
    )
    return await get(uow, row.id)


async def issue(uow: UnitOfWork, invoice_id: uuid.UUID | str, today: date) -> Invoice:
    """DRAFT -> SENT: the org's next number, and the snapshot of the items as they are now, frozen.
    A due date before today is refused; none means due on receipt (today). A 0-cent invoice is PAID
    at once, as reconcile would make it (status.status_after_payments)."""
    row = await _row(uow, invoice_id, for_update=True)
    if row.status != InvoiceStatus.DRAFT:
        raise FailedPrecondition(
            f"cannot issue an invoice that is {row.status}; only a DRAFT is issued",
            code="invoice_not_draft",
            violations=[FieldViolation("status", f"is {row.status}, must be DRAFT")],
        )
    due = row.due_date or today
    if due < today:
        raise invalid("due_date", f"must not be before the issue date {today.isoformat()}")
    lines = await _items_of(uow, row.id)
    if not lines:
        raise invalid("items", "an invoice needs at least one line to be issued")
    # The draft's snapshot was computed at its last item edit; computing it once more here, from the
    # same stored items and before the invoice leaves DRAFT, makes the frozen snapshot exactly what the
    # issued items say. From here on nothing recomputes it.
    totals = recalculate_totals(lines)
    status = status_after_payments(InvoiceStatus.SENT, totals.total_cents, due, today, ()).status
    number = await _next_number(uow)
    await uow.session.execute(
        update(invoices)
        .where(invoices.c.id == row.id)
        .values(
            number=format_number(number),
            status=status.value,
            issued_at=func.now(),
            due_date=due,
            updated_at=func.now(),
            **snapshot_values(totals),
        )
    )
    return await get(uow, row.id)


async def void(uow: UnitOfWork, invoice_id: uuid.UUID | str) -> Invoice:
    """DRAFT, SENT or OVERDUE -> VOID. The number (if issued) and the snapshot stay: a voided invoice
    keeps its place in the sequence, so numbering stays gap-free. PARTIAL, PAID and VOID are refused
    (409 invoice_not_voidable)."""
    row = await _row(uow, invoice_id, for_update=True)
    if row.status not in VOIDABLE:
        raise FailedPrecondition(
            f"cannot void an invoice that is {row.status}; only DRAFT, SENT or OVERDUE invoices are voided",
            code="invoice_not_voidable",
            violations=[FieldViolation("status", f"is {row.status}, must be DRAFT, SENT or OVERDUE")],
        )
    await uow.session.execute(
        update(invoices)
        .where(invoices.c.id == row.id)
        .values(status=InvoiceStatus.VOID.value, updated_at=func.now())
    )
    return await get(uow, row.id)


async def get(uow: UnitOfWork, invoice_id: uuid.UUID | str) -> Invoice:
    """The invoice with its stored snapshot (never recomputed on read) and items; NotFound when it is
    not in this unit of work's org."""
    row = await _row(uow, invoice_id)
    return from_row(row, tuple(await _items_of(uow, row.id)))


def from_row(row: Any, items: tuple[LineItem, ...] = ()) -> Invoice:
    """An invoices row as an Invoice (its items when given; list views leave them out)."""
    return Invoice(
        id=row.id,
        number=row.number,
        status=InvoiceStatus(row.status),
        currency=row.currency,
        client_name=row.client_name,
        client_email=row.client_email,
        booking_id=row.booking_id,
        issued_at=row.issued_at,
        due_date=row.due_date,
        totals=Totals(
            subtotal_cents=row.subtotal_cents,
            taxable_subtotal_cents=row.taxable_subtotal_cents,
            tax_cents=row.tax_cents,
            total_cents=row.total_cents,
            tax_rate_basis=row.tax_rate_basis,
        ),
        items=items,
        sent_at=row.sent_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def mark_overdue(uow: UnitOfWork, today: date) -> list[Invoice]:
    """SENT invoices whose due date has passed (today is after it) become OVERDUE: the daily
    invoices-overdue job. PARTIAL stays PARTIAL past its due date (seed 002: some money came in), and
    reconcile agrees (status.status_after_payments). Running it twice a day marks nothing twice."""
    rows = (
        await uow.session.execute(
            update(invoices)
            .where(invoices.c.status == InvoiceStatus.SENT.value, invoices.c.due_date < today)
            .values(status=InvoiceStatus.OVERDUE.value, updated_at=func.now())
            .returning(invoices)
        )
    ).all()
    return [from_row(row) for row in rows]


def changed_message(
    invoice: Invoice,
    org_id: uuid.UUID | None,
    *,
    paid_cents: int,
    outstanding_cents: int,
    status: InvoiceStatus | None = None,
) -> billing_events.InvoiceChanged:
    """The InvoiceChanged every cws.billing.invoice.* event carries; `status` when the invoice's row
    is older than the status just stored (a settlement)."""
    return billing_events.InvoiceChanged(
        org_id=str(org_id),
        invoice_id=str(invoice.id),
        number=invoice.number or "",
        status=(status or invoice.status).value,
        currency=invoice.currency,
        total_cents=invoice.totals.total_cents,
        paid_cents=paid_cents,
        outstanding_cents=outstanding_cents,
        booking_id=str(invoice.booking_id) if invoice.booking_id else "",
        due_date=invoice.due_date.isoformat() if invoice.due_date else "",
    )


# The invoices queue of seed 002 ("Operator productivity queues"): what finance must chase.
QUEUE_FILTERS: Mapping[str, tuple[InvoiceStatus, ...]] = {
    "overdue": (InvoiceStatus.OVERDUE,),
    "unpaid": (InvoiceStatus.SENT, InvoiceStatus.PARTIAL),
    "all": (InvoiceStatus.SENT, InvoiceStatus.PARTIAL, InvoiceStatus.OVERDUE),
}


async def list_page(
    uow: UnitOfWork,
    *,
    statuses: Sequence[InvoiceStatus] = (),
    client_email: str | None = None,
    exclude_drafts: bool = False,
    limit: int,
    offset: int,
    oldest_due_first: bool = False,
    updated_since: datetime | None = None,
) -> tuple[list[Invoice], int]:
    """A page of the org's invoices (without their items) and how many match in all. Newest first, or
    for the queue the longest overdue first. `client_email` confines it to one client (the portal).
    `updated_since`: those changed at or after it, oldest change first, with their items (a sync's read
    of what changed since its cursor, on ix_invoices_org_updated)."""
    condition: list[ColumnElement[bool]] = []
    if updated_since is not None:
        condition.append(invoices.c.updated_at >= updated_since)
    if statuses:
        condition.append(invoices.c.status.in_([s.value for s in statuses]))
    if client_email is not None:
        condition.append(func.lower(invoices.c.client_email) == client_email.strip().lower())
    if exclude_drafts:
        condition.append(invoices.c.status != InvoiceStatus.DRAFT.value)
    order = (
        (invoices.c.updated_at, invoices.c.id)
        if updated_since is not None
        else (invoices.c.due_date.asc().nulls_last(), invoices.c.id)
        if oldest_due_first
        else (invoices.c.created_at.desc(), invoices.c.id)
    )
    rows = (
        await uow.session.execute(
            select(invoices).where(*condition).order_by(*order).limit(limit).offset(offset)
        )
    ).all()
    total = (
        await uow.session.execute(select(func.count()).select_from(invoices).where(*condition))
    ).scalar_one()
    if updated_since is None:
        return [from_row(row) for row in rows], int(total)
    items = await _items_of_many(uow, [row.id for row in rows])
    return [from_row(row, tuple(items.get(row.id, ()))) for row in rows], int(total)


def queue_statuses(name: str) -> tuple[InvoiceStatus, ...]:
    try:
        return QUEUE_FILTERS[name]
    except KeyError:
        raise invalid("status", f"must be one of {', '.join(QUEUE_FILTERS)}") from None


async def _next_number(uow: UnitOfWork) -> int:
    """The org's next invoice number, its counter row locked until this transaction ends (see top)."""
    statement = (
        pg_insert(invoice_number_counters)
        .values(org_id=uow.org_id, last_number=1)
        .on_conflict_do_update(
            index_elements=[invoice_number_counters.c.org_id],
            set_={"last_number": invoice_number_counters.c.last_number + 1},
        )
        .returning(invoice_number_counters.c.last_number)
    )
    return int((await uow.session.execute(statement)).scalar_one())


async def _row(uow: UnitOfWork, invoice_id: uuid.UUID | str, *, for_update: bool = False) -> Any:
    key = invoice_id if isinstance(invoice_id, uuid.UUID) else parse_id(invoice_id, "invoice_id")
    query = select(invoices).where(invoices.c.id == key)
    if for_update:
        query = query.with_for_update()
    row = (await uow.session.execute(query)).first()
    if row is None:
        raise NotFound("invoice not found", code="invoice_not_found")
    return row


async def _items_of(uow: UnitOfWork, invoice_id: uuid.UUID) -> list[LineItem]:
    rows = await uow.session.execute(
        select(invoice_items)
        .where(invoice_items.c.invoice_id == invoice_id)
        .order_by(invoice_items.c.position)
    )
    return [LineItem(r.description, r.quantity, r.unit_price_cents, r.tax_rate) for r in rows]


async def _items_of_many(
    uow: UnitOfWork, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[LineItem]]:
    """The items of a page of invoices, in one query."""
    found: dict[uuid.UUID, list[LineItem]] = {}
    if not invoice_ids:
        return found
    rows = await uow.session.execute(
        select(invoice_items)
        .where(invoice_items.c.invoice_id.in_(invoice_ids))
        .order_by(invoice_items.c.invoice_id, invoice_items.c.position)
    )
    for r in rows:
        found.setdefault(r.invoice_id, []).append(
            LineItem(r.description, r.quantity, r.unit_price_cents, r.tax_rate)
        )
    return found


async def write_items(uow: UnitOfWork, invoice_id: uuid.UUID, lines: Sequence[LineItem]) -> None:
    await uow.session.execute(
        insert(invoice_items),
        [
            {
                "id": uuid.uuid4(),
                "org_id": uow.org_id,
                "invoice_id": invoice_id,
                "position": position,
                "description": line.description,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
                "tax_rate": line.tax_rate,
                "amount_cents": line.amount_cents,
            }
            for position, line in enumerate(lines)
        ],
    )


def snapshot_values(totals: Totals) -> dict[str, Any]:
    return {
        "subtotal_cents": totals.subtotal_cents,
        "taxable_subtotal_cents": totals.taxable_subtotal_cents,
        "tax_cents": totals.tax_cents,
        "tax_rate_basis": totals.tax_rate_basis,
        "total_cents": totals.total_cents,
    }


def _lines(items: Sequence[ItemInput], problems: list[FieldViolation]) -> list[LineItem]:
    """Checked lines; every bad field of every line is added to `problems` as items.<n>.<field>."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        problems.append(FieldViolation("items", "must be a list of lines"))
        return []
    if not 1 <= len(items) <= MAX_ITEMS:
        problems.append(FieldViolation("items", f"must have from 1 to {MAX_ITEMS} lines"))
        return []
    lines: list[LineItem] = []
    for n, item in enumerate(items):
        field = f"items.{n}"
        if isinstance(item, LineItem):
            values: Mapping[str, Any] = {
                "description": item.description,
                "quantity": item.quantity,
                "unit_price_cents": item.unit_price_cents,
                "tax_rate": item.tax_rate,
            }
        elif isinstance(item, Mapping):
            values = item
        else:
            problems.append(
                FieldViolation(field, "must be a line (description, quantity, unit price, tax rate)")
            )
            continue
        try:
            lines.append(
                line_item(
                    values.get("description", ""),
                    values.get("quantity", ""),
                    values.get("unit_price_cents", -1),
                    values.get("tax_rate", ""),
                    field=field,
                )
            )
        except InvalidArgument as bad:
            problems.extend(bad.violations)
    return lines


def _client_name(value: object, problems: list[FieldViolation]) -> str:
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        problems.append(FieldViolation("client_name", "must not be blank"))
    elif len(name) > MAX_CLIENT_NAME:
        problems.append(FieldViolation("client_name", f"must be at most {MAX_CLIENT_NAME} characters"))
    return name


def _client_email(value: object, problems: list[FieldViolation]) -> str:
    """The address as booking and iam keep theirs (email-validator, no DNS lookup, lower case), so the
    client who signs in to the portal with it finds the invoice."""
    email = value.strip() if isinstance(value, str) else ""
    if len(email) > MAX_EMAIL:
        problems.append(FieldViolation("client_email", f"must be at most {MAX_EMAIL} characters"))
        return email
    try:
        return validate_email(email, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        problems.append(FieldViolation("client_email", f"must be an email address ({exc})"))
        return email
