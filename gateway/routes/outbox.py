"""/v1/admin/outbox/*, /v1/admin/export-dead-letter and /v1/admin/queue/dlq: the delivery outbox's dead
letters and replay (seed 002 "Outbox delivery + DLQ", seed 003 "Dead Letter Queue Check"). Admin only;
everything is in the caller's org, so another org's ids are not found."""

from __future__ import annotations

from typing import Any

from cws.notify.v1 import notify_pb2
from fastapi import APIRouter, Depends, Query
from fastapi.responses import ORJSONResponse

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.problems import uuid_param
from gateway.routes.convert import optional_time
from gateway.stubs import Notify, NotifyStub
from libs.common.roles import MANAGERS

router = APIRouter(prefix="/v1/admin", tags=["outbox"], dependencies=[ADMIN])


def outbox_event(message: notify_pb2.OutboxEvent) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind,
        "dedupe_key": message.dedupe_key,
        "status": message.status,
        "attempts": message.attempts,
        "last_error": message.last_error or None,
        "target": message.target,
        "created_at": optional_time(message, "created_at"),
        "updated_at": optional_time(message, "updated_at"),
        "next_attempt_at": optional_time(message, "next_attempt_at"),
    }


def export_dead_letter(message: notify_pb2.ExportDeadLetter) -> dict[str, Any]:
    return {
        "id": message.id,
        "outbox_id": message.outbox_id,
        "target": message.target,
        "last_error": message.last_error or None,
        "attempts": message.attempts,
        "created_at": optional_time(message, "created_at"),
        "replayed_at": optional_time(message, "replayed_at"),
    }


def dead_letter_item(message: notify_pb2.DeadLetterItem) -> dict[str, Any]:
    return {
        "kind": message.kind,
        "id": message.id,
        "outbox_id": message.outbox_id,
        "event_kind": message.event_kind,
        "dedupe_key": message.dedupe_key,
        "target": message.target,
        "attempts": message.attempts,
        "last_error": message.last_error or None,
        "created_at": optional_time(message, "created_at"),
    }


async def _outbox_dead_letters(notify: NotifyStub, limit: int, offset: int) -> list[dict[str, Any]]:
    response = await notify.ListOutboxDeadLetters(
        notify_pb2.ListOutboxDeadLettersRequest(limit=limit, offset=offset)
    )
    return [outbox_event(e) for e in response.events]


@router.get("/outbox/dead-letter", summary="Dead outbox events of your org, newest first")
async def outbox_dead_letters(
    notify: Notify,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> list[dict[str, Any]]:
    return await _outbox_dead_letters(notify, limit, offset)


# The seed's deploy checklist also names this spelling (seed 002 "Deploy order").
@router.get("/outbox-dead-letter", summary="Same as /v1/admin/outbox/dead-letter", include_in_schema=False)
async def outbox_dead_letters_alias(
    notify: Notify,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> list[dict[str, Any]]:
    return await _outbox_dead_letters(notify, limit, offset)


@router.post(
    "/outbox/{event_id}/replay", status_code=202, summary="Send a dead outbox event again (fresh attempts)"
)
async def replay_outbox(
    event_id: str, notify: Notify, principal: Principal = Depends(require_roles(*MANAGERS))
) -> ORJSONResponse:
    response = await notify.ReplayOutbox(notify_pb2.ReplayOutboxRequest(id=uuid_param(event_id, "id")))
    return ORJSONResponse(outbox_event(response.event), status_code=202)


@router.get("/export-dead-letter", summary="Dead exports not yet replayed (the legacy export DLQ)")
async def export_dead_letters(
    notify: Notify,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> list[dict[str, Any]]:
    response = await notify.ListExportDeadLetters(
        notify_pb2.ListExportDeadLettersRequest(limit=limit, offset=offset)
    )
    return [export_dead_letter(e) for e in response.events]


@router.post(
    "/export-dead-letter/{dead_letter_id}/replay",
    status_code=202,
    summary="Send a dead export again; returns its outbox event",
)
async def replay_export_dead_letter(
    dead_letter_id: str, notify: Notify, principal: Principal = Depends(require_roles(*MANAGERS))
) -> ORJSONResponse:
    response = await notify.ReplayExportDeadLetter(
        notify_pb2.ReplayExportDeadLetterRequest(id=uuid_param(dead_letter_id, "id"))
    )
    return ORJSONResponse(outbox_event(response.event), status_code=202)


@router.get("/queue/dlq", summary="Dead outbox and export events in one list, with both counts")
async def dead_letter_queue(
    notify: Notify,
    kind: str = Query("all", pattern="^(outbox|export|all)$"),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> dict[str, Any]:
    response = await notify.DeadLetterQueue(
        notify_pb2.DeadLetterQueueRequest(kind=kind, limit=limit, offset=offset)
    )
    return {
        "items": [dead_letter_item(i) for i in response.items],
        "outbox_dead_count": response.outbox_dead_count,
        "export_dead_count": response.export_dead_count,
        "total": response.total,
        "limit": limit,
        "offset": offset,
    }
