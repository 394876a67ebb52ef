"""Expenses and GST instalments: the two things a GST return needs beyond invoices (issue 11).

An expense is what the business paid, GST included (`amount_cents`), with the GST within it
(`gst_cents`), claimable as an input tax credit; a tax instalment is a payment toward a GST period,
`paid_on` empty while it is only planned. Both are plain records finance keeps by hand: every rule
the database also holds (amount above 0, GST within the amount, period in order) is checked here first
so a caller gets a 422 naming the field rather than a constraint error.

Updates take only the fields given, check the record as it would be after them, and return the record
before and after, which the servicer hands to the admin audit."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update

from libs.common.convert import parse_id
from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument, NotFound
from services.billing.currency import normalise_currency
from services.billing.models import expenses, tax_instalments

MAX_CENTS = 10_000_000_000  # 100 million in cents: the gateway's bound on every amount
MAX_CATEGORY = 64
MAX_VENDOR = 200
MAX_DESCRIPTION = 500
MAX_REFERENCE = 200
INSTALMENT_FILTERS = ("paid", "planned")
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2999, 12, 31)


@dataclass(frozen=True)
class Expense:
    id: uuid.UUID
    spent_on: date
    category: str
    vendor: str
    description: str
    amount_cents: int
    gst_cents: int
    currency: str
    created_at: datetime
    updated_at: datetime

    def audit(self) -> dict[str, Any]:
        """What the admin audit records of it."""
        return {
            "spent_on": self.spent_on.isoformat(),
            "category": self.category,
            "vendor": self.vendor,
            "amount_cents": self.amount_cents,
            "gst_cents": self.gst_cents,
            "currency": self.currency,
        }


@dataclass(frozen=True)
class Instalment:
    id: uuid.UUID
    period_start: date
    period_end: date
    amount_cents: int
    currency: str
    paid_on: date | None
    reference: str
    created_at: datetime
    updated_at: datetime

    def audit(self) -> dict[str, Any]:
        return {
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "paid_on": self.paid_on.isoformat() if self.paid_on else None,
            "reference": self.reference,
        }


# --- checking what a caller sends --------------------------------------------------------------------


def parse_day(value: object, field: str, problems: list[FieldViolation]) -> date | None:
    """A calendar date "YYYY-MM-DD" (a real one: 2026-02-30 is refused), or None with a problem noted."""
    if isinstance(value, date):
        return value  # already stored, so already checked
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        problems.append(FieldViolation(field, "is required (YYYY-MM-DD)"))
        return None
    try:
        # date.fromisoformat also reads "20260101" and week dates; the API's dates are YYYY-MM-DD only.
        if not ISO_DAY.fullmatch(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        problems.append(FieldViolation(field, "must be a real date, YYYY-MM-DD"))
        return None
    if not FIRST_DAY <= day <= LAST_DAY:
        # Books are kept for years that exist; it also keeps a period's UTC bounds (a day either
        # side, in any time zone) inside what a datetime can hold.
        problems.append(FieldViolation(field, f"must be from {FIRST_DAY} to {LAST_DAY}"))
        return None
    return day


def _text(value: object, field: str, maximum: int, problems: list[FieldViolation], *, required: bool) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        problems.append(FieldViolation(field, "must not be empty"))
    elif len(text) > maximum:
        problems.append(FieldViolation(field, f"must be at most {maximum} characters"))
    elif any(ord(c) < 32 and c not in "\t" for c in text):
        problems.append(FieldViolation(field, "must not contain control characters or line breaks"))
    return text


def _cents(value: object, field: str, problems: list[FieldViolation], *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_CENTS:
        problems.append(FieldViolation(field, f"must be whole cents from {minimum} to {MAX_CENTS}"))
        return 0
    return value


def _currency(value: object, problems: list[FieldViolation]) -> str:
    try:
        return normalise_currency(value if isinstance(value, str) else "")
    except InvalidArgument as bad:
        problems.extend(bad.violations)
        return ""


def expense_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of an expense from a whole set of fields (a new one, or an old one with changes)."""
    problems: list[FieldViolation] = []
    values: dict[str, Any] = {
        "spent_on": parse_day(fields.get("spent_on"), "spent_on", problems),
        "category": _text(fields.get("category"), "category", MAX_CATEGORY, problems, required=True),
        "vendor": _text(fields.get("vendor"), "vendor", MAX_VENDOR, problems, required=True),
        "description": _text(
            fields.get("description", ""), "description", MAX_DESCRIPTION, problems, required=False
        ),
        "amount_cents": _cents(fields.get("amount_cents"), "amount_cents", problems, minimum=1),
        "gst_cents": _cents(fields.get("gst_cents", 0), "gst_cents", problems, minimum=0),
        "currency": _currency(fields.get("currency"), problems),
    }
    if not problems and values["gst_cents"] > values["amount_cents"]:
        problems.append(
            FieldViolation("gst_cents", "must not exceed amount_cents (the amount paid includes its GST)")
        )
    if problems:
        raise InvalidArgument.of(problems)
    return values


def instalment_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    problems: list[FieldViolation] = []
    paid = fields.get("paid_on")
    values: dict[str, Any] = {
        "period_start": parse_day(fields.get("period_start"), "period_start", problems),
        "period_end": parse_day(fields.get("period_end"), "period_end", problems),
        "amount_cents": _cents(fields.get("amount_cents"), "amount_cents", problems, minimum=1),
        "currency": _currency(fields.get("currency"), problems),
        # Empty or absent: planned, not paid yet.
        "paid_on": parse_day(paid, "paid_on", problems) if paid else None,
        "reference": _text(fields.get("reference", ""), "reference", MAX_REFERENCE, problems, required=False),
    }
    start, end = values["period_start"], values["period_end"]
    if start is not None and end is not None and start > end:
        problems.append(FieldViolation("period_end", "must be on or after period_start"))
    if problems:
        raise InvalidArgument.of(problems)
    return values


def _something_to_change(changes: Mapping[str, Any]) -> None:
    # An empty PATCH would still bump updated_at and write an audit entry of no change.
    if not changes:
        raise InvalidArgument.of([FieldViolation("body", "name at least one field to change")])


# --- expenses ----------------------------------------------------------------------------------------


async def create_expense(uow: UnitOfWork, fields: Mapping[str, Any]) -> Expense:
    values = expense_values(fields)
    row = (
        await uow.session.execute(
            insert(expenses).values(id=uuid.uuid4(), org_id=uow.org_id, **values).returning(expenses)
        )
    ).one()
    return _expense(row)


async def get_expense(uow: UnitOfWork, expense_id: str, *, for_update: bool = False) -> Expense:
    query = select(expenses).where(expenses.c.id == parse_id(expense_id, "expense_id"))
    row = (await uow.session.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise NotFound("expense not found", code="expense_not_found")
    return _expense(row)


async def update_expense(
    uow: UnitOfWork, expense_id: str, changes: Mapping[str, Any]
) -> tuple[Expense, Expense]:
    """(before, after). The row is locked first, so two edits at once apply one after the other."""
    _something_to_change(changes)
    before = await get_expense(uow, expense_id, for_update=True)
    values = expense_values({**asdict(before), **changes})
    row = (
        await uow.session.execute(
            update(expenses)
            .where(expenses.c.id == before.id)
            .values(**values, updated_at=func.now())
            .returning(expenses)
        )
    ).one()
    return before, _expense(row)


async def delete_expense(uow: UnitOfWork, expense_id: str) -> Expense:
    """The expense as it was; NotFound when it is not this org's."""
    found = await get_expense(uow, expense_id, for_update=True)
    await uow.session.execute(delete(expenses).where(expenses.c.id == found.id))
    return found


async def list_expenses(
    uow: UnitOfWork,
    *,
    from_date: date | None,
    to_date: date | None,
    category: str,
    limit: int,
    offset: int,
) -> tuple[list[Expense], int]:
    """A page of expenses, newest spent first, and how many match in all."""
    condition: list[ColumnElement[bool]] = [expenses.c.org_id == uow.org_id]
    if from_date is not None:
        condition.append(expenses.c.spent_on >= from_date)
    if to_date is not None:
        condition.append(expenses.c.spent_on <= to_date)
    if category.strip():
        condition.append(expenses.c.category == category.strip())
    rows = (
        await uow.session.execute(
            select(expenses)
            .where(*condition)
            .order_by(expenses.c.spent_on.desc(), expenses.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = (
        await uow.session.execute(select(func.count()).select_from(expenses).where(*condition))
    ).scalar_one()
    return [_expense(row) for row in rows], int(total)


def _expense(row: Any) -> Expense:
    return Expense(
        id=row.id,
        spent_on=row.spent_on,
        category=row.category,
        vendor=row.vendor,
        description=row.description,
        amount_cents=row.amount_cents,
        gst_cents=row.gst_cents,
        currency=row.currency,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- tax instalments ---------------------------------------------------------------------------------


async def create_instalment(uow: UnitOfWork, fields: Mapping[str, Any]) -> Instalment:
    values = instalment_values(fields)
    row = (
        await uow.session.execute(
            insert(tax_instalments)
            .values(id=uuid.uuid4(), org_id=uow.org_id, **values)
            .returning(tax_instalments)
        )
    ).one()
    return _instalment(row)


async def get_instalment(uow: UnitOfWork, instalment_id: str, *, for_update: bool = False) -> Instalment:
    query = select(tax_instalments).where(tax_instalments.c.id == parse_id(instalment_id, "instalment_id"))
    row = (await uow.session.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise NotFound("tax instalment not found", code="instalment_not_found")
    return _instalment(row)


async def update_instalment(
    uow: UnitOfWork, instalment_id: str, changes: Mapping[str, Any]
) -> tuple[Instalment, Instalment]:
    _something_to_change(changes)
    before = await get_instalment(uow, instalment_id, for_update=True)
    values = instalment_values({**asdict(before), **changes})
    row = (
        await uow.session.execute(
            update(tax_instalments)
            .where(tax_instalments.c.id == before.id)
            .values(**values, updated_at=func.now())
            .returning(tax_instalments)
        )
    ).one()
    return before, _instalment(row)


async def delete_instalment(uow: UnitOfWork, instalment_id: str) -> Instalment:
    found = await get_instalment(uow, instalment_id, for_update=True)
    await uow.session.execute(delete(tax_instalments).where(tax_instalments.c.id == found.id))
    return found


async def list_instalments(
    uow: UnitOfWork,
    *,
    from_date: date | None,
    to_date: date | None,
    status: str,
    limit: int,
    offset: int,
) -> tuple[list[Instalment], int]:
    """A page of instalments whose period overlaps [from_date, to_date], latest period first.
    `status`: "paid", "planned" or "" (both)."""
    condition: list[ColumnElement[bool]] = [tax_instalments.c.org_id == uow.org_id]
    if from_date is not None:
        condition.append(tax_instalments.c.period_end >= from_date)
    if to_date is not None:
        condition.append(tax_instalments.c.period_start <= to_date)
    if status == "paid":
        condition.append(tax_instalments.c.paid_on.is_not(None))
    elif status == "planned":
        condition.append(tax_instalments.c.paid_on.is_(None))
    elif status:
        raise InvalidArgument.of(
            [FieldViolation("status", f"must be one of {', '.join(INSTALMENT_FILTERS)}")]
        )
    rows = (
        await uow.session.execute(
            select(tax_instalments)
            .where(*condition)
            .order_by(tax_instalments.c.period_start.desc(), tax_instalments.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    total = (
        await uow.session.execute(select(func.count()).select_from(tax_instalments).where(*condition))
    ).scalar_one()
    return [_instalment(row) for row in rows], int(total)


def _instalment(row: Any) -> Instalment:
    return Instalment(
        id=row.id,
        period_start=row.period_start,
        period_end=row.period_end,
        amount_cents=row.amount_cents,
        currency=row.currency,
        paid_on=row.paid_on,
        reference=row.reference,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
