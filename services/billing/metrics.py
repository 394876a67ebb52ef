"""The money figures billing can state for an org's period [from, to) (GetMetrics, issue 13). No gRPC here.

- invoices_issued: invoices issued in the period (voided since or not: the issuing happened);
- revenue_cents / tax_cents, per currency: the totals and tax of the invoices issued in the period and
  not VOID, from their frozen snapshots (seed 002: reports read the snapshot, never recompute it);
- payments_succeeded (a count, all currencies) and payments_cents per currency: succeeded payments
  received in the period;
- refunds_cents per currency: succeeded refunds made in the period.
Money is never added across currencies. A money figure with nothing in the period is stated as 0 in
the org's invoicing currency, so a CSV keeps its rows from one period to the next.
Each is one read by an index on (org_id, time) in the org's unit of work (RLS)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from libs.common.db import Database, unit_of_work
from libs.common.errors import invalid
from services.billing.models import invoice_payments, invoice_refunds, invoices, org_settings

MAX_PERIOD = timedelta(days=366)


@dataclass(frozen=True)
class Metric:
    name: str
    value: int
    currency: str = ""


def check_period(start: datetime, end: datetime) -> None:
    if end <= start:
        raise invalid("to", "must be after from")
    if end - start > MAX_PERIOD:
        raise invalid("to", "the period may span at most 366 days")


async def for_period(
    db: Database, org_id: uuid.UUID, start: datetime, end: datetime, default_currency: str
) -> list[Metric]:
    check_period(start, end)
    async with unit_of_work(db, org_id) as uow:
        session = uow.session
        currency = (
            await session.scalar(select(org_settings.c.currency).where(org_settings.c.org_id == org_id))
            or default_currency
        )
        issued = invoices.c.issued_at
        in_period = (invoices.c.org_id == org_id, issued.is_not(None), issued >= start, issued < end)
        # ix_invoices_org_issued (org_id, issued_at, id) WHERE issued_at IS NOT NULL.
        invoices_issued = await session.scalar(select(func.count()).where(*in_period))
        revenue = (
            await session.execute(
                select(invoices.c.currency, func.sum(invoices.c.total_cents), func.sum(invoices.c.tax_cents))
                .where(*in_period, invoices.c.status != "VOID")
                .group_by(invoices.c.currency)
            )
        ).all()
        # ix_invoice_payments_org_received (org_id, received_at).
        p = invoice_payments.c
        payments = (
            await session.execute(
                select(p.currency, func.count(), func.sum(p.amount_cents))
                .where(
                    p.org_id == org_id, p.received_at >= start, p.received_at < end, p.status == "succeeded"
                )
                .group_by(p.currency)
            )
        ).all()
        # ix_invoice_refunds_org_created (org_id, created_at).
        r = invoice_refunds.c
        refunds = (
            await session.execute(
                select(r.currency, func.sum(r.amount_cents))
                .where(r.org_id == org_id, r.created_at >= start, r.created_at < end, r.status == "succeeded")
                .group_by(r.currency)
            )
        ).all()
    return [
        Metric("invoices_issued", int(invoices_issued or 0)),
        *_per_currency("revenue_cents", {row[0]: row[1] for row in revenue}, currency),
        *_per_currency("tax_cents", {row[0]: row[2] for row in revenue}, currency),
        Metric("payments_succeeded", sum(int(row[1]) for row in payments)),
        *_per_currency("payments_cents", {row[0]: row[2] for row in payments}, currency),
        *_per_currency("refunds_cents", {row[0]: row[1] for row in refunds}, currency),
    ]


def _per_currency(name: str, sums: dict[str, int | None], default_currency: str) -> list[Metric]:
    if not sums:
        return [Metric(name, 0, default_currency)]
    return [Metric(name, int(value or 0), code) for code, value in sorted(sums.items())]
