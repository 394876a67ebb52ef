"""The GST and profit-and-loss figures of a period, and the GST export ZIP (seed 003 "Finance tax
exports", seed 002 "Invoice tax snapshots and reporting").

Rules:
- A period is two calendar dates in the org's time zone, both included, at most MAX_DAYS apart (the
  ZIP is built in memory). An invoice belongs to it by the local date of `issued_at` (an invoice issued
  at 23:30 in Toronto on 31 March is in Q1 although it is 1 April in UTC); the dates become a half-open
  UTC range [start 00:00 local, the day after the end 00:00 local), so every read is a range scan on
  ix_invoices_org_issued, ix_expenses_org_spent, ix_tax_instalments_org_paid or
  ix_invoice_payments_org_received, with the sums grouped in Postgres.
- GST collected is the sum of the invoices' stored `tax_cents` snapshots, taxable sales of their
  `taxable_subtotal_cents`: never recomputed from today's tax settings. VOID invoices are left out;
  every other issued invoice counts, paid or not (GST is owed on what was invoiced).
- Input tax credits are the GST within the expenses spent in the period; instalments are those paid
  in it. Net owing = collected - credits - instalments, negative when a refund is due.
- Every figure is per currency; a period with nothing in it shows the org's currency with zeros.
- Refunds do not lower GST collected (that would take a credit note, which billing does not issue);
  payments.csv lists them as rows of their own, kind `refund`, with a negative amount."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, literal, select

from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument, invalid
from services.billing.csv_cells import Cell, csv_text
from services.billing.expenses import parse_day
from services.billing.models import expenses, invoice_payments, invoice_refunds, invoices, tax_instalments

MAX_DAYS = 366
# What one gRPC answer may carry to the gateway is 16 MiB; a ZIP above this is refused, not cut short.
MAX_ZIP_BYTES = 15 * 1024 * 1024
CSV_BATCH = 500  # rows written to the ZIP at a time while a detail file is read

SUMMARY_COLUMNS = (
    "from",
    "to",
    "time_zone",
    "currency",
    "invoice_count",
    "sales_subtotal_cents",
    "taxable_sales_cents",
    "gst_collected_cents",
    "expense_count",
    "expenses_cents",
    "input_tax_credits_cents",
    "instalment_count",
    "instalments_paid_cents",
    "net_owing_cents",
)
PAYMENT_COLUMNS = (
    "kind",
    "id",
    "received_on",
    "received_at_utc",
    "invoice_number",
    "invoice_id",
    "provider",
    "method",
    "currency",
    "amount_cents",
    "reference",
)
EXPENSE_COLUMNS = (
    "id",
    "spent_on",
    "category",
    "vendor",
    "description",
    "currency",
    "amount_cents",
    "gst_cents",
    "net_cents",
)
INSTALMENT_COLUMNS = ("id", "period_start", "period_end", "paid_on", "currency", "amount_cents", "reference")


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    zone: ZoneInfo

    @property
    def utc_start(self) -> datetime:
        return datetime.combine(self.start, time(), tzinfo=self.zone).astimezone(UTC)

    @property
    def utc_end(self) -> datetime:
        """The first instant after the period: midnight local at the start of the day after its end."""
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=self.zone).astimezone(UTC)


def parse_period(from_text: str, to_text: str, time_zone: str) -> Period:
    """The period `from`..`to` (YYYY-MM-DD, both required, both included) in the org's zone."""
    problems: list[FieldViolation] = []
    start = parse_day(from_text, "from", problems)
    end = parse_day(to_text, "to", problems)
    if start is not None and end is not None:
        if start > end:
            problems.append(FieldViolation("to", "must be on or after from"))
        elif (end - start).days + 1 > MAX_DAYS:
            problems.append(
                FieldViolation(
                    "to",
                    f"the range is {(end - start).days + 1} days; a tax report covers at most {MAX_DAYS}"
                    " days (ask for one year at a time)",
                )
            )
    if problems:
        raise InvalidArgument.of(problems)
    assert start is not None and end is not None
    return Period(start, end, zone_of(time_zone))


def zone_of(name: str) -> ZoneInfo:
    """The org's zone; UTC when it names none this machine knows (as orgs.today_in)."""
    try:
        return ZoneInfo(name or "UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


# --- the figures ---------------------------------------------------------------------------------


@dataclass
class GstTotals:
    currency: str
    invoice_count: int = 0
    sales_subtotal_cents: int = 0
    taxable_sales_cents: int = 0
    gst_collected_cents: int = 0
    expense_count: int = 0
    expenses_cents: int = 0
    input_tax_credits_cents: int = 0
    instalment_count: int = 0
    instalments_paid_cents: int = 0

    @property
    def net_owing_cents(self) -> int:
        return self.gst_collected_cents - self.input_tax_credits_cents - self.instalments_paid_cents


@dataclass(frozen=True)
class CategoryTotal:
    category: str
    count: int
    net_cents: int  # what was paid less its GST
    gst_cents: int


@dataclass
class ProfitAndLoss:
    currency: str
    invoice_count: int = 0
    revenue_cents: int = 0  # invoice subtotals: tax excluded
    tax_collected_cents: int = 0
    expenses: list[CategoryTotal] = field(default_factory=list)

    @property
    def total_expenses_cents(self) -> int:
        return sum(c.net_cents for c in self.expenses)

    @property
    def net_profit_cents(self) -> int:
        return self.revenue_cents - self.total_expenses_cents


def _issued_in(period: Period, uow: UnitOfWork) -> list[Any]:
    return [
        invoices.c.org_id == uow.org_id,
        invoices.c.issued_at >= period.utc_start,
        invoices.c.issued_at < period.utc_end,
        invoices.c.status != "VOID",
    ]


def _spent_in(period: Period, uow: UnitOfWork) -> list[Any]:
    return [expenses.c.org_id == uow.org_id, expenses.c.spent_on.between(period.start, period.end)]


def _paid_in(period: Period, uow: UnitOfWork) -> list[Any]:
    return [
        tax_instalments.c.org_id == uow.org_id,
        tax_instalments.c.paid_on.between(period.start, period.end),
    ]


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def _ordered(currencies: set[str], home: str) -> list[str]:
    """The org's currency first (and alone when nothing happened), then the others A to Z."""
    return [home, *sorted(currencies - {home})]


async def gst_totals(uow: UnitOfWork, period: Period, home_currency: str) -> list[GstTotals]:
    """The GST figures of the period, one per currency: three grouped queries, nothing loaded row by row."""
    sales = await uow.session.execute(
        select(
            invoices.c.currency,
            func.count(),
            _sum(invoices.c.subtotal_cents),
            _sum(invoices.c.taxable_subtotal_cents),
            _sum(invoices.c.tax_cents),
        )
        .where(*_issued_in(period, uow))
        .group_by(invoices.c.currency)
    )
    spent = await uow.session.execute(
        select(expenses.c.currency, func.count(), _sum(expenses.c.amount_cents), _sum(expenses.c.gst_cents))
        .where(*_spent_in(period, uow))
        .group_by(expenses.c.currency)
    )
    paid = await uow.session.execute(
        select(tax_instalments.c.currency, func.count(), _sum(tax_instalments.c.amount_cents))
        .where(*_paid_in(period, uow))
        .group_by(tax_instalments.c.currency)
    )
    totals: dict[str, GstTotals] = {}

    def of(currency: str) -> GstTotals:
        return totals.setdefault(currency, GstTotals(currency))

    for currency, count, subtotal, taxable, tax in sales.all():
        found = of(currency)
        found.invoice_count, found.sales_subtotal_cents = int(count), int(subtotal)
        found.taxable_sales_cents, found.gst_collected_cents = int(taxable), int(tax)
    for currency, count, amount, gst in spent.all():
        found = of(currency)
        found.expense_count, found.expenses_cents, found.input_tax_credits_cents = (
            int(count),
            int(amount),
            int(gst),
        )
    for currency, count, amount in paid.all():
        found = of(currency)
        found.instalment_count, found.instalments_paid_cents = int(count), int(amount)
    return [totals.get(c) or GstTotals(c) for c in _ordered(set(totals), home_currency)]


async def profit_and_loss(uow: UnitOfWork, period: Period, home_currency: str) -> list[ProfitAndLoss]:
    """Revenue from the invoice snapshots and expenses by category, both without tax, per currency."""
    sales = await uow.session.execute(
        select(invoices.c.currency, func.count(), _sum(invoices.c.subtotal_cents), _sum(invoices.c.tax_cents))
        .where(*_issued_in(period, uow))
        .group_by(invoices.c.currency)
    )
    spent = await uow.session.execute(
        select(
            expenses.c.currency,
            expenses.c.category,
            func.count(),
            _sum(expenses.c.amount_cents - expenses.c.gst_cents),
            _sum(expenses.c.gst_cents),
        )
        .where(*_spent_in(period, uow))
        .group_by(expenses.c.currency, expenses.c.category)
        .order_by(expenses.c.currency, expenses.c.category)
    )
    reports: dict[str, ProfitAndLoss] = {}
    for currency, count, subtotal, tax in sales.all():
        report = reports.setdefault(currency, ProfitAndLoss(currency))
        report.invoice_count, report.revenue_cents, report.tax_collected_cents = (
            int(count),
            int(subtotal),
            int(tax),
        )
    for currency, category, count, net, gst in spent.all():
        reports.setdefault(currency, ProfitAndLoss(currency)).expenses.append(
            CategoryTotal(category, int(count), int(net), int(gst))
        )
    return [reports.get(c) or ProfitAndLoss(c) for c in _ordered(set(reports), home_currency)]


# --- the ZIP -------------------------------------------------------------------------------------


def export_filename(period: Period) -> str:
    return f"gst_export_{period.start.isoformat()}_{period.end.isoformat()}.zip"


async def gst_zip(uow: UnitOfWork, period: Period, home_currency: str, time_zone: str) -> bytes:
    """summary.csv (the figures of gst_totals, a row per currency), payments.csv (succeeded payments
    received and succeeded refunds made in the period), expenses.csv and instalments.csv (what the
    credits and instalments add up from). The detail files are read with server-side cursors and
    compressed batch by batch, so only the compressed ZIP is held whole."""
    totals = await gst_totals(uow, period, home_currency)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "summary.csv", csv_text([SUMMARY_COLUMNS, *(_summary_line(period, time_zone, t) for t in totals)])
        )
        await _write(archive, "payments.csv", PAYMENT_COLUMNS, _payment_lines(uow, period))
        await _write(
            archive, "expenses.csv", EXPENSE_COLUMNS, _lines(uow, _expenses_query(uow, period), _expense_line)
        )
        await _write(
            archive,
            "instalments.csv",
            INSTALMENT_COLUMNS,
            _lines(uow, _instalments_query(uow, period), _instalment_line),
        )
        if buffer.tell() > MAX_ZIP_BYTES:
            raise _too_big(buffer.tell())
    if buffer.tell() > MAX_ZIP_BYTES:
        raise _too_big(buffer.tell())
    return buffer.getvalue()


def _too_big(size: int) -> InvalidArgument:
    return invalid(
        "to",
        f"the export of this range is over {MAX_ZIP_BYTES // (1024 * 1024)} MB ({size // (1024 * 1024)} MB"
        " so far); ask for a shorter range",
    )


async def _write(
    archive: zipfile.ZipFile, name: str, columns: Sequence[str], lines: AsyncIterator[Sequence[Cell]]
) -> None:
    with archive.open(name, "w") as member:
        member.write(csv_text([columns]).encode())
        batch: list[Sequence[Cell]] = []
        async for line in lines:
            batch.append(line)
            if len(batch) >= CSV_BATCH:
                member.write(csv_text(batch).encode())
                batch.clear()
        member.write(csv_text(batch).encode())


async def _lines(uow: UnitOfWork, query: Select[Any], line: Any) -> AsyncIterator[Sequence[Cell]]:
    result = await uow.session.stream(query.execution_options(yield_per=CSV_BATCH))
    async for row in result:
        yield line(row)


def _summary_line(period: Period, time_zone: str, t: GstTotals) -> tuple[Cell, ...]:
    return (
        period.start,
        period.end,
        time_zone or "UTC",
        t.currency,
        t.invoice_count,
        t.sales_subtotal_cents,
        t.taxable_sales_cents,
        t.gst_collected_cents,
        t.expense_count,
        t.expenses_cents,
        t.input_tax_credits_cents,
        t.instalment_count,
        t.instalments_paid_cents,
        t.net_owing_cents,
    )


async def _payment_lines(uow: UnitOfWork, period: Period) -> AsyncIterator[Sequence[Cell]]:
    """Succeeded payments by received_at, then succeeded refunds by when they were made (negative)."""
    paid = (
        select(
            literal("payment").label("kind"),
            invoice_payments.c.id,
            invoice_payments.c.received_at.label("at"),
            invoices.c.number,
            invoice_payments.c.invoice_id,
            invoice_payments.c.provider,
            invoice_payments.c.method,
            invoice_payments.c.currency,
            invoice_payments.c.amount_cents,
            invoice_payments.c.reference,
        )
        .join(
            invoices,
            and_(
                invoices.c.org_id == invoice_payments.c.org_id, invoices.c.id == invoice_payments.c.invoice_id
            ),
        )
        .where(
            invoice_payments.c.org_id == uow.org_id,
            invoice_payments.c.received_at >= period.utc_start,
            invoice_payments.c.received_at < period.utc_end,
            invoice_payments.c.status == "succeeded",
        )
        .order_by(invoice_payments.c.received_at, invoice_payments.c.id)
    )
    refunded = (
        select(
            literal("refund").label("kind"),
            invoice_refunds.c.id,
            invoice_refunds.c.created_at.label("at"),
            invoices.c.number,
            invoice_refunds.c.invoice_id,
            literal("stripe").label("provider"),
            literal("card").label("method"),
            invoice_refunds.c.currency,
            (-invoice_refunds.c.amount_cents).label("amount_cents"),
            invoice_refunds.c.stripe_refund_id.label("reference"),
        )
        .join(
            invoices,
            and_(
                invoices.c.org_id == invoice_refunds.c.org_id, invoices.c.id == invoice_refunds.c.invoice_id
            ),
        )
        .where(
            invoice_refunds.c.org_id == uow.org_id,
            invoice_refunds.c.created_at >= period.utc_start,
            invoice_refunds.c.created_at < period.utc_end,
            invoice_refunds.c.status == "succeeded",
        )
        .order_by(invoice_refunds.c.created_at, invoice_refunds.c.id)
    )
    for query in (paid, refunded):
        async for line in _lines(uow, query, lambda row: _payment_line(row, period.zone)):
            yield line


def _payment_line(row: Any, zone: ZoneInfo) -> tuple[Cell, ...]:
    return (
        row.kind,
        str(row.id),
        row.at.astimezone(zone).date(),
        row.at.astimezone(UTC).replace(microsecond=0),
        row.number,
        str(row.invoice_id),
        row.provider,
        row.method,
        row.currency,
        int(row.amount_cents),
        row.reference,
    )


def _expenses_query(uow: UnitOfWork, period: Period) -> Select[Any]:
    return select(expenses).where(*_spent_in(period, uow)).order_by(expenses.c.spent_on, expenses.c.id)


def _expense_line(row: Any) -> tuple[Cell, ...]:
    return (
        str(row.id),
        row.spent_on,
        row.category,
        row.vendor,
        row.description,
        row.currency,
        row.amount_cents,
        row.gst_cents,
        row.amount_cents - row.gst_cents,
    )


def _instalments_query(uow: UnitOfWork, period: Period) -> Select[Any]:
    return (
        select(tax_instalments)
        .where(*_paid_in(period, uow))
        .order_by(tax_instalments.c.paid_on, tax_instalments.c.id)
    )


def _instalment_line(row: Any) -> tuple[Cell, ...]:
    return (
        str(row.id),
        row.period_start,
        row.period_end,
        row.paid_on,
        row.currency,
        row.amount_cents,
        row.reference,
    )
