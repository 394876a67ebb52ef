"""The accounting CSV (seed 002 "Accounting export v1"): one row per issued invoice, read from the
stored snapshot columns (never recomputed: seed 002 "Invoice tax snapshots and reporting"), with its
succeeded payments, counted refunds and balance, in keyset pages.

Rules:
- Issued invoices only. A DRAFT has no number and no snapshot, so it is never a row and asking for it
  is refused; a VOID invoice that was issued keeps its row (its number, balance 0), so the numbers the
  accountant sees have no gaps. A draft that was voided was never numbered and has no row.
- `from`/`to` are inclusive calendar dates in the org's time zone, applied to the local date of
  `issued_at`: an invoice issued at 23:30 in Toronto on 30 November belongs to November although it
  is 1 December in UTC. They become a half-open UTC range [start 00:00 local, day after end 00:00
  local) in Python, so the query stays a range scan on ix_invoices_org_issued.
- Pages are keyset pages on (issued_at, id), the index's order: page N costs the same as page 1
  whatever the range, and rows issued while an export runs cannot shift a page (no OFFSET). Each page
  is read in the caller's one short transaction; the page's money is one grouped query over its ids.
- The cursor is opaque to callers (URL-safe base64 of a version, the last row's time in microseconds
  and its id) and checked when it comes back: anything else is InvalidArgument on `cursor`, never an
  error of ours. It carries no org: RLS confines every read to the caller's org anyway.
- Every cell goes through csv_cells.safe_cell: a client named `=HYPERLINK(...)` comes out as text.

No range limit: the export streams page by page, so a year or ten cost the same memory."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Text, and_, any_, bindparam, cast, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument
from services.billing.csv_cells import Cell, csv_text
from services.billing.models import invoice_payments, invoice_refunds, invoices

# What the export can be filtered by: every status an issued invoice can have.
ACCOUNTING_STATUSES = ("SENT", "PARTIAL", "PAID", "OVERDUE", "VOID")
COLUMNS = (
    "invoice_id",
    "invoice_number",
    "status",
    "issue_date",
    "due_date",
    "client_name",
    "client_email",
    "currency",
    "subtotal_cents",
    "taxable_subtotal_cents",
    "tax_cents",
    "total_cents",
    "tax_rate_basis",
    "paid_cents",
    "refunded_cents",
    "balance_cents",
    "last_payment_date",
    "booking_id",
)
HEADER = csv_text([COLUMNS])
MIN_PAGE = 1
MAX_PAGE = 10_000
_CURSOR_VERSION = "a1"
_MAX_CURSOR = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    """Inclusive local dates in the org's zone."""

    start: date
    end: date


def zone_of(name: str) -> ZoneInfo:
    """The org's zone; UTC when it names none (or one this machine does not know), as orgs.today_in."""
    try:
        return ZoneInfo(name or "UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def check_filters(start: date | None, end: date | None, statuses: Sequence[str]) -> tuple[str, ...]:
    """The statuses to export (all of ACCOUNTING_STATUSES when none is named), upper-cased and
    without repeats; InvalidArgument naming every problem at once otherwise."""
    problems: list[FieldViolation] = []
    if start is not None and end is not None and start > end:
        problems.append(
            FieldViolation("from", f"must not be after to ({start.isoformat()} is after {end.isoformat()})")
        )
    wanted: list[str] = []
    for raw in statuses:
        value = raw.strip().upper() if isinstance(raw, str) else ""
        if value == "DRAFT":
            problems.append(
                FieldViolation(
                    "status",
                    "DRAFT is not exported: a draft has no number and no tax snapshot until it is issued; "
                    f"use one of {', '.join(ACCOUNTING_STATUSES)}",
                )
            )
        elif value not in ACCOUNTING_STATUSES:
            shown = raw[:40] if isinstance(raw, str) else repr(raw)[:40]
            problems.append(
                FieldViolation(
                    "status", f"{shown!r} is not a status; use one of {', '.join(ACCOUNTING_STATUSES)}"
                )
            )
        elif value not in wanted:
            wanted.append(value)
    if problems:
        raise InvalidArgument.of(problems, code="invalid_export_filter")
    return tuple(wanted) or ACCOUNTING_STATUSES


def utc_bounds(tz: ZoneInfo, start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """[first instant of `start`, first instant of the day after `end`) in `tz`, as UTC times. A local
    midnight skipped by a clock change maps (fold=0) to the instant the day really starts."""
    return (_day_start(tz, start) if start else None), (_day_start(tz, end, 1) if end else None)


def _day_start(tz: ZoneInfo, day: date, days_after: int = 0) -> datetime | None:
    # At the ends of the calendar (0001-01-01, 9999-12-31) there is no day after, or no UTC time
    # before: no bound there is the same range, and not an OverflowError.
    try:
        return datetime.combine(day + timedelta(days=days_after), time(), tzinfo=tz).astimezone(UTC)
    except OverflowError:
        return None


def encode_cursor(issued_at: datetime, invoice_id: uuid.UUID) -> str:
    micros = (issued_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{_CURSOR_VERSION}.{micros}.{invoice_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    bad = InvalidArgument.of(
        [FieldViolation("cursor", "is not a cursor this export gave; start again without one")],
        code="invalid_cursor",
    )
    if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, micros_text, id_text = raw.split(".")
        if version != _CURSOR_VERSION or not micros_text.lstrip("-").isdigit() or len(id_text) != 32:
            raise ValueError(raw)
        at = _EPOCH + timedelta(microseconds=int(micros_text))
        return at, uuid.UUID(hex=id_text)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise bad from None


def check_limit(limit: int, default: int) -> int:
    """0 is the default page; otherwise MIN_PAGE..MAX_PAGE rows."""
    if limit == 0:
        return default
    if not MIN_PAGE <= limit <= MAX_PAGE:
        raise InvalidArgument.of([FieldViolation("page_size", f"must be from {MIN_PAGE} to {MAX_PAGE}")])
    return limit


async def csv_page(
    uow: UnitOfWork,
    tz: ZoneInfo,
    start: date | None,
    end: date | None,
    statuses: Sequence[str],
    cursor: str,
    limit: int,
) -> tuple[str, str, int]:
    """One page of the export: (CSV text, with the header row when `cursor` is "", the cursor of the
    next page or "" when this was the last, the rows in this page). `statuses` empty means all."""
    wanted = check_filters(start, end, statuses)
    if not MIN_PAGE <= limit <= MAX_PAGE:
        raise InvalidArgument.of([FieldViolation("page_size", f"must be from {MIN_PAGE} to {MAX_PAGE}")])
    after = decode_cursor(cursor) if cursor else None
    low, high = utc_bounds(tz, start, end)
    # Text where the CSV wants text (ids, dates, the rate): Postgres formats them faster than the
    # driver parses them into objects for Python to format back, which is most of a page's cost.
    query = select(
        cast(invoices.c.id, Text).label("id"),
        invoices.c.number,
        invoices.c.status,
        invoices.c.issued_at,
        cast(invoices.c.due_date, Text).label("due_date"),
        invoices.c.client_name,
        invoices.c.client_email,
        invoices.c.currency,
        invoices.c.subtotal_cents,
        invoices.c.taxable_subtotal_cents,
        invoices.c.tax_cents,
        invoices.c.total_cents,
        cast(invoices.c.tax_rate_basis, Text).label("tax_rate_basis"),
        cast(invoices.c.booking_id, Text).label("booking_id"),
    ).where(invoices.c.issued_at.is_not(None), invoices.c.number.is_not(None))
    if set(wanted) != set(ACCOUNTING_STATUSES):
        query = query.where(invoices.c.status.in_(wanted))
    if low is not None:
        query = query.where(invoices.c.issued_at >= low)
    if high is not None:
        query = query.where(invoices.c.issued_at < high)
    if after is not None:
        query = query.where(tuple_(invoices.c.issued_at, invoices.c.id) > tuple_(*after))
    # One row more than the page: whether another page follows, without asking for an empty one.
    rows = (
        await uow.session.execute(query.order_by(invoices.c.issued_at, invoices.c.id).limit(limit + 1))
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    money = await _money(uow, [r.id for r in rows])
    lines: list[Sequence[Cell]] = [COLUMNS] if not cursor else []
    for r in rows:
        lines.append(_line(r, money.get(r.id), tz))
    next_cursor = encode_cursor(rows[-1].issued_at, uuid.UUID(rows[-1].id)) if more and rows else ""
    return csv_text(lines), next_cursor, len(rows)


@dataclass(frozen=True)
class _Money:
    paid_cents: int
    refunded_cents: int
    last_payment_at: datetime | None


async def _money(uow: UnitOfWork, ids: Sequence[str]) -> dict[str, _Money]:
    """The page's succeeded payments and counted refunds, one grouped query for all its invoices.

    A refund counts as payments.invoice_money counts it: only a succeeded refund of a succeeded Stripe
    payment of the same invoice, at most that payment's amount (a refund whose payment has not
    arrived counts for nothing), so the balance here is the balance the invoice views show."""
    if not ids:
        return {}
    p = invoice_payments.alias("p")
    rf = invoice_refunds.alias("rf")
    # One array parameter, not IN with 2,000 parameters: expanding and parsing those cost more than
    # the query itself.
    page_ids = bindparam("page_ids", list(ids), type_=ARRAY(UUID(as_uuid=False)))
    refunds = (
        select(
            rf.c.invoice_id,
            rf.c.payment_intent_id,
            func.sum(rf.c.amount_cents).label("cents"),
        )
        .where(rf.c.invoice_id == any_(page_ids), rf.c.status == "succeeded")
        .group_by(rf.c.invoice_id, rf.c.payment_intent_id)
        .subquery("refunds")
    )
    counted_refund = func.least(p.c.amount_cents, func.coalesce(refunds.c.cents, 0))
    query = (
        select(
            cast(p.c.invoice_id, Text).label("invoice_id"),
            func.sum(p.c.amount_cents).label("paid"),
            func.coalesce(func.sum(counted_refund).filter(p.c.provider == "stripe"), 0).label("refunded"),
            func.max(p.c.received_at).label("last_at"),
        )
        .select_from(
            p.outerjoin(
                refunds,
                and_(refunds.c.invoice_id == p.c.invoice_id, refunds.c.payment_intent_id == p.c.provider_ref),
            )
        )
        .where(p.c.invoice_id == any_(page_ids), p.c.status == "succeeded")
        .group_by(p.c.invoice_id)
    )
    return {
        r.invoice_id: _Money(int(r.paid), int(r.refunded), r.last_at)
        for r in await uow.session.execute(query)
    }


def _line(r: Any, money: _Money | None, tz: ZoneInfo) -> tuple[Cell, ...]:
    paid = money.paid_cents if money else 0
    refunded = money.refunded_cents if money else 0
    # What is still owed: nothing on a VOID invoice (cancelled); never below 0 (an overpayment is not
    # a debt of the client's).
    balance = 0 if r.status == "VOID" else max(r.total_cents - (paid - refunded), 0)
    last = money.last_payment_at.astimezone(tz).date() if money and money.last_payment_at else None
    return (
        r.id,
        r.number,
        r.status,
        r.issued_at.astimezone(tz).date(),
        r.due_date,
        r.client_name,
        r.client_email,
        r.currency,
        r.subtotal_cents,
        r.taxable_subtotal_cents,
        r.tax_cents,
        r.total_cents,
        r.tax_rate_basis,
        paid,
        refunded,
        balance,
        last,
        r.booking_id,
    )
