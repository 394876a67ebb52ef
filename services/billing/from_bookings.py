"""Draft invoices for completed bookings: from the booking-completed event (handlers.py) and from the
backfill (BackfillFromBookings, for bookings completed before billing ran or older than the streams
keep). Both read the booking from booking's API (the event carries no price) and insert through
`draft_for_booking`, which the unique index on (org_id, booking_id) makes idempotent: a redelivered
event, a second backfill, or the two racing each other add one invoice per booking, never two.

The draft has one line, the booking's price before tax, taxed at the org's rate (orgs.py), due after
the org's payment terms. Finance reviews and issues it; nothing is emailed until they send it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, timedelta

from cws.booking.v1 import booking_pb2
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.common.db import UnitOfWork
from services.billing import invoices
from services.billing.currency import normalise_currency
from services.billing.models import invoices as invoices_table
from services.billing.orgs import OrgBilling
from services.billing.totals import line_item, recalculate_totals

COMPLETED = "completed"


def describe(booking: booking_pb2.Booking) -> str:
    kind = booking.cleaning_type.replace("_", " ").strip() or "cleaning"
    when = (
        booking.starts_at.ToDatetime(tzinfo=UTC).date().isoformat() if booking.HasField("starts_at") else ""
    )
    text = f"{kind.capitalize()} clean"
    if booking.beds or booking.baths:
        text += f", {booking.beds} bed / {booking.baths:g} bath"
    return f"{text} on {when}" if when else text


async def draft_for_booking(
    uow: UnitOfWork, booking: booking_pb2.Booking, org: OrgBilling, today: date
) -> uuid.UUID | None:
    """The booking's DRAFT invoice; None when it already has one (or is not completed, or has no
    price or client email to invoice). Runs in the booking's org."""
    if booking.status != COMPLETED or booking.total_before_tax_cents <= 0 or not booking.client_email:
        return None
    line = line_item(describe(booking)[:500], "1", int(booking.total_before_tax_cents), org.tax_rate)
    totals = recalculate_totals([line])
    invoice_id = uuid.uuid4()
    inserted = (
        await uow.session.execute(
            pg_insert(invoices_table)
            .values(
                id=invoice_id,
                org_id=uow.org_id,
                status="DRAFT",
                currency=normalise_currency(booking.currency),
                client_name=(booking.client_name.strip() or booking.client_email)[: invoices.MAX_CLIENT_NAME],
                client_email=booking.client_email.strip()[: invoices.MAX_EMAIL],
                booking_id=uuid.UUID(booking.id),
                due_date=today + timedelta(days=org.payment_terms_days),
                **invoices.snapshot_values(totals),
            )
            .on_conflict_do_nothing(
                index_elements=[invoices_table.c.org_id, invoices_table.c.booking_id],
                index_where=invoices_table.c.booking_id.isnot(None),
            )
            .returning(invoices_table.c.id)
        )
    ).scalar_one_or_none()
    if inserted is None:
        return None
    await invoices.write_items(uow, inserted, [line])
    return inserted  # type: ignore[no-any-return]


async def has_invoice(uow: UnitOfWork, booking_id: uuid.UUID) -> bool:
    found = await uow.session.execute(
        select(invoices_table.c.id).where(invoices_table.c.booking_id == booking_id).limit(1)
    )
    return found.first() is not None
