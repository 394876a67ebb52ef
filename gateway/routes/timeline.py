"""What happened to one booking or one invoice, across the suite (seed 002 "Operator productivity
queues", issue 13): `GET /v1/admin/timeline/booking/{id}` and `GET /v1/admin/timeline/invoice/{id}`.

Gathered by fan-out, not by a projection: each service (iam, booking, billing, media, notify) answers
ViewsService.GetTimeline for its own schema, inside the caller's org (RLS), capped per source, and
the gateway asks them all in parallel and merges the answers by time. A projection fed by events
would need a store of its own holding copies of every service's personal data (one more place an
erasure must reach) and could lag; the fan-out reads each service's rows as they are now, and the
per-source caps and indexes keep each share cheap.

One slow or down service degrades the answer, it does not fail it: each share has its own deadline
(TIMELINE_SOURCE_TIMEOUT_SECONDS), and a share that fails is left out, named in `sources` and the
answer marked `partial`. The owner of the subject (booking for a booking, billing for an invoice)
answering NOT_FOUND means the id is not the caller's org's: the whole answer is 404, whatever the
other services hold (they hold nothing of another org anyway). The owner being down only makes the
answer partial: the other services' shares are still the caller's org's own.

Personal data sits only in an entry's `details`, under libs.common.privacy.PII_KEYS; for the VIEWER
role every such value is masked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import grpc
from cws.common.v1 import views_pb2
from fastapi import APIRouter, Depends, Request
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.principal import Principal
from gateway.problems import ProblemError, uuid_param
from gateway.resources import settings_of
from gateway.stubs import Views
from libs.common.privacy import mask_pii
from libs.common.roles import STAFF, Role

if TYPE_CHECKING:
    from cws.common.v1.views_pb2_grpc import ViewsServiceAsyncStub

router = APIRouter(prefix="/v1/admin/timeline", tags=["timeline"], dependencies=[ADMIN])

Subject = Literal["booking", "invoice"]
# Who answers NOT_FOUND for an id that is not the caller's org's.
OWNER_OF: dict[str, str] = {"booking": "booking", "invoice": "billing"}
# Refusals of the caller by the owner: what the caller sent or who they are, not an outage.
CALLER_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
OK, UNAVAILABLE, TIMEOUT, ERROR = "ok", "unavailable", "timeout", "error"


def plain_json(value: Any) -> Any:
    """A Struct's JSON with whole numbers back as integers: a Struct holds every number as a double,
    and `{"amount_cents": 1500.0}` is not what the service meant."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def struct_json(message: Struct) -> dict[str, Any]:
    found = plain_json(MessageToDict(message))
    return found if isinstance(found, dict) else {}


def _status_of(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return TIMEOUT
    code = error.grpc_code if isinstance(error, ProblemError) else None
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return TIMEOUT
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return UNAVAILABLE
    return ERROR


def _entry(service: str, entry: views_pb2.TimelineEntry, masked: bool) -> tuple[datetime, dict[str, Any]]:
    at = entry.at.ToDatetime(tzinfo=UTC)
    details = struct_json(entry.details) if entry.HasField("details") else {}
    return at, {
        "at": entry.at.ToJsonString(),
        "service": service,
        "source": entry.source or service,
        "kind": entry.kind,
        "summary": entry.summary,
        "actor": entry.actor,
        "id": entry.id,
        "details": mask_pii(details) if masked else details,
    }


async def _one(
    stub: ViewsServiceAsyncStub, request: views_pb2.GetTimelineRequest, timeout: float
) -> views_pb2.GetTimelineResponse:
    # The call's own deadline ends it at the service too; wait_for is the backstop should a call
    # outlive it (a connection that stalls before the deadline is applied).
    return await asyncio.wait_for(stub.GetTimeline(request, timeout=timeout), timeout + 1.0)


async def timeline(
    request: Request, views: dict[str, ViewsServiceAsyncStub], subject: Subject, subject_id: str, role: str
) -> dict[str, Any]:
    timeout = settings_of(request).timeline_source_timeout_seconds
    message = (
        views_pb2.GetTimelineRequest(booking_id=subject_id)
        if subject == "booking"
        else views_pb2.GetTimelineRequest(invoice_id=subject_id)
    )
    names = list(views)
    answers = await asyncio.gather(
        *(_one(views[name], message, timeout) for name in names), return_exceptions=True
    )
    owner = OWNER_OF[subject]
    sources: dict[str, str] = {}
    entries: list[tuple[datetime, dict[str, Any]]] = []
    truncated = False
    masked = role == Role.VIEWER
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer  # cancellation and the like are not a source's failure
            code = answer.grpc_code if isinstance(answer, ProblemError) else None
            if name == owner and isinstance(answer, ProblemError):
                if code is grpc.StatusCode.NOT_FOUND:
                    raise ProblemError(404, "not_found", f"no such {subject} in your organisation")
                if code in CALLER_ERRORS:
                    raise answer
            if name != owner and code is grpc.StatusCode.NOT_FOUND:
                # Not the owner: it holds nothing about the subject, which is an answer, not a failure.
                sources[name] = OK
                continue
            sources[name] = _status_of(answer)
            continue
        sources[name] = OK
        truncated = truncated or answer.truncated
        entries += [_entry(name, e, masked) for e in answer.entries]
    # Oldest first; ties in a stable order, so the same rows always come out the same way.
    entries.sort(key=lambda item: (item[0], item[1]["service"], item[1]["source"], item[1]["id"]))
    return {
        "subject": {"type": subject, "id": subject_id},
        "partial": any(status != OK for status in sources.values()),
        "sources": sources,
        "truncated": truncated,
        "events": [event for _, event in entries],
    }


SUMMARY = (
    "What happened to one {0} across the services, oldest first: audit entries, emails, outbox rows, "
    "payments and Stripe events, photos, NPS. A service that fails or is slow is left out and the "
    "answer marked partial; personal data is masked for the VIEWER role"
)


@router.get("/booking/{booking_id}", summary=SUMMARY.format("booking"))
async def booking_timeline(
    booking_id: str,
    request: Request,
    views: Views,
    principal: Principal = Depends(require_roles(*STAFF)),
) -> dict[str, Any]:
    return await timeline(request, views, "booking", uuid_param(booking_id, "booking_id"), principal.role)


@router.get("/invoice/{invoice_id}", summary=SUMMARY.format("invoice"))
async def invoice_timeline(
    invoice_id: str,
    request: Request,
    views: Views,
    principal: Principal = Depends(require_roles(*STAFF)),
) -> dict[str, Any]:
    return await timeline(request, views, "invoice", uuid_param(invoice_id, "invoice_id"), principal.role)
