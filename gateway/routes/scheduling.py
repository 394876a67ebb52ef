"""Teams, workers, blackouts, assignment, scheduling v2 (suggestions, conflicts) and the
assignments queue (seed 002). Reads of teams, workers and blackouts: any staff role; everything
else: dispatcher credentials (OWNER, ADMIN, DISPATCHER). The booking service checks again."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from cws.booking.v1 import booking_pb2
from fastapi import APIRouter, Depends, Query, Response
from pydantic import AwareDatetime, Field, field_validator

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.routes import convert
from gateway.schemas import Strict
from gateway.stubs import Booking
from libs.common.roles import DISPATCH, STAFF

router = APIRouter(prefix="/v1/admin", tags=["scheduling"], dependencies=[ADMIN])
Id = Annotated[str, Field(max_length=64)]


class TeamIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]


class WorkerIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(max_length=320)] = ""
    phone: Annotated[str, Field(max_length=32)] = ""
    role: Annotated[str, Field(max_length=200, description="Free text, matched as skill tags")] = ""
    team_id: Id | None = None


class TeamPatch(Strict):
    """Only the fields sent change."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    active: bool | None = None

    @field_validator("name", "active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class WorkerPatch(Strict):
    """Only the fields sent change; team_id null detaches the worker, email/phone/role null clear them."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    role: Annotated[str, Field(max_length=200)] | None = None
    team_id: Id | None = None
    active: bool | None = None

    @field_validator("name", "active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class BlackoutIn(Strict):
    team_id: Id | None = Field(None, description="Exactly one of team_id and worker_id")
    worker_id: Id | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    reason: Annotated[str, Field(max_length=500)] = ""


class AssignIn(Strict):
    team_id: Id | None = None
    worker_ids: Annotated[list[Id], Field(max_length=20)] = []


def team(message: booking_pb2.Team) -> dict[str, Any]:
    return {"id": message.id, "name": message.name, "active": message.active}


def worker(message: booking_pb2.Worker) -> dict[str, Any]:
    return {
        "id": message.id,
        "name": message.name,
        "email": message.email,
        "phone": message.phone,
        "role": message.role,
        "team_id": message.team_id or None,
        "active": message.active,
    }


def blackout(message: booking_pb2.Blackout) -> dict[str, Any]:
    return {
        "id": message.id,
        "team_id": message.team_id or None,
        "worker_id": message.worker_id or None,
        "starts_at": message.starts_at.ToJsonString(),
        "ends_at": message.ends_at.ToJsonString(),
        "reason": message.reason,
    }


def conflict(message: booking_pb2.Conflict) -> dict[str, Any]:
    return {
        "kind": message.kind,
        "reference_id": message.reference_id,
        "starts_at": message.starts_at.ToJsonString(),
        "ends_at": message.ends_at.ToJsonString(),
        "team_id": message.team_id or None,
        "worker_id": message.worker_id or None,
        "note": message.note,
    }


# --- teams ------------------------------------------------------------------------------------


@router.post("/teams", status_code=201, summary="Create a team")
async def create_team(
    body: TeamIn, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> dict[str, Any]:
    response = await booking.CreateTeam(booking_pb2.CreateTeamRequest(name=body.name))
    return team(response.team)


@router.get("/teams", summary="Teams of your org")
async def list_teams(
    booking: Booking, principal: Principal = Depends(require_roles(*STAFF))
) -> dict[str, Any]:
    response = await booking.ListTeams(booking_pb2.ListTeamsRequest())
    return {"teams": [team(t) for t in response.teams]}


@router.delete(
    "/teams/{team_id}", status_code=204, summary="Delete a team (refused while it has upcoming jobs)"
)
async def delete_team(
    team_id: str, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> Response:
    await booking.DeleteTeam(booking_pb2.DeleteTeamRequest(team_id=team_id))
    return Response(status_code=204)


@router.patch("/teams/{team_id}", summary="Rename a team or (de)activate it")
async def update_team(
    team_id: str, body: TeamPatch, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> dict[str, Any]:
    message = booking_pb2.UpdateTeamRequest(team_id=team_id)
    if "name" in body.model_fields_set:
        message.name = body.name or ""
    if "active" in body.model_fields_set:
        message.active = bool(body.active)
    response = await booking.UpdateTeam(message)
    return team(response.team)


# --- workers ----------------------------------------------------------------------------------


@router.post("/workers", status_code=201, summary="Create a worker; role is free text used as skill tags")
async def create_worker(
    body: WorkerIn, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> dict[str, Any]:
    response = await booking.CreateWorker(
        booking_pb2.CreateWorkerRequest(
            name=body.name, email=body.email, phone=body.phone, role=body.role, team_id=body.team_id or ""
        ),
    )
    return worker(response.worker)


@router.get("/workers", summary="Workers of your org, optionally of one team")
async def list_workers(
    booking: Booking,
    team_id: str = Query("", max_length=64),
    principal: Principal = Depends(require_roles(*STAFF)),
) -> dict[str, Any]:
    response = await booking.ListWorkers(booking_pb2.ListWorkersRequest(team_id=team_id))
    return {"workers": [worker(w) for w in response.workers]}


@router.delete("/workers/{worker_id}", status_code=204, summary="Delete a worker (refused while assigned)")
async def delete_worker(
    worker_id: str, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> Response:
    await booking.DeleteWorker(booking_pb2.DeleteWorkerRequest(worker_id=worker_id))
    return Response(status_code=204)


@router.patch("/workers/{worker_id}", summary="Change a worker; team_id null detaches it from its team")
async def update_worker(
    worker_id: str,
    body: WorkerPatch,
    booking: Booking,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    message = booking_pb2.UpdateWorkerRequest(worker_id=worker_id)
    for name in ("name", "email", "phone", "role", "team_id"):
        if name in body.model_fields_set:
            setattr(message, name, getattr(body, name) or "")
    if "active" in body.model_fields_set:
        message.active = bool(body.active)
    response = await booking.UpdateWorker(message)
    return worker(response.worker)


# --- blackouts --------------------------------------------------------------------------------


@router.post("/blackouts", status_code=201, summary="Block a team or a worker for a period")
async def create_blackout(
    body: BlackoutIn, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> dict[str, Any]:
    response = await booking.CreateBlackout(
        booking_pb2.CreateBlackoutRequest(
            team_id=body.team_id or "",
            worker_id=body.worker_id or "",
            starts_at=convert.timestamp(body.starts_at, "starts_at"),
            ends_at=convert.timestamp(body.ends_at, "ends_at"),
            reason=body.reason,
        ),
    )
    return blackout(response.blackout)


@router.get("/blackouts", summary="Blackouts, optionally those overlapping [from, to)")
async def list_blackouts(
    booking: Booking,
    from_: AwareDatetime | None = Query(None, alias="from"),
    to: AwareDatetime | None = Query(None),
    principal: Principal = Depends(require_roles(*STAFF)),
) -> dict[str, Any]:
    message = booking_pb2.ListBlackoutsRequest()
    if from_:
        message.from_time.CopyFrom(convert.timestamp(from_, "from"))
    if to:
        message.to_time.CopyFrom(convert.timestamp(to, "to"))
    response = await booking.ListBlackouts(message)
    return {"blackouts": [blackout(b) for b in response.blackouts]}


@router.delete("/blackouts/{blackout_id}", status_code=204, summary="Remove a blackout")
async def delete_blackout(
    blackout_id: str, booking: Booking, principal: Principal = Depends(require_roles(*DISPATCH))
) -> Response:
    await booking.DeleteBlackout(booking_pb2.DeleteBlackoutRequest(blackout_id=blackout_id))
    return Response(status_code=204)


# --- assignment and scheduling v2 -------------------------------------------------------------


@router.post(
    "/bookings/{booking_id}/assign",
    summary="Assign a booking to a team and workers (409 schedule_conflict when any is busy)",
)
async def assign_booking(
    booking_id: str,
    body: AssignIn,
    booking: Booking,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    response = await booking.AssignBooking(
        booking_pb2.AssignBookingRequest(
            booking_id=booking_id, team_id=body.team_id or "", worker_ids=body.worker_ids
        ),
    )
    return convert.booking(response.booking)


@router.get("/schedule/suggestions", summary="Teams and workers free for a window (seed 002)")
async def schedule_suggestions(
    booking: Booking,
    starts_at: AwareDatetime = Query(...),
    ends_at: AwareDatetime = Query(...),
    skill_tags: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006
    booking_id: str = Query("", max_length=64, description="Leave this booking's own blocks out"),
    limit: int = Query(50, ge=1, le=200, description="Teams and workers on this page, together"),
    offset: int = Query(0, ge=0, le=1_000_000, description="next_offset of the previous page"),
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    response = await booking.ScheduleSuggestions(
        booking_pb2.ScheduleSuggestionsRequest(
            starts_at=convert.timestamp(starts_at, "starts_at"),
            ends_at=convert.timestamp(ends_at, "ends_at"),
            skill_tags=skill_tags,
            booking_id=booking_id,
            limit=limit,
            offset=offset,
        ),
    )
    return {
        "starts_at": starts_at.astimezone(UTC).isoformat(),
        "ends_at": ends_at.astimezone(UTC).isoformat(),
        "teams": [team(t) for t in response.teams],
        "workers": [worker(w) for w in response.workers],
        "total": response.total,
        "next_offset": response.next_offset or None,
    }


@router.get("/schedule/conflicts", summary="What blocks a team or worker in a window (seed 002)")
async def schedule_conflicts(
    booking: Booking,
    starts_at: AwareDatetime = Query(...),
    ends_at: AwareDatetime = Query(...),
    team_id: str = Query("", max_length=64),
    booking_id: str = Query("", max_length=64, description="Leave this booking's own blocks out"),
    worker_id: str = Query("", max_length=64),
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    response = await booking.ScheduleConflicts(
        booking_pb2.ScheduleConflictsRequest(
            starts_at=convert.timestamp(starts_at, "starts_at"),
            ends_at=convert.timestamp(ends_at, "ends_at"),
            team_id=team_id,
            booking_id=booking_id,
            worker_id=worker_id,
        ),
    )
    return {"has_conflict": response.has_conflict, "conflicts": [conflict(c) for c in response.conflicts]}


@router.get("/queue/assignments", summary="Unassigned bookings in the next N days; urgent within 24 h")
async def assignments_queue(
    booking: Booking,
    days: int = Query(7, ge=1, le=30),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> dict[str, Any]:
    response = await booking.AssignmentQueue(
        booking_pb2.AssignmentQueueRequest(days=days, limit=limit, offset=offset),
    )
    return {
        "days": days,
        "total": response.total,
        "items": [{**convert.booking(item.booking), "urgent": item.urgent} for item in response.items],
    }
