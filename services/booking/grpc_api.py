"""The booking servicer: proto in, domain call, proto out. No SQL and no business rules here.

It is assembled from per-area parts (this module: estimates, leads, bookings; grpc_scheduling.py:
teams, workers, blackouts, scheduling, queue; grpc_insights.py: NPS and analytics; grpc_pricing.py:
pricing versions; grpc_deletions.py: person lookup and data deletion requests) so no file grows
past what a reader holds at once. Rows become messages in protos.py."""

from __future__ import annotations

import grpc
from cws.booking.v1 import booking_pb2, booking_pb2_grpc

from libs.common import context as request_context
from libs.common.context import AuthMethod
from libs.common.convert import from_ts, page, parse_id
from libs.common.db import Database, unit_of_work
from libs.common.errors import NotFound, PermissionDenied, Unauthenticated, invalid
from libs.common.roles import DISPATCH, MANAGERS, STAFF
from services.booking import bookings, clients, leads, orgs, pricing, protos, usage
from services.booking.grpc_deletions import DeletionsApi
from services.booking.grpc_insights import InsightsApi
from services.booking.grpc_pricing import PricingApi
from services.booking.grpc_scheduling import SchedulingApi
from services.booking.settings import BookingSettings

CLIENT = AuthMethod.Value("AUTH_METHOD_CLIENT_PORTAL")
WORKER = AuthMethod.Value("AUTH_METHOD_WORKER_PORTAL")


class BookingServicer(
    SchedulingApi, InsightsApi, PricingApi, DeletionsApi, booking_pb2_grpc.BookingServiceServicer
):
    def __init__(self, db: Database, settings: BookingSettings) -> None:
        self.db = db
        self.settings = settings

    # --- public: estimates and leads ------------------------------------------------------------

    async def ResolvePublicOrg(
        self, request: booking_pb2.ResolvePublicOrgRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ResolvePublicOrgResponse:
        async with unit_of_work(self.db) as uow:
            org_id = await orgs.resolve_public_org(uow, request.org_key)
            await uow.set_org(org_id)
            profile = await orgs.profile(uow)
        return booking_pb2.ResolvePublicOrgResponse(org_id=str(org_id), time_zone=profile.time_zone)

    async def Estimate(
        self, request: booking_pb2.EstimateRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.EstimateResponse:
        async with unit_of_work(self.db) as uow:
            await uow.set_org(await orgs.resolve_public_org(uow, request.org_key))
            profile = await orgs.profile(uow)
            quote = await pricing.estimate(
                uow, request.beds, request.baths, request.cleaning_type, default_currency=profile.currency
            )
        return protos.estimate(quote)

    async def CreateLead(
        self, request: booking_pb2.CreateLeadRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreateLeadResponse:
        inputs = request.structured_inputs
        data = leads.LeadInput(
            name=request.name,
            phone=request.phone,
            email=request.email,
            postal_code=request.postal_code,
            beds=inputs.beds,
            baths=inputs.baths,
            cleaning_type=inputs.cleaning_type,
            notes=request.notes,
            idempotency_key=request.idempotency_key,
        )
        async with unit_of_work(self.db) as uow:
            await uow.set_org(await orgs.resolve_public_org(uow, request.org_key))
            row, replayed = await leads.create(uow, self.settings, await orgs.profile(uow), data)
        return booking_pb2.CreateLeadResponse(lead=protos.lead(row), replayed=replayed)

    async def ListLeads(
        self, request: booking_pb2.ListLeadsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListLeadsResponse:
        request_context.require_role(*STAFF)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows, total = await leads.list_leads(uow, limit=limit, offset=offset)
        return booking_pb2.ListLeadsResponse(leads=[protos.lead(r) for r in rows], total=total)

    async def GetLead(
        self, request: booking_pb2.GetLeadRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.GetLeadResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await leads.get(uow, request.lead_id)
        return booking_pb2.GetLeadResponse(lead=protos.lead(row))

    async def ListClients(
        self, request: booking_pb2.ListClientsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListClientsResponse:
        request_context.require_role(*STAFF)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, total = await clients.list_clients(uow, q=request.q, limit=limit, offset=offset)
        return booking_pb2.ListClientsResponse(clients=[protos.client(c) for c in found], total=total)

    # --- bookings -------------------------------------------------------------------------------

    async def CreateBooking(
        self, request: booking_pb2.CreateBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreateBookingResponse:
        caller = request_context.require_role(*DISPATCH)
        data = bookings.BookingInput(
            starts_at=from_ts(request.starts_at, "starts_at"),
            duration_minutes=request.duration_minutes,
            lead_id=request.lead_id,
            client_name=request.client_name,
            client_email=request.client_email,
            client_phone=request.client_phone,
            address=request.address,
            postal_code=request.postal_code,
            cleaning_type=request.cleaning_type,
            beds=request.beds,
            baths=request.baths,
            notes=request.notes,
            idempotency_key=request.idempotency_key,
            deposit_required=request.deposit_required,
            requested_by=caller.principal_id,
        )
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            profile = await orgs.profile(uow)
            row, replayed = await bookings.create(uow, self.settings, profile, data)
            if replayed:  # the earlier booking may have been assigned since
                (result,) = await protos.bookings(uow, [row])
            else:  # created in this transaction: no team or workers yet, nothing more to read
                result = protos.booking(row, profile.time_zone)
        return booking_pb2.CreateBookingResponse(booking=result, replayed=replayed)

    async def ListBookings(
        self, request: booking_pb2.ListBookingsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListBookingsResponse:
        client_email, worker_id = self._portal_scope(request.client_email, request.worker_id)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows, total = await bookings.list_bookings(
                uow,
                status=request.status,
                from_time=from_ts(request.from_time, "from_time") if request.HasField("from_time") else None,
                to_time=from_ts(request.to_time, "to_time") if request.HasField("to_time") else None,
                client_email=client_email,
                worker_id=worker_id,
                updated_since=(
                    from_ts(request.updated_since, "updated_since")
                    if request.HasField("updated_since")
                    else None
                ),
                limit=limit,
                offset=offset,
            )
            found = await protos.bookings(uow, rows)
        return booking_pb2.ListBookingsResponse(bookings=found, total=total)

    async def GetBooking(
        self, request: booking_pb2.GetBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.GetBookingResponse:
        client_email, worker_id = self._portal_scope("", "")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row, worker_ids = await bookings.get_with_worker_ids(uow, request.booking_id)
            result = protos.booking(row, (await orgs.profile(uow)).time_zone, worker_ids)
        self._check_portal_access(result, client_email, worker_id)
        return booking_pb2.GetBookingResponse(booking=result)

    async def TransitionBooking(
        self, request: booking_pb2.TransitionBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.TransitionBookingResponse:
        ctx = request_context.current()
        if ctx.auth_method == WORKER:
            if request.action not in ("start", "complete"):
                raise PermissionDenied("workers may only start or complete their jobs", code="forbidden_role")
        else:
            request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            if ctx.auth_method == WORKER:
                (own,) = await protos.bookings(uow, [await bookings.get(uow, request.booking_id)])
                self._check_portal_access(own, "", ctx.principal_id)
            row, token = await bookings.transition(
                uow, request.booking_id, request.action, reason=request.reason
            )
            zone = (await orgs.profile(uow)).time_zone
            result = protos.booking(row, zone, bookings.assigned_worker_ids(row))
        return booking_pb2.TransitionBookingResponse(booking=result, nps_token=token)

    async def RescheduleBooking(
        self, request: booking_pb2.RescheduleBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.RescheduleBookingResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await bookings.reschedule(
                uow, request.booking_id, from_ts(request.starts_at, "starts_at"), request.duration_minutes
            )
            (result,) = await protos.bookings(uow, [row])
        return booking_pb2.RescheduleBookingResponse(booking=result)

    async def CleanupPendingBookings(
        self, request: booking_pb2.CleanupPendingBookingsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CleanupPendingBookingsResponse:
        request_context.require_role(*MANAGERS)
        hours = request.older_than_hours or self.settings.pending_booking_ttl_hours
        if not 1 <= hours <= 24 * 365:
            raise invalid("older_than_hours", "must be between 1 and 8760")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            deleted = await bookings.cleanup_pending(uow, hours)
        return booking_pb2.CleanupPendingBookingsResponse(deleted=deleted)

    async def ListUpcomingBookings(
        self, request: booking_pb2.ListUpcomingBookingsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListUpcomingBookingsResponse:
        request_context.require_role(*STAFF)
        if not (request.HasField("from_time") and request.HasField("to_time")):
            raise invalid("from_time", "from_time and to_time are required")
        start, end = from_ts(request.from_time, "from_time"), from_ts(request.to_time, "to_time")
        if end <= start:
            raise invalid("to_time", "must be after from_time")
        limit, _ = page(request.limit, 0)
        after = None
        if request.after_id:
            after = (
                from_ts(request.after_starts_at, "after_starts_at"),
                parse_id(request.after_id, "after_id"),
            )
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            profile = await orgs.profile(uow)
            rows = await bookings.list_upcoming(uow, start, end, limit=limit, after=after)
        return booking_pb2.ListUpcomingBookingsResponse(
            bookings=[protos.upcoming(row, profile.time_zone) for row in rows]
        )

    async def RetentionCleanup(
        self, request: booking_pb2.RetentionCleanupRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.RetentionCleanupResponse:
        request_context.require_role(*MANAGERS)
        if self.settings.retention_lead_days <= 0:
            return booking_pb2.RetentionCleanupResponse(deleted=0)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            deleted = await leads.retention_cleanup(uow, self.settings.retention_lead_days)
        return booking_pb2.RetentionCleanupResponse(deleted=deleted)

    async def CountUsage(
        self, request: booking_pb2.CountUsageRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CountUsageResponse:
        """Billing's usage report, in the org billing acts for: a suite service only, never a user."""
        request_context.require_service()
        start, end = from_ts(request.month_start, "month_start"), from_ts(request.month_end, "month_end")
        if end <= start:
            raise invalid("month_end", "must be after month_start")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            counts = await usage.count_usage(uow, start, end)
        return booking_pb2.CountUsageResponse(
            active_workers=counts.active_workers, bookings_created=counts.bookings_created
        )

    def _portal_scope(self, client_email: str, worker_id: str) -> tuple[str, str]:
        """Portal callers see only their own bookings, whatever they ask for; staff may filter."""
        ctx = request_context.current()
        if ctx.auth_method in (CLIENT, WORKER):
            # An empty identity would mean "no filter", i.e. the whole org: refuse it outright.
            if not ctx.principal_id:
                raise Unauthenticated("portal credential names nobody", code="invalid_portal_token")
            return (ctx.principal_id, "") if ctx.auth_method == CLIENT else ("", ctx.principal_id)
        request_context.require_role(*STAFF)
        return client_email, worker_id

    def _check_portal_access(self, booking: booking_pb2.Booking, client_email: str, worker_id: str) -> None:
        # Not ours: answer as if it did not exist, so ids cannot be probed.
        if client_email and booking.client_email.lower() != client_email.lower():
            raise NotFound("booking not found")
        if worker_id and worker_id not in booking.worker_ids:
            raise NotFound("booking not found")
