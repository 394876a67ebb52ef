"""Teams, workers, blackouts, assignment, scheduling suggestions and conflicts, assignment queue:
proto in, domain call, proto out. Role checks here, in the service that owns the data."""

from __future__ import annotations

from typing import Protocol

import grpc
from cws.booking.v1 import booking_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from libs.common import context as request_context
from libs.common.convert import from_ts, page, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.roles import DISPATCH, STAFF
from services.booking import protos, resources, scheduling
from services.booking.models import Record
from services.booking.resources import Window
from services.booking.settings import BookingSettings


class WindowRequest(Protocol):
    """ScheduleSuggestionsRequest and ScheduleConflictsRequest: both ask about a window."""

    @property
    def starts_at(self) -> Timestamp: ...
    @property
    def ends_at(self) -> Timestamp: ...


def _team(row: Record) -> booking_pb2.Team:
    return booking_pb2.Team(id=str(row.id), name=row.name, active=row.active)


def _worker(row: Record) -> booking_pb2.Worker:
    return booking_pb2.Worker(
        id=str(row.id),
        name=row.name,
        email=row.email,
        phone=row.phone,
        role=row.role,
        team_id=str(row.team_id or ""),
        active=row.active,
    )


def _blackout(row: Record) -> booking_pb2.Blackout:
    return booking_pb2.Blackout(
        id=str(row.id),
        team_id=str(row.team_id or ""),
        worker_id=str(row.worker_id or ""),
        starts_at=to_ts(row.period.lower),
        ends_at=to_ts(row.period.upper),
        reason=row.reason,
    )


def _conflict(found: scheduling.ScheduleConflict) -> booking_pb2.Conflict:
    return booking_pb2.Conflict(
        kind=found.kind,
        reference_id=str(found.reference_id),
        starts_at=to_ts(found.starts_at),
        ends_at=to_ts(found.ends_at),
        team_id=str(found.team_id or ""),
        worker_id=str(found.worker_id or ""),
        note=found.note,
    )


class SchedulingApi:
    db: Database
    settings: BookingSettings

    def _window(self, request: WindowRequest) -> Window:
        return resources.check_window(
            from_ts(request.starts_at, "starts_at"),
            from_ts(request.ends_at, "ends_at"),
            max_days=self.settings.schedule_max_window_days,
        )

    # --- teams --------------------------------------------------------------------------------

    async def CreateTeam(
        self, request: booking_pb2.CreateTeamRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreateTeamResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await resources.create_team(uow, request.name)
        return booking_pb2.CreateTeamResponse(team=_team(row))

    async def ListTeams(
        self, request: booking_pb2.ListTeamsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListTeamsResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await resources.list_teams(uow)
        return booking_pb2.ListTeamsResponse(teams=[_team(r) for r in rows])

    async def DeleteTeam(
        self, request: booking_pb2.DeleteTeamRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.DeleteTeamResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            await resources.delete_team(uow, request.team_id)
        return booking_pb2.DeleteTeamResponse()

    async def UpdateTeam(
        self, request: booking_pb2.UpdateTeamRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.UpdateTeamResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await resources.update_team(
                uow,
                request.team_id,
                name=request.name if request.HasField("name") else None,
                active=request.active if request.HasField("active") else None,
            )
        return booking_pb2.UpdateTeamResponse(team=_team(row))

    # --- workers ------------------------------------------------------------------------------

    async def CreateWorker(
        self, request: booking_pb2.CreateWorkerRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreateWorkerResponse:
        request_context.require_role(*DISPATCH)
        data = resources.WorkerInput(
            name=request.name,
            email=request.email,
            phone=request.phone,
            role=request.role,
            team_id=request.team_id,
        )
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await resources.create_worker(uow, self.settings, data)
        return booking_pb2.CreateWorkerResponse(worker=_worker(row))

    async def ListWorkers(
        self, request: booking_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListWorkersResponse:
        request_context.require_role(*STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await resources.list_workers(uow, request.team_id)
        return booking_pb2.ListWorkersResponse(workers=[_worker(r) for r in rows])

    async def DeleteWorker(
        self, request: booking_pb2.DeleteWorkerRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.DeleteWorkerResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            await resources.delete_worker(uow, request.worker_id)
        return booking_pb2.DeleteWorkerResponse()

    async def UpdateWorker(
        self, request: booking_pb2.UpdateWorkerRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.UpdateWorkerResponse:
        request_context.require_role(*DISPATCH)
        given = {
            name: getattr(request, name)
            for name in ("name", "email", "phone", "role", "team_id", "active")
            if request.HasField(name)
        }
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await resources.update_worker(
                uow, self.settings, request.worker_id, resources.WorkerChanges(**given)
            )
        return booking_pb2.UpdateWorkerResponse(worker=_worker(row))

    # --- blackouts ----------------------------------------------------------------------------

    async def CreateBlackout(
        self, request: booking_pb2.CreateBlackoutRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreateBlackoutResponse:
        request_context.require_role(*DISPATCH)
        starts_at, ends_at = from_ts(request.starts_at, "starts_at"), from_ts(request.ends_at, "ends_at")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await resources.create_blackout(
                uow,
                team_id=request.team_id,
                worker_id=request.worker_id,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=request.reason,
            )
        return booking_pb2.CreateBlackoutResponse(blackout=_blackout(row))

    async def ListBlackouts(
        self, request: booking_pb2.ListBlackoutsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListBlackoutsResponse:
        request_context.require_role(*STAFF)
        from_time = from_ts(request.from_time, "from") if request.HasField("from_time") else None
        to_time = from_ts(request.to_time, "to") if request.HasField("to_time") else None
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await resources.list_blackouts(uow, from_time, to_time)
        return booking_pb2.ListBlackoutsResponse(blackouts=[_blackout(r) for r in rows])

    async def DeleteBlackout(
        self, request: booking_pb2.DeleteBlackoutRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.DeleteBlackoutResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            await resources.delete_blackout(uow, request.blackout_id)
        return booking_pb2.DeleteBlackoutResponse()

    async def PutExternalBlackout(
        self, request: booking_pb2.PutExternalBlackoutRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.PutExternalBlackoutResponse:
        """Busy time of an outside calendar (integrations' gcal-sync): a suite service only."""
        request_context.require_service()
        starts_at, ends_at = from_ts(request.starts_at, "starts_at"), from_ts(request.ends_at, "ends_at")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            put = await resources.put_external_blackout(
                uow,
                external_key=request.external_key,
                team_id=request.team_id,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=request.reason,
            )
        return booking_pb2.PutExternalBlackoutResponse(
            blackout=_blackout(put.row), created=put.created, changed=put.changed
        )

    async def DeleteExternalBlackouts(
        self, request: booking_pb2.DeleteExternalBlackoutsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.DeleteExternalBlackoutsResponse:
        request_context.require_service()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            deleted = await resources.delete_external_blackouts(uow, list(request.external_keys))
        return booking_pb2.DeleteExternalBlackoutsResponse(deleted=deleted)

    # --- scheduling ---------------------------------------------------------------------------

    async def AssignBooking(
        self, request: booking_pb2.AssignBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.AssignBookingResponse:
        request_context.require_role(*DISPATCH)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row, _ = await scheduling.assign(
                uow, request.booking_id, request.team_id, list(request.worker_ids)
            )
            (result,) = await protos.bookings(uow, [row])
        return booking_pb2.AssignBookingResponse(booking=result)

    async def ScheduleSuggestions(
        self, request: booking_pb2.ScheduleSuggestionsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ScheduleSuggestionsResponse:
        request_context.require_role(*DISPATCH)
        window = self._window(request)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await scheduling.suggestions(
                uow,
                window,
                skill_tags=list(request.skill_tags),
                booking_id=request.booking_id,
                limit=limit,
                offset=offset,
            )
        following = offset + len(found.teams) + len(found.workers)
        return booking_pb2.ScheduleSuggestionsResponse(
            teams=[_team(r) for r in found.teams],
            workers=[_worker(r) for r in found.workers],
            total=found.total,
            next_offset=following if following < found.total else 0,
        )

    async def ScheduleConflicts(
        self, request: booking_pb2.ScheduleConflictsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ScheduleConflictsResponse:
        request_context.require_role(*DISPATCH)
        window = self._window(request)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await scheduling.conflicts(
                uow,
                window,
                team_id=request.team_id,
                booking_id=request.booking_id,
                worker_id=request.worker_id,
            )
        return booking_pb2.ScheduleConflictsResponse(
            has_conflict=bool(found), conflicts=[_conflict(c) for c in found]
        )

    async def AssignmentQueue(
        self, request: booking_pb2.AssignmentQueueRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.AssignmentQueueResponse:
        request_context.require_role(*DISPATCH)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            entries, total = await scheduling.assignment_queue(
                uow, days=request.days, limit=limit, offset=offset
            )
            converted = await protos.bookings(uow, [entry.booking for entry in entries])
        return booking_pb2.AssignmentQueueResponse(
            items=[
                booking_pb2.QueueItem(booking=b, urgent=entry.urgent)
                for b, entry in zip(converted, entries, strict=True)
            ],
            total=total,
        )
