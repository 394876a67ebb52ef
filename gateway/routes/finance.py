"""Finance books and tax reports (seed 003 "Finance tax exports"): expenses, GST instalments, the GST
export ZIP, and the profit-and-loss and GST reports, for finance staff and the Basic Auth accountant.

Roles: OWNER, ADMIN, FINANCE tokens and Basic Auth's accountant pair (which signs in as FINANCE);
billing checks them again and confines every call to the caller's org (another org's ids: 404).
Reports and the ZIP take `from` and `to` (YYYY-MM-DD, both included, in the org's time zone, at most
366 days); billing checks the range, so the rule lives in one place (services/billing/tax_reports.py)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from cws.billing.v1 import billing_pb2
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import Field

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.routes.convert import optional_time
from gateway.schemas import Strict
from gateway.stubs import Billing
from libs.common.roles import FINANCE_STAFF

router = APIRouter(tags=["finance"])
FINANCE = Depends(require_roles(*FINANCE_STAFF))
Id = Annotated[str, Path(max_length=64)]
Cents = Annotated[
    int, Field(ge=1, le=10_000_000_000, description="integer cents, above 0 (at most 100 million)")
]
GstCents = Annotated[
    int,
    Field(
        ge=0,
        le=10_000_000_000,
        description="the GST within amount_cents, integer cents (at most amount_cents)",
    ),
]
Category = Annotated[str, Field(min_length=1, max_length=64, description="e.g. supplies, fuel, rent")]
Vendor = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=500)]
Reference = Annotated[str, Field(max_length=200)]
Currency = Annotated[str, Field(min_length=3, max_length=3, description="AUD, CAD, EUR, GBP or USD")]
# The report range: both required (a missing one is a 422 from FastAPI, as every missing parameter).
From = Annotated[
    str, Query(alias="from", max_length=10, description="first day, YYYY-MM-DD, in the org's time zone")
]
To = Annotated[
    str, Query(alias="to", max_length=10, description="last day, YYYY-MM-DD, included; at most 366 days")
]
OptionalFrom = Annotated[date | None, Query(alias="from", description="YYYY-MM-DD")]
OptionalTo = Annotated[date | None, Query(alias="to", description="YYYY-MM-DD, included")]


class ExpenseIn(Strict):
    spent_on: date
    category: Category
    vendor: Vendor
    description: Description = ""
    amount_cents: Cents
    gst_cents: GstCents = 0
    currency: Currency | None = None


class ExpensePatch(Strict):
    spent_on: date | None = None
    category: Category | None = None
    vendor: Vendor | None = None
    description: Description | None = None
    amount_cents: Cents | None = None
    gst_cents: GstCents | None = None
    currency: Currency | None = None


class InstalmentIn(Strict):
    period_start: date
    period_end: date
    amount_cents: Cents
    currency: Currency | None = None
    paid_on: date | None = Field(None, description="when it was paid; omitted or null: planned")
    reference: Reference = ""


class InstalmentPatch(Strict):
    period_start: date | None = None
    period_end: date | None = None
    amount_cents: Cents | None = None
    currency: Currency | None = None
    paid_on: date | None = Field(None, description="a date: paid then; null: planned (not paid) again")
    reference: Reference | None = None


def expense_view(message: billing_pb2.Expense) -> dict[str, Any]:
    return {
        "id": message.id,
        "spent_on": message.spent_on,
        "category": message.category,
        "vendor": message.vendor,
        "description": message.description,
        "amount_cents": message.amount_cents,
        "gst_cents": message.gst_cents,
        "net_cents": message.amount_cents - message.gst_cents,
        "currency": message.currency,
        "created_at": optional_time(message, "created_at"),
        "updated_at": optional_time(message, "updated_at"),
    }


def instalment_view(message: billing_pb2.TaxInstalment) -> dict[str, Any]:
    return {
        "id": message.id,
        "period_start": message.period_start,
        "period_end": message.period_end,
        "amount_cents": message.amount_cents,
        "currency": message.currency,
        "paid_on": message.paid_on or None,
        "reference": message.reference,
        "created_at": optional_time(message, "created_at"),
        "updated_at": optional_time(message, "updated_at"),
    }


def _texts(values: dict[str, Any]) -> dict[str, Any]:
    """Dates as the YYYY-MM-DD text billing takes; None stays None."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in values.items()}


# --- expenses ------------------------------------------------------------------------------------


@router.post(
    "/v1/admin/finance/expenses",
    status_code=201,
    dependencies=[ADMIN, FINANCE],
    summary="Record an expense: amount paid GST included, and the GST within it (an input tax credit)",
)
async def create_expense(body: ExpenseIn, billing: Billing) -> dict[str, Any]:
    fields = _texts(body.model_dump())
    fields["currency"] = fields["currency"] or ""
    response = await billing.CreateExpense(billing_pb2.CreateExpenseRequest(**fields))
    return expense_view(response.expense)


@router.get(
    "/v1/admin/finance/expenses",
    dependencies=[ADMIN, FINANCE],
    summary="The org's expenses, latest spent first; from/to on spent_on, category exact",
)
async def list_expenses(
    billing: Billing,
    from_date: OptionalFrom = None,
    to_date: OptionalTo = None,
    category: Annotated[str, Query(max_length=64)] = "",
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    response = await billing.ListExpenses(
        billing_pb2.ListExpensesRequest(
            from_date=from_date.isoformat() if from_date else "",
            to_date=to_date.isoformat() if to_date else "",
            category=category,
            limit=limit,
            offset=offset,
        )
    )
    return {"total": response.total, "items": [expense_view(e) for e in response.expenses]}


@router.get("/v1/admin/finance/expenses/{expense_id}", dependencies=[ADMIN, FINANCE], summary="One expense")
async def get_expense(expense_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.GetExpense(billing_pb2.GetExpenseRequest(expense_id=expense_id))
    return expense_view(response.expense)


@router.patch(
    "/v1/admin/finance/expenses/{expense_id}",
    dependencies=[ADMIN, FINANCE],
    summary="Change the fields given (null or absent: unchanged); audited before/after",
)
async def update_expense(expense_id: Id, body: ExpensePatch, billing: Billing) -> dict[str, Any]:
    changes = {k: v for k, v in _texts(body.model_dump(exclude_unset=True)).items() if v is not None}
    response = await billing.UpdateExpense(billing_pb2.UpdateExpenseRequest(expense_id=expense_id, **changes))
    return expense_view(response.expense)


@router.delete(
    "/v1/admin/finance/expenses/{expense_id}",
    status_code=204,
    response_class=Response,
    dependencies=[ADMIN, FINANCE],
    summary="Delete an expense (audited with what it was)",
)
async def delete_expense(expense_id: Id, billing: Billing) -> Response:
    await billing.DeleteExpense(billing_pb2.DeleteExpenseRequest(expense_id=expense_id))
    return Response(status_code=204)


# --- GST instalments ---------------------------------------------------------------------------------


@router.post(
    "/v1/admin/finance/tax-instalments",
    status_code=201,
    dependencies=[ADMIN, FINANCE],
    summary="Record a GST instalment toward a period; paid_on omitted: planned",
)
async def create_instalment(body: InstalmentIn, billing: Billing) -> dict[str, Any]:
    fields = _texts(body.model_dump())
    fields["currency"] = fields["currency"] or ""
    fields["paid_on"] = fields["paid_on"] or ""
    response = await billing.CreateTaxInstalment(billing_pb2.CreateTaxInstalmentRequest(**fields))
    return instalment_view(response.instalment)


@router.get(
    "/v1/admin/finance/tax-instalments",
    dependencies=[ADMIN, FINANCE],
    summary="The org's GST instalments whose period overlaps from..to, latest period first",
)
async def list_instalments(
    billing: Billing,
    from_date: OptionalFrom = None,
    to_date: OptionalTo = None,
    status: Literal["paid", "planned"] | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    response = await billing.ListTaxInstalments(
        billing_pb2.ListTaxInstalmentsRequest(
            from_date=from_date.isoformat() if from_date else "",
            to_date=to_date.isoformat() if to_date else "",
            status=status or "",
            limit=limit,
            offset=offset,
        )
    )
    return {"total": response.total, "items": [instalment_view(i) for i in response.instalments]}


@router.get(
    "/v1/admin/finance/tax-instalments/{instalment_id}",
    dependencies=[ADMIN, FINANCE],
    summary="One GST instalment",
)
async def get_instalment(instalment_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.GetTaxInstalment(
        billing_pb2.GetTaxInstalmentRequest(instalment_id=instalment_id)
    )
    return instalment_view(response.instalment)


@router.patch(
    "/v1/admin/finance/tax-instalments/{instalment_id}",
    dependencies=[ADMIN, FINANCE],
    summary="Change the fields given; paid_on null: planned again; audited before/after",
)
async def update_instalment(instalment_id: Id, body: InstalmentPatch, billing: Billing) -> dict[str, Any]:
    given = _texts(body.model_dump(exclude_unset=True))
    changes = {k: v for k, v in given.items() if v is not None}
    if "paid_on" in given and given["paid_on"] is None:
        changes["paid_on"] = ""  # present and empty: not paid
    response = await billing.UpdateTaxInstalment(
        billing_pb2.UpdateTaxInstalmentRequest(instalment_id=instalment_id, **changes)
    )
    return instalment_view(response.instalment)


@router.delete(
    "/v1/admin/finance/tax-instalments/{instalment_id}",
    status_code=204,
    response_class=Response,
    dependencies=[ADMIN, FINANCE],
    summary="Delete a GST instalment (audited with what it was)",
)
async def delete_instalment(instalment_id: Id, billing: Billing) -> Response:
    await billing.DeleteTaxInstalment(billing_pb2.DeleteTaxInstalmentRequest(instalment_id=instalment_id))
    return Response(status_code=204)


# --- reports -------------------------------------------------------------------------------------------

ZIP: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {}},
        "description": "summary.csv, payments.csv, expenses.csv and instalments.csv",
    }
}


def _period(from_date: str, to_date: str) -> billing_pb2.ReportPeriod:
    return billing_pb2.ReportPeriod(from_date=from_date, to_date=to_date)


@router.get(
    "/v1/admin/finance/taxes/export",
    dependencies=[ADMIN, FINANCE],
    response_class=Response,
    responses=ZIP,
    summary="The GST export of a period: a ZIP of CSV files (at most 366 days)",
)
async def gst_export(billing: Billing, from_date: From, to_date: To) -> Response:
    response = await billing.ExportGst(billing_pb2.ExportGstRequest(period=_period(from_date, to_date)))
    return Response(
        response.content,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{response.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/v1/admin/finance/reports/gst",
    dependencies=[ADMIN, FINANCE],
    summary="GST collected, input tax credits, instalments and net owing of a period, per currency",
)
async def gst_report(billing: Billing, from_date: From, to_date: To) -> dict[str, Any]:
    report = (
        await billing.GetGstReport(billing_pb2.GetGstReportRequest(period=_period(from_date, to_date)))
    ).report
    return {
        "from": report.from_date,
        "to": report.to_date,
        "time_zone": report.time_zone,
        "totals": [
            {
                "currency": t.currency,
                "invoice_count": t.invoice_count,
                "sales_subtotal_cents": t.sales_subtotal_cents,
                "taxable_sales_cents": t.taxable_sales_cents,
                "gst_collected_cents": t.gst_collected_cents,
                "expense_count": t.expense_count,
                "expenses_cents": t.expenses_cents,
                "input_tax_credits_cents": t.input_tax_credits_cents,
                "instalment_count": t.instalment_count,
                "instalments_paid_cents": t.instalments_paid_cents,
                "net_owing_cents": t.net_owing_cents,
            }
            for t in report.totals
        ],
    }


@router.get(
    "/v1/admin/finance/reports/pnl",
    dependencies=[ADMIN, FINANCE],
    summary="Profit and loss of a period: revenue from the invoice snapshots, expenses by category, per currency",
)
async def pnl_report(billing: Billing, from_date: From, to_date: To) -> dict[str, Any]:
    report = (
        await billing.GetProfitAndLoss(
            billing_pb2.GetProfitAndLossRequest(period=_period(from_date, to_date))
        )
    ).report
    return {
        "from": report.from_date,
        "to": report.to_date,
        "time_zone": report.time_zone,
        "totals": [
            {
                "currency": t.currency,
                "invoice_count": t.invoice_count,
                "revenue_cents": t.revenue_cents,
                "tax_collected_cents": t.tax_collected_cents,
                "expenses_by_category": [
                    {
                        "category": c.category,
                        "count": c.count,
                        "net_cents": c.net_cents,
                        "gst_cents": c.gst_cents,
                    }
                    for c in t.expenses
                ],
                "total_expenses_cents": t.total_expenses_cents,
                "net_profit_cents": t.net_profit_cents,
            }
            for t in report.totals
        ],
    }
