"""/v1/admin/leads, /v1/admin/clients, /v1/admin/bookings and /v1/admin/cleanup (dispatcher and up for writes)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from cws.booking.v1 import booking_pb2
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import ORJSONResponse
from pydantic import AwareDatetime

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.routes import convert
from gateway.schemas import BookingIn, CancelIn, ClientOut, ClientsOut, RescheduleIn
from gateway.stubs import Booking, BookingStub
from libs.common.roles import DISPATCH, MANAGERS, STAFF

router = APIRouter(prefix="/v1/admin", tags=["bookings"], dependencies=[ADMIN])


@router.get("/leads", summary="Leads of your org, newest first")
async def list_leads(
    booking: Booking,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*STAFF)),
) -> dict[str, Any]:
    response = await booking.ListLeads(booking_pb2.ListLeadsRequest(limit=limit, offset=offset))
    return {"leads": [convert.lead(lead) for lead in response.leads], "total": response.total}


@router.get("/leads/{lead_id}", summary="One lead with its estimate snapshot")
async def get_lead(
    lead_id: str, booking: Booking, principal: Principal = Depends(require_roles(*STAFF))
) -> dict[str, Any]:
    response = await booking.GetLead(booking_pb2.GetLeadRequest(lead_id=lead_id))
    return convert.lead(response.lead)


@router.get(
    "/clients",
    response_model=ClientsOut,
    summary="Clients of your org (bookings grouped by client email), latest booking first",
)
async def list_clients(
    booking: Booking,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    q: str = Query("", max_length=200, description="Case-insensitive part of the email or the name"),
    principal: Principal = Depends(require_roles(*STAFF)),
) -> ClientsOut:
    response = await booking.ListClients(booking_pb2.ListClientsRequest(limit=limit, offset=offset, q=q))
    return ClientsOut(
        clients=[
            ClientOut(
                email=c.email,
                name=c.name,
                phone=c.phone,
                bookings=c.bookings,
                first_booking_at=c.first_booking_at.ToDatetime(tzinfo=UTC),
                last_booking_at=c.last_booking_at.ToDatetime(tzinfo=UTC),
                upcoming_bookings=c.upcoming_bookings,
            )
            for c in response.clients
        ],
        total=response.total,
    )


@router.post("/bookings", status_code=201, summary="Create a booking, from a lead or by hand")
async def create_booking(
    body: BookingIn,
    booking: Booking,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> ORJSONResponse:
    response = await booking.CreateBooking(
        booking_pb2.CreateBookingRequest(
            lead_id=body.lead_id or "",
            starts_at=convert.timestamp(body.starts_at, "starts_at"),
            duration_minutes=body.duration_minutes,
            client_name=body.client_name,
            client_email=body.client_email,
            client_phone=body.client_phone,
            address=body.address,
            postal_code=body.postal_code,
            cleaning_type=body.cleaning_type,
            beds=body.beds,
            baths=body.baths,
            notes=body.notes,
            idempotency_key=idempotency_key or "",
            deposit_required=body.deposit_required,
        )
    )
    headers = {"Idempotent-Replayed": "true"} if response.replayed else None
    return ORJSONResponse(convert.booking(response.booking), status_code=201, headers=headers)


@router.get("/bookings", summary="Bookings in a window, by status")
async def list_bookings(
    booking: Booking,
    status: str = Query("", max_length=20),
    from_: AwareDatetime | None = Query(None, alias="from"),
    to: AwareDatetime | None = Query(None),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*STAFF)),
) -> dict[str, Any]:
    message = booking_pb2.ListBookingsRequest(status=status, limit=limit, offset=offset)
    if from_:
        message.from_time.CopyFrom(convert.timestamp(from_, "from"))
    if to:
        message.to_time.CopyFrom(convert.timestamp(to, "to"))
    response = await booking.ListBookings(message)
    return {"bookings": [convert.booking(b) for b in response.bookings], "total": response.total}


@router.get("/bookings/{booking_id}", summary="One booking, times in UTC and in the org's time zone")
async def get_booking(
    booking_id: str, booking: Booking, principal: Principal = Depends(require_roles(*STAFF))
) -> dict[str, Any]:
    response = await booking.GetBooking(booking_pb2.GetBookingRequest(booking_id=booking_id))
    return convert.booking(response.booking)


@router.post("/bookings/{booking_id}/reschedule", summary="Move a booking (its assignments move with it)")
async def reschedule(
    booking_id: str,
    body: RescheduleIn,
    booking: Booking,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    response = await booking.RescheduleBooking(
        booking_pb2.RescheduleBookingRequest(
            booking_id=booking_id,
            starts_at=convert.timestamp(body.starts_at, "starts_at"),
            duration_minutes=body.duration_minutes,
        )
    )
    return convert.booking(response.booking)


async def _transition(booking: BookingStub, booking_id: str, action: str, reason: str = "") -> dict[str, Any]:
    response = await booking.TransitionBooking(
        booking_pb2.TransitionBookingRequest(booking_id=booking_id, action=action, reason=reason)
    )
    result = convert.booking(response.booking)
    if response.nps_token:
        result["nps_token"] = response.nps_token
    return result


def _add_transition_route(path: str, action: str, summary: str) -> None:
    """One explicit route per action: no catch-all segment to shadow other booking routes."""

    async def endpoint(
        booking_id: str, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
    ) -> dict[str, Any]:
        return await _transition(booking, booking_id, action)

    endpoint.__name__ = f"booking_{action}"
    router.add_api_route(f"/bookings/{{booking_id}}/{path}", endpoint, methods=["POST"], summary=summary)


for _path, _action, _summary in (
    ("confirm", "confirm", "pending → confirmed (409 deposit_required while a deposit is unpaid)"),
    ("start", "start", "confirmed → in_progress"),
    ("complete", "complete", "in_progress → completed; returns the one-use nps_token"),
    ("deposit-paid", "deposit_paid", "mark the deposit paid; a pending booking confirms itself"),
):
    _add_transition_route(_path, _action, _summary)


@router.post("/bookings/{booking_id}/cancel", summary="pending or confirmed → cancelled, with a reason")
async def cancel(
    booking_id: str,
    booking: Booking,
    body: CancelIn | None = None,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    return await _transition(booking, booking_id, "cancel", body.reason if body else "")


@router.post("/cleanup", status_code=202, summary='Remove stale pending bookings: {"deleted": n}')
async def cleanup(
    booking: Booking, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, int]:
    response = await booking.CleanupPendingBookings(booking_pb2.CleanupPendingBookingsRequest())
    return {"deleted": response.deleted}
