"""The accounting part of the billing servicer: the accounting CSV (keyset pages of snapshot rows, for
the gateway to stream) and the monthly `accounting-export` run for the jobs service."""

from __future__ import annotations

import grpc
from cws.billing.v1 import billing_pb2

from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from libs.common.errors import PermissionDenied
from libs.common.roles import FINANCE_STAFF
from services.billing import accounting, accounting_export, orgs
from services.billing.grpc_invoices import parse_date
from services.billing.peers import Peers
from services.billing.settings import BillingSettings


class AccountingApi:
    db: Database
    settings: BillingSettings
    peers: Peers

    async def ExportAccountingCsv(
        self, request: billing_pb2.ExportAccountingCsvRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ExportAccountingCsvResponse:
        """One page, in its own short read transaction: an export of any length holds no transaction
        (and no connection) between pages, and this process holds one page in memory."""
        request_context.require_role(*FINANCE_STAFF)
        start = parse_date(request.from_date, "from")
        end = parse_date(request.to_date, "to")
        statuses = accounting.check_filters(start, end, list(request.statuses))
        limit = accounting.check_limit(request.page_size, self.settings.accounting_export_page_size)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            zone = (await orgs.get(uow, self.settings, self.peers)).time_zone
            text, next_cursor, rows = await accounting.csv_page(
                uow, accounting.zone_of(zone), start, end, statuses, request.cursor, limit
            )
        return billing_pb2.ExportAccountingCsvResponse(
            csv=text, next_cursor=next_cursor, rows=rows, time_zone=zone
        )

    # --- the monthly accounting-export job (services/billing/accounting_export.py) -------------------

    async def RunAccountingExport(
        self, request: billing_pb2.RunAccountingExportRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RunAccountingExportResponse:
        """The jobs service's call, once per org: people download the CSV (ExportAccountingCsv); a month
        handed to notify is the scheduler's business, so no user can make one or stop the next."""
        ctx = request_context.require_service()
        if ctx.principal_id != "service:jobs":
            raise PermissionDenied("only the jobs service runs the accounting export", code="service_only")
        done = await accounting_export.run(
            self.db,
            self.settings,
            self.peers,
            request_context.current_org_id(),
            request.month,
            ctx.request_id,
        )
        return billing_pb2.RunAccountingExportResponse(
            period=done.period,
            exported=int(done.exported),
            already_exported=int(not done.exported),
            rows=done.rows,
            bytes=done.bytes,
            delivery=done.delivery,
        )
