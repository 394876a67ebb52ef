"""The monthly accounting export (seed 002 "Accounting export v1"): the `accounting-export` job calls
RunAccountingExport for each org, and the month (by default the previous calendar month in the org's
time zone) goes to notify once: as an export webhook (EXPORT_MODE=webhook with EXPORT_WEBHOOK_URL),
or kept in notify's export_events with mode=accounting_csv for review. Where it goes is notify's
setting; billing only hands it over.

Once per org and month, by billing.accounting_exports (org, period):
1. a month already in accounting_exports is skipped (the job runs daily; each month goes out once);
2. the CSV is built with accounting.csv_page, page by page, each page its own short read;
3. notify gets it with the dedupe key export:accounting_csv:YYYY-MM;
4. the accounting_exports row is written.
A crash between 3 and 4 only repeats 3 on the next run, and notify's dedupe key answers with the first
export, so the accountant never gets a month twice. A month with no invoices still goes out, as the
header row alone: the accountant sees the month was run and had nothing.

The CSV travels in one gRPC message, and notify's server takes gRPC's default 4 MiB: a month whose CSV
is larger (tens of thousands of invoices) fails that org's run with FAILED_PRECONDITION naming the
size; the same rows can be had, streamed, from GET /v1/admin/exports/accounting.csv?from=&to=."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cws.notify.v1 import notify_pb2
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.context import service_context
from libs.common.db import Database, unit_of_work
from libs.common.errors import FailedPrecondition, invalid
from libs.common.grpc_client import acting_as, peer_answers
from services.billing import accounting, orgs
from services.billing.models import accounting_exports
from services.billing.peers import Peers
from services.billing.settings import BillingSettings

MODE = "accounting_csv"
# gRPC's default limit on a message a server receives (notify's servers keep it), less room for the
# request's other fields.
GRPC_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_CSV_BYTES = GRPC_MESSAGE_BYTES - 16 * 1024
MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class Month:
    start: date  # the first day
    end: date  # the last day

    @property
    def period(self) -> str:
        return f"{self.start:%Y-%m}"

    @classmethod
    def of(cls, day: date) -> Month:
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return cls(first, following - timedelta(days=1))


@dataclass(frozen=True)
class ExportRun:
    period: str
    exported: bool
    rows: int  # this run's: 0 when skipped
    bytes: int
    delivery: str  # webhook | stored: this run's, or the earlier export's when skipped


def dedupe_key(period: str) -> str:
    return f"export:{MODE}:{period}"


def filename(period: str) -> str:
    return f"accounting-{period}.csv"


def month_to_export(requested: str, today: date) -> Month:
    """The requested month, or the one before `today`'s (the org's today); never the current month
    or a later one, which are not over: exported now, they would be exported once and incomplete."""
    this_month = Month.of(today)
    if not requested:
        return Month.of(this_month.start - timedelta(days=1))
    found = MONTH.fullmatch(requested)
    if found is None:
        raise invalid("month", "must be a month, YYYY-MM")
    month = Month.of(date(int(found[1]), int(found[2]), 1))
    if month.start >= this_month.start:
        raise invalid(
            "month", f"must be a month that is over (before {this_month.period} in the org's time zone)"
        )
    return month


async def run(
    db: Database, settings: BillingSettings, peers: Peers, org_id: uuid.UUID, requested: str, request_id: str
) -> ExportRun:
    async with unit_of_work(db, org_id) as uow:
        zone = accounting.zone_of((await orgs.get(uow, settings, peers)).time_zone)
        month = month_to_export(requested, datetime.now(zone).date())
        earlier = (
            await uow.session.execute(
                select(accounting_exports.c.delivery).where(accounting_exports.c.period == month.period)
            )
        ).one_or_none()
    if earlier is not None:
        return ExportRun(month.period, exported=False, rows=0, bytes=0, delivery=earlier.delivery)

    content, rows = await _csv(db, settings, org_id, zone, month)
    size = len(content.encode())
    with peer_answers("notify"), acting_as(service_context("billing", str(org_id), request_id)):
        queued = await peers.notify.stub.QueueExport(
            notify_pb2.QueueExportRequest(
                mode=MODE,
                period=month.period,
                filename=filename(month.period),
                content=content,
                rows=rows,
                dedupe_key=dedupe_key(month.period),
            )
        )
    async with unit_of_work(db, org_id) as uow:
        await uow.session.execute(
            pg_insert(accounting_exports)
            .values(org_id=org_id, period=month.period, rows=rows, bytes=size, delivery=queued.delivery)
            .on_conflict_do_nothing(index_elements=[accounting_exports.c.org_id, accounting_exports.c.period])
        )
    return ExportRun(month.period, exported=True, rows=rows, bytes=size, delivery=queued.delivery)


async def _csv(
    db: Database, settings: BillingSettings, org_id: uuid.UUID, zone: ZoneInfo, month: Month
) -> tuple[str, int]:
    """The month's CSV (header included) and its row count, refused as soon as it outgrows a message."""
    parts: list[str] = []
    size = rows = 0
    cursor = ""
    while True:
        async with unit_of_work(db, org_id) as uow:
            text, cursor, count = await accounting.csv_page(
                uow, zone, month.start, month.end, (), cursor, settings.accounting_export_page_size
            )
        parts.append(text)
        rows += count
        size += len(text.encode())
        if size > MAX_CSV_BYTES:
            raise FailedPrecondition(
                f"the accounting CSV of {month.period} is over {MAX_CSV_BYTES:,} bytes ({size:,} bytes by "
                f"row {rows:,}), more than one gRPC message to notify may carry; "
                f"download it instead: GET /v1/admin/exports/accounting.csv?from={month.start}&to={month.end}",
                code="accounting_export_too_large",
            )
        if not cursor:
            return "".join(parts), rows
