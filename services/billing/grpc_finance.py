"""The finance-books part of the billing servicer: expenses, GST instalments, the GST export ZIP and the
profit-and-loss and GST reports, all from the stored invoice snapshots. Finance roles (OWNER, ADMIN,
FINANCE) only. Proto in, domain call (expenses.py, tax_reports.py), proto out.

Every write is an admin write, audited by the unit of work (`billing.CreateExpense`, ...), with the
record before and after it (`uow.audit_change`): what was created, what an edit changed, what a delete
removed."""

from __future__ import annotations

from typing import Any

import grpc
from cws.billing.v1 import billing_pb2
from google.protobuf.message import Message

from libs.common import context as request_context
from libs.common.convert import page, to_ts
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import FieldViolation, InvalidArgument
from libs.common.roles import FINANCE_STAFF
from services.billing import expenses, orgs, tax_reports
from services.billing.peers import Peers
from services.billing.settings import BillingSettings

EXPENSE_FIELDS = ("spent_on", "category", "vendor", "description", "amount_cents", "gst_cents", "currency")
INSTALMENT_FIELDS = ("period_start", "period_end", "amount_cents", "currency", "paid_on", "reference")


class FinanceApi:
    db: Database
    settings: BillingSettings
    peers: Peers

    # --- expenses ------------------------------------------------------------------------------

    async def CreateExpense(
        self, request: billing_pb2.CreateExpenseRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateExpenseResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            fields = {name: getattr(request, name) for name in EXPENSE_FIELDS}
            fields["currency"] = request.currency or await self._home_currency(uow)
            created = await expenses.create_expense(uow, fields)
            uow.audit_change({}, {"expense_id": str(created.id), **created.audit()})
            return billing_pb2.CreateExpenseResponse(expense=expense_message(created))

    async def ListExpenses(
        self, request: billing_pb2.ListExpensesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListExpensesResponse:
        request_context.require_role(*FINANCE_STAFF)
        limit, offset = page(request.limit, request.offset)
        start, end = _optional_range(request.from_date, request.to_date)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, total = await expenses.list_expenses(
                uow, from_date=start, to_date=end, category=request.category, limit=limit, offset=offset
            )
        return billing_pb2.ListExpensesResponse(expenses=[expense_message(e) for e in found], total=total)

    async def GetExpense(
        self, request: billing_pb2.GetExpenseRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetExpenseResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await expenses.get_expense(uow, request.expense_id)
        return billing_pb2.GetExpenseResponse(expense=expense_message(found))

    async def UpdateExpense(
        self, request: billing_pb2.UpdateExpenseRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.UpdateExpenseResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            before, after = await expenses.update_expense(
                uow, request.expense_id, _present(request, EXPENSE_FIELDS)
            )
            uow.audit_change(before.audit(), after.audit())
        return billing_pb2.UpdateExpenseResponse(expense=expense_message(after))

    async def DeleteExpense(
        self, request: billing_pb2.DeleteExpenseRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.DeleteExpenseResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            gone = await expenses.delete_expense(uow, request.expense_id)
            uow.audit_change(gone.audit(), {})
        return billing_pb2.DeleteExpenseResponse()

    # --- tax instalments ---------------------------------------------------------------------------

    async def CreateTaxInstalment(
        self, request: billing_pb2.CreateTaxInstalmentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateTaxInstalmentResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            fields = {name: getattr(request, name) for name in INSTALMENT_FIELDS}
            fields["currency"] = request.currency or await self._home_currency(uow)
            created = await expenses.create_instalment(uow, fields)
            uow.audit_change({}, {"instalment_id": str(created.id), **created.audit()})
            return billing_pb2.CreateTaxInstalmentResponse(instalment=instalment_message(created))

    async def ListTaxInstalments(
        self, request: billing_pb2.ListTaxInstalmentsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListTaxInstalmentsResponse:
        request_context.require_role(*FINANCE_STAFF)
        limit, offset = page(request.limit, request.offset)
        start, end = _optional_range(request.from_date, request.to_date)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, total = await expenses.list_instalments(
                uow, from_date=start, to_date=end, status=request.status, limit=limit, offset=offset
            )
        return billing_pb2.ListTaxInstalmentsResponse(
            instalments=[instalment_message(i) for i in found], total=total
        )

    async def GetTaxInstalment(
        self, request: billing_pb2.GetTaxInstalmentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetTaxInstalmentResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await expenses.get_instalment(uow, request.instalment_id)
        return billing_pb2.GetTaxInstalmentResponse(instalment=instalment_message(found))

    async def UpdateTaxInstalment(
        self, request: billing_pb2.UpdateTaxInstalmentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.UpdateTaxInstalmentResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            before, after = await expenses.update_instalment(
                uow, request.instalment_id, _present(request, INSTALMENT_FIELDS)
            )
            uow.audit_change(before.audit(), after.audit())
        return billing_pb2.UpdateTaxInstalmentResponse(instalment=instalment_message(after))

    async def DeleteTaxInstalment(
        self, request: billing_pb2.DeleteTaxInstalmentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.DeleteTaxInstalmentResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            gone = await expenses.delete_instalment(uow, request.instalment_id)
            uow.audit_change(gone.audit(), {})
        return billing_pb2.DeleteTaxInstalmentResponse()

    # --- reports ---------------------------------------------------------------------------------

    async def ExportGst(
        self, request: billing_pb2.ExportGstRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ExportGstResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            org = await orgs.get(uow, self.settings, self.peers)
            period = tax_reports.parse_period(request.period.from_date, request.period.to_date, org.time_zone)
            content = await tax_reports.gst_zip(uow, period, org.currency, org.time_zone)
        return billing_pb2.ExportGstResponse(content=content, filename=tax_reports.export_filename(period))

    async def GetGstReport(
        self, request: billing_pb2.GetGstReportRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetGstReportResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            org = await orgs.get(uow, self.settings, self.peers)
            period = tax_reports.parse_period(request.period.from_date, request.period.to_date, org.time_zone)
            totals = await tax_reports.gst_totals(uow, period, org.currency)
        return billing_pb2.GetGstReportResponse(
            report=billing_pb2.GstReport(
                from_date=period.start.isoformat(),
                to_date=period.end.isoformat(),
                time_zone=org.time_zone,
                totals=[
                    billing_pb2.GstTotals(
                        currency=t.currency,
                        invoice_count=t.invoice_count,
                        sales_subtotal_cents=t.sales_subtotal_cents,
                        taxable_sales_cents=t.taxable_sales_cents,
                        gst_collected_cents=t.gst_collected_cents,
                        expense_count=t.expense_count,
                        expenses_cents=t.expenses_cents,
                        input_tax_credits_cents=t.input_tax_credits_cents,
                        instalment_count=t.instalment_count,
                        instalments_paid_cents=t.instalments_paid_cents,
                        net_owing_cents=t.net_owing_cents,
                    )
                    for t in totals
                ],
            )
        )

    async def GetProfitAndLoss(
        self, request: billing_pb2.GetProfitAndLossRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetProfitAndLossResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            org = await orgs.get(uow, self.settings, self.peers)
            period = tax_reports.parse_period(request.period.from_date, request.period.to_date, org.time_zone)
            reports = await tax_reports.profit_and_loss(uow, period, org.currency)
        return billing_pb2.GetProfitAndLossResponse(
            report=billing_pb2.ProfitAndLoss(
                from_date=period.start.isoformat(),
                to_date=period.end.isoformat(),
                time_zone=org.time_zone,
                totals=[
                    billing_pb2.ProfitAndLossTotals(
                        currency=r.currency,
                        invoice_count=r.invoice_count,
                        revenue_cents=r.revenue_cents,
                        tax_collected_cents=r.tax_collected_cents,
                        expenses=[
                            billing_pb2.ExpenseCategoryTotal(
                                category=c.category,
                                count=c.count,
                                net_cents=c.net_cents,
                                gst_cents=c.gst_cents,
                            )
                            for c in r.expenses
                        ],
                        total_expenses_cents=r.total_expenses_cents,
                        net_profit_cents=r.net_profit_cents,
                    )
                    for r in reports
                ],
            )
        )

    async def _home_currency(self, uow: UnitOfWork) -> str:
        """The org's invoicing currency: what an expense or instalment without one is in."""
        return (await orgs.get(uow, self.settings, self.peers)).currency


def _present(request: Message, names: tuple[str, ...]) -> dict[str, Any]:
    """The optional fields the caller set: only those change."""
    return {name: getattr(request, name) for name in names if request.HasField(name)}


def _optional_range(from_text: str, to_text: str) -> tuple[Any, Any]:
    """A list's optional bounds: each a real date when given; from after to is refused."""
    problems: list[FieldViolation] = []
    start = expenses.parse_day(from_text, "from", problems) if from_text else None
    end = expenses.parse_day(to_text, "to", problems) if to_text else None
    if start is not None and end is not None and start > end:
        problems.append(FieldViolation("to", "must be on or after from"))
    if problems:
        raise InvalidArgument.of(problems)
    return start, end


def expense_message(found: expenses.Expense) -> billing_pb2.Expense:
    return billing_pb2.Expense(
        id=str(found.id),
        spent_on=found.spent_on.isoformat(),
        category=found.category,
        vendor=found.vendor,
        description=found.description,
        amount_cents=found.amount_cents,
        gst_cents=found.gst_cents,
        currency=found.currency,
        created_at=to_ts(found.created_at),
        updated_at=to_ts(found.updated_at),
    )


def instalment_message(found: expenses.Instalment) -> billing_pb2.TaxInstalment:
    return billing_pb2.TaxInstalment(
        id=str(found.id),
        period_start=found.period_start.isoformat(),
        period_end=found.period_end.isoformat(),
        amount_cents=found.amount_cents,
        currency=found.currency,
        paid_on=found.paid_on.isoformat() if found.paid_on else "",
        reference=found.reference,
        created_at=to_ts(found.created_at),
        updated_at=to_ts(found.updated_at),
    )
