"""The accounting CSV for finance staff (seed 002 "Accounting export v1"), streamed page by page from
billing as it is read, and the monthly exports the `accounting-export` job kept for review.

`GET /v1/admin/exports/accounting.csv?from=&to=&status=...`: OWNER, ADMIN, FINANCE and Basic Auth's
accountant pair (the same dependency as the invoices); billing checks the role again and reads only
the caller's org. The first page is fetched before anything is sent, so a bad filter is a clean 422
Problem+JSON and a refused role a 403; then the answer is a CSV stream that asks billing for one page
after another while it writes, so neither process holds more than a page whatever the range."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Any

from cws.billing.v1 import billing_pb2
from cws.notify.v1 import notify_pb2
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.problems import ProblemError, uuid_param
from gateway.routes.convert import optional_time
from gateway.stubs import Billing, BillingStub, Notify
from libs.common.roles import FINANCE_STAFF

router = APIRouter(tags=["accounting"])
FINANCE = Depends(require_roles(*FINANCE_STAFF))
# More `status` values than there are statuses is a mistake (or an attack on the query string).
MAX_STATUSES = 10
CSV: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {}},
        "description": "one row per issued invoice (header row first), streamed; see docs/billing.md",
    }
}


@router.get(
    "/v1/admin/exports/accounting.csv",
    dependencies=[ADMIN, FINANCE],
    response_class=StreamingResponse,
    responses=CSV,
    summary="The accounting CSV: issued invoices' snapshot totals, payments and balances, streamed",
)
async def accounting_csv(
    billing: Billing,
    from_: Annotated[
        date | None, Query(alias="from", description="inclusive, the org's local date of issue")
    ] = None,
    to: Annotated[date | None, Query(description="inclusive, the org's local date of issue")] = None,
    status: Annotated[
        list[str],
        Query(description="repeatable: SENT, PARTIAL, PAID, OVERDUE, VOID (none: all of them)"),
    ] = [],  # noqa: B006 - FastAPI copies a Query default per request
) -> StreamingResponse:
    if len(status) > MAX_STATUSES:
        raise ProblemError(
            422,
            "validation_error",
            f"name at most {MAX_STATUSES} statuses",
            errors=[{"field": "status", "message": f"at most {MAX_STATUSES} values"}],
        )
    request = billing_pb2.ExportAccountingCsvRequest(
        from_date=from_.isoformat() if from_ else "",
        to_date=to.isoformat() if to else "",
        statuses=[s[:64] for s in status],
    )
    # Before the status line: a bad filter, a refused role or billing being away is a Problem+JSON.
    first = await billing.ExportAccountingCsv(request)
    filename = f"accounting_{from_.isoformat() if from_ else 'start'}_{to.isoformat() if to else 'end'}.csv"
    return StreamingResponse(
        _pages(billing, request, first),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


async def _pages(
    billing: BillingStub,
    request: billing_pb2.ExportAccountingCsvRequest,
    first: billing_pb2.ExportAccountingCsvResponse,
) -> AsyncIterator[bytes]:
    """The first page, then each next one. The next page is asked for while the current one is being
    written, so billing's reading and the client's download overlap; at most two pages are held here.

    A page that fails once the 200 and earlier rows are sent cannot become a Problem+JSON any more.
    The error is raised, not swallowed: the server then drops the connection without the final chunk,
    so the client sees a broken transfer (curl: "transfer closed with outstanding read data") rather
    than a file that looks complete but is short, which an accountant would file as the whole month."""
    page = first
    ahead: asyncio.Task[billing_pb2.ExportAccountingCsvResponse] | None = None
    try:
        while True:
            if page.next_cursor:
                ahead = asyncio.ensure_future(
                    billing.ExportAccountingCsv(
                        billing_pb2.ExportAccountingCsvRequest(
                            from_date=request.from_date,
                            to_date=request.to_date,
                            statuses=request.statuses,
                            cursor=page.next_cursor,
                        )
                    )
                )
            yield page.csv.encode()
            if ahead is None:
                return
            page, ahead = await ahead, None
    finally:
        # The client went away (or a page failed): no call is left running for nobody.
        if ahead is not None:
            ahead.cancel()


# --- the monthly exports kept for review (the accounting-export job; notify's export_events) ------
# With EXPORT_MODE other than webhook, each month's CSV is kept in notify for finance staff. These
# paths cannot meet accounting.csv above: `accounting/{export_id}` has a segment more.

STORED_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "the month's CSV as the job made it"}
}


def stored_export(message: notify_pb2.StoredExport) -> dict[str, Any]:
    return {
        "id": message.id,
        "period": message.period,
        "filename": message.filename,
        "rows": message.rows,
        "bytes": message.bytes,
        "created_at": optional_time(message, "created_at"),
    }


@router.get(
    "/v1/admin/exports/accounting",
    dependencies=[ADMIN, FINANCE],
    summary="The monthly accounting CSVs the accounting-export job kept for review, newest month first",
)
async def stored_accounting_exports(
    notify: Notify,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> list[dict[str, Any]]:
    response = await notify.ListStoredExports(notify_pb2.ListStoredExportsRequest(limit=limit, offset=offset))
    return [stored_export(e) for e in response.exports]


@router.get(
    "/v1/admin/exports/accounting/{export_id}",
    dependencies=[ADMIN, FINANCE],
    response_class=Response,
    responses=STORED_CSV,
    summary="One kept monthly accounting CSV, as a download",
)
async def stored_accounting_export(export_id: str, notify: Notify) -> Response:
    found = await notify.GetStoredExport(
        notify_pb2.GetStoredExportRequest(id=uuid_param(export_id, "export_id"))
    )
    return Response(
        found.content.encode(),
        media_type="text/csv; charset=utf-8",
        headers={
            # notify accepts only [A-Za-z0-9._-] names, so the header needs no quoting beyond this.
            "Content-Disposition": f'attachment; filename="{found.export.filename}"',
            "Cache-Control": "no-store",
        },
    )
