"""Reminders of upcoming bookings (POST /v1/admin/email-scan and the email-scan job).

Booking owns the bookings: the scan asks it over gRPC for the org's confirmed bookings starting in
[now, now + window), a page at a time, and enqueues one reminder per booking. The dedupe key holds
the start time, so scanning again enqueues nothing new while a rescheduled booking gets a reminder
for its new time. Each page is asked outside any transaction; its enqueues share one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cws.booking.v1 import booking_pb2
from sqlalchemy import select

from libs.common.context import service_context
from libs.common.convert import to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import invalid
from libs.common.grpc_client import acting_as
from services.notify import emails, orgs
from services.notify.models import outbox_events
from services.notify.peers import Peers

PAGE_SIZE = 200
MAX_WINDOW_HOURS = 24 * 31


@dataclass
class ScanResult:
    scanned: int = 0
    enqueued: int = 0
    duplicates: int = 0
    skipped_no_email: int = 0


def reminder_key(booking_id: str, starts_at: datetime) -> str:
    return f"email:booking_reminder:booking:{booking_id}:{starts_at.astimezone(UTC).isoformat()}"


async def scan(
    db: Database,
    peers: Peers,
    org_id: uuid.UUID,
    *,
    window_hours: int,
    now: datetime | None = None,
    page_size: int = PAGE_SIZE,
) -> ScanResult:
    if not 1 <= window_hours <= MAX_WINDOW_HOURS:
        raise invalid("window_hours", f"must be between 1 and {MAX_WINDOW_HOURS}")
    start = now or datetime.now(UTC)
    result = ScanResult()
    async for page in upcoming(peers, org_id, start, start + timedelta(hours=window_hours), page_size):
        result.scanned += len(page)
        wanted: dict[str, booking_pb2.UpcomingBooking] = {}
        for booking in page:
            if booking.client_email:
                wanted[reminder_key(booking.id, booking.starts_at.ToDatetime(tzinfo=UTC))] = booking
            else:
                result.skipped_no_email += 1
        if not wanted:
            continue
        async with unit_of_work(db, org_id) as uow:
            # Reminders already queued are counted, not inserted again: a scan that finds nothing
            # new writes nothing (and so leaves no admin-audit record behind).
            sent = set(
                (
                    await uow.session.scalars(
                        select(outbox_events.c.dedupe_key).where(outbox_events.c.dedupe_key.in_(wanted))
                    )
                ).all()
            )
            result.duplicates += len(sent)
            fresh = {key: booking for key, booking in wanted.items() if key not in sent}
            # The zone is each booking's own (booking sends it); the org's name only signs the email,
            # so an org notify has not heard of yet is not worth asking IAM for here.
            org = (await orgs.known(uow) or orgs.DEFAULT) if fresh else orgs.DEFAULT
            for key, booking in fresh.items():
                email = emails.booking_reminder(
                    to=booking.client_email,
                    booking_id=booking.id,
                    starts_at=booking.starts_at.ToDatetime(tzinfo=UTC),
                    ends_at=booking.ends_at.ToDatetime(tzinfo=UTC),
                    time_zone=booking.time_zone,
                    client_name=booking.client_name,
                    address=booking.address,
                    org_name=org.name,
                )
                queued = await emails.enqueue_email(uow, email, key, from_name=org.name)
                if queued.created:
                    result.enqueued += 1
                else:  # another scan queued it a moment ago
                    result.duplicates += 1
    return result


async def upcoming(
    peers: Peers, org_id: uuid.UUID, start: datetime, end: datetime, page_size: int = PAGE_SIZE
) -> AsyncIterator[list[booking_pb2.UpcomingBooking]]:
    """The org's confirmed bookings starting in [start, end), from booking, a page at a time."""
    request = booking_pb2.ListUpcomingBookingsRequest(
        from_time=to_ts(start), to_time=to_ts(end), limit=page_size
    )
    while True:
        with acting_as(service_context("notify", str(org_id))):
            page = await peers.booking.stub.ListUpcomingBookings(request)
        if page.bookings:
            yield list(page.bookings)
        if len(page.bookings) < page_size:
            return
        last = page.bookings[-1]
        request.after_starts_at.CopyFrom(last.starts_at)
        request.after_id = last.id
