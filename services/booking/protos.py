"""Rows of this schema as proto messages, shared by the servicer's parts."""

from __future__ import annotations

from typing import Any

from cws.booking.v1 import booking_pb2

from libs.common.convert import to_ts
from libs.common.db import UnitOfWork
from services.booking import bookings as booking_rows
from services.booking import orgs
from services.booking.clients import Client
from services.booking.models import Record
from services.booking.pricing import Estimate


def estimate(value: Estimate) -> booking_pb2.EstimateResponse:
    return booking_pb2.EstimateResponse(
        pricing_config_id=str(value.pricing_config_id),
        pricing_config_version=value.version,
        currency=value.currency,
        total_before_tax_cents=value.total_before_tax_cents,
        estimated_minutes=value.estimated_minutes,
        lines=[
            booking_pb2.EstimateLine(
                code=line.code,
                label=line.label,
                quantity=line.quantity,
                unit_cents=line.unit_cents,
                amount_cents=line.amount_cents,
            )
            for line in value.lines
        ],
    )


def estimate_snapshot(snapshot: dict[str, Any]) -> booking_pb2.EstimateResponse:
    return booking_pb2.EstimateResponse(
        pricing_config_id=snapshot["pricing_config_id"],
        pricing_config_version=snapshot["pricing_config_version"],
        currency=snapshot["currency"],
        total_before_tax_cents=snapshot["total_before_tax_cents"],
        estimated_minutes=snapshot["estimated_minutes"],
        lines=[booking_pb2.EstimateLine(**line) for line in snapshot["lines"]],
    )


def lead(row: Record) -> booking_pb2.Lead:
    return booking_pb2.Lead(
        id=str(row.id),
        org_id=str(row.org_id),
        name=row.name,
        phone=row.phone,
        email=row.email,
        postal_code=row.postal_code,
        structured_inputs=booking_pb2.StructuredInputs(
            beds=row.beds, baths=row.baths, cleaning_type=row.cleaning_type
        ),
        estimate=estimate_snapshot(row.estimate),
        notes=row.notes,
        status=row.status,
        created_at=to_ts(row.created_at),
    )


def client(value: Client) -> booking_pb2.Client:
    return booking_pb2.Client(
        email=value.email,
        name=value.name,
        phone=value.phone,
        bookings=value.bookings,
        first_booking_at=to_ts(value.first_booking_at),
        last_booking_at=to_ts(value.last_booking_at),
        upcoming_bookings=value.upcoming_bookings,
    )


def booking(row: Record, time_zone: str, worker_ids: list[str] | None = None) -> booking_pb2.Booking:
    return booking_pb2.Booking(
        id=str(row.id),
        org_id=str(row.org_id),
        lead_id=str(row.lead_id or ""),
        status=row.status,
        starts_at=to_ts(row.starts_at),
        ends_at=to_ts(row.ends_at),
        time_zone=time_zone,
        client_name=row.client_name,
        client_email=row.client_email,
        client_phone=row.client_phone,
        address=row.address,
        postal_code=row.postal_code,
        cleaning_type=row.cleaning_type,
        beds=row.beds,
        baths=row.baths,
        total_before_tax_cents=row.total_before_tax_cents,
        currency=row.currency,
        team_id=str(row.team_id or ""),
        worker_ids=worker_ids or [],
        deposit_required=row.deposit_required,
        deposit_paid=row.deposit_paid,
        notes=row.notes,
        created_at=to_ts(row.created_at),
        cancel_reason=row.cancel_reason,
        updated_at=to_ts(row.updated_at),
    )


def upcoming(row: Record, time_zone: str) -> booking_pb2.UpcomingBooking:
    return booking_pb2.UpcomingBooking(
        id=str(row.id),
        starts_at=to_ts(row.starts_at),
        ends_at=to_ts(row.ends_at),
        client_name=row.client_name,
        client_email=row.client_email,
        address=row.address,
        time_zone=time_zone,
    )


async def bookings(uow: UnitOfWork, rows: list[Record]) -> list[booking_pb2.Booking]:
    """Booking rows as messages, in the org's time zone, each with the workers assigned to it."""
    profile = await orgs.profile(uow)
    assigned = await booking_rows.worker_ids_of(uow, [row.id for row in rows])
    return [booking(row, profile.time_zone, assigned.get(row.id, [])) for row in rows]
