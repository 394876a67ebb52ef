"""The org as billing sees it: its name and time zone (for invoices, PDFs, emails and "today"), from
cws.iam.org.created, and its invoicing defaults (tax rate, payment terms, currency), each falling back
to the BillingSettings default while the org has set none.

An org billing has not heard of (its event still on the way, or older than the streams keep when
billing first ran) is looked up once in IAM and remembered, as notify does. If IAM cannot be asked,
nothing is guessed: an invoice issued by "nobody", or due on a UTC day, would be wrong on paper, so the
call answers UNAVAILABLE (a consumer retries; a caller tries again)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
from cws.iam.v1 import events_pb2 as iam_events
from cws.iam.v1 import iam_pb2
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.context import service_context
from libs.common.db import UnitOfWork
from libs.common.errors import FieldViolation, InvalidArgument, Unavailable, invalid
from libs.common.event_types import EventMeta
from libs.common.grpc_client import acting_as
from services.billing.currency import normalise_currency
from services.billing.models import org_settings
from services.billing.peers import Peers
from services.billing.settings import BillingSettings
from services.billing.totals import parse_tax_rate

MAX_TERMS_DAYS = 365


@dataclass(frozen=True)
class OrgBilling:
    name: str
    time_zone: str
    tax_rate: Decimal
    payment_terms_days: int
    tax_rate_set: bool
    payment_terms_days_set: bool
    # The org's invoicing currency: a hand-made invoice without one takes it. Drafts from bookings
    # take the booking's own (what the client was quoted).
    currency: str
    currency_set: bool


class OrgUnavailable(Unavailable):
    default_code = "org_profile_unavailable"


async def get(uow: UnitOfWork, settings: BillingSettings, peers: Peers) -> OrgBilling:
    row = (await uow.session.execute(select(org_settings))).first()
    if row is None or not row.name:
        await _learn_from_iam(uow, peers)
        row = (await uow.session.execute(select(org_settings))).first()
    tax_rate = row.tax_rate if row is not None and row.tax_rate is not None else None
    terms = row.payment_terms_days if row is not None and row.payment_terms_days is not None else None
    return OrgBilling(
        name=row.name if row is not None else "",
        time_zone=row.time_zone if row is not None else "UTC",
        tax_rate=tax_rate if tax_rate is not None else settings.default_tax_rate,
        payment_terms_days=terms if terms is not None else settings.invoice_payment_terms_days,
        tax_rate_set=tax_rate is not None,
        payment_terms_days_set=terms is not None,
        currency=row.currency if row is not None and row.currency else settings.invoice_default_currency,
        currency_set=row is not None and bool(row.currency),
    )


async def update(
    uow: UnitOfWork,
    settings: BillingSettings,
    peers: Peers,
    *,
    tax_rate: str | None = None,
    payment_terms_days: int | None = None,
    currency: str | None = None,
) -> OrgBilling:
    """Change the org's defaults; None leaves one as it is. They apply to drafts made from now on:
    an issued invoice keeps the snapshot it was issued with (seed 002)."""
    problems: list[FieldViolation] = []
    values: dict[str, object] = {}
    if tax_rate is not None:
        try:
            values["tax_rate"] = parse_tax_rate(tax_rate)
        except InvalidArgument as bad:
            problems.extend(bad.violations)
    if payment_terms_days is not None:
        if not 0 <= payment_terms_days <= MAX_TERMS_DAYS:
            problems.append(FieldViolation("payment_terms_days", f"must be from 0 to {MAX_TERMS_DAYS}"))
        values["payment_terms_days"] = payment_terms_days
    if currency is not None:
        try:
            values["currency"] = normalise_currency(currency)
        except InvalidArgument as bad:
            problems.extend(bad.violations)
    if problems:
        raise InvalidArgument.of(problems)
    if not values:
        raise invalid("settings", "name at least one of tax_rate, payment_terms_days and currency")
    await _save(uow, values)
    return await get(uow, settings, peers)


async def _learn_from_iam(uow: UnitOfWork, peers: Peers) -> None:
    assert uow.org_id is not None
    # ListOrgs pages by id: the page of one right after (id - 1) is this org, if it exists.
    before = uuid.UUID(int=uow.org_id.int - 1) if uow.org_id.int else uow.org_id
    try:
        with acting_as(service_context("billing", str(uow.org_id))):
            page = await peers.iam.stub.ListOrgs(iam_pb2.ListOrgsRequest(after_org_id=str(before), limit=1))
    except grpc.aio.AioRpcError as error:
        raise OrgUnavailable(
            f"the org's name and time zone could not be had from IAM ({error.code().name}); try again shortly"
        ) from None
    if not page.orgs or page.orgs[0].org_id != str(uow.org_id):
        return  # IAM does not know it: no name, UTC, as IAM says
    found = page.orgs[0]
    await _save(uow, {"name": found.name[:200], "time_zone": (found.time_zone or "UTC")[:64]})


async def on_org_created(uow: UnitOfWork, message: iam_events.OrgCreated, meta: EventMeta) -> None:
    """Consumer of cws.iam.org.created: the org's name and time zone (again on a repeat: updated)."""
    await uow.set_org(uuid.UUID(message.org_id))
    await _save(uow, {"name": message.name[:200], "time_zone": (message.time_zone or "UTC")[:64]})


async def _save(uow: UnitOfWork, values: dict[str, object]) -> None:
    """The org's row with these columns set, made if it is not there yet."""
    await uow.session.execute(
        pg_insert(org_settings)
        .values(org_id=uow.org_id, **values)
        .on_conflict_do_update(
            index_elements=[org_settings.c.org_id], set_={**values, "updated_at": func.now()}
        )
    )


async def today(uow: UnitOfWork, settings: BillingSettings, peers: Peers) -> date:
    """Today in the org's zone: what due dates and OVERDUE are measured against."""
    return today_in((await get(uow, settings, peers)).time_zone)


def today_in(time_zone: str) -> date:
    """The date in the org's zone: due dates and "overdue" are the org's calendar days, not UTC's."""
    try:
        return datetime.now(ZoneInfo(time_zone)).date()
    except (KeyError, ValueError):
        return datetime.now(UTC).date()
