"""Seed 002's data export/delete playbook at the edge (issue 13), for OWNER and ADMIN only (Basic
Auth's owner and admin pairs too). Everything acts in the caller's org: booking resolves the person
inside it (another org's lead id is a 404), and every service answers for its own rows under RLS.

- `POST /v1/admin/data/export` with `lead_id` or `email`: booking finds the person (and audits the
  export with the actor and the subject), then every service that holds personal data (booking,
  billing, media, notify, iam) answers ExportPerson in parallel; the sections are merged into one
  bundle. Metadata only: no signed URLs, tokens or message bodies. A service that cannot answer
  fails the export (503 naming it): an export that silently lacks a service's records would be
  handed to the person as complete. An unknown person gets the empty bundle.
- `POST /v1/admin/data-deletion/requests` with `lead_id` or `email`: booking records the request and
  marks the person's leads pending deletion (asking again answers the open request, `created`
  false); the retention cleanup (POST /v1/admin/retention/cleanup, and the retention job) then
  erases the person service by service, each step idempotent and retried until done.
- `GET /v1/admin/data-deletion/requests[/{request_id}]`: the requests and which steps are done.

ADMIN_READ_ONLY refuses all three POSTs (gateway/access.py): the deletion request is a write, and an
export, though it changes no record of the person, writes its audit entry and hands out everything
the org holds about someone, which is not what a frozen back office is for (break-glass allows it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cws.booking.v1 import booking_pb2
from cws.common.v1 import privacy_pb2
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import ORJSONResponse
from pydantic import Field, field_validator, model_validator

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.fanout import all_of
from gateway.problems import ProblemError, uuid_param
from gateway.routes.convert import optional_time
from gateway.routes.timeline import struct_json
from gateway.schemas import Strict
from gateway.stubs import Booking, Privacy
from libs.common.roles import MANAGERS

if TYPE_CHECKING:
    from cws.common.v1.privacy_pb2_grpc import PrivacyServiceAsyncStub

router = APIRouter(prefix="/v1/admin", tags=["data protection"], dependencies=[ADMIN])
MANAGER = Depends(require_roles(*MANAGERS))

# The sections every export has, in this order, even when empty (a service may add others).
SECTIONS = (
    "leads",
    "bookings",
    "nps",
    "invoices",
    "payments",
    "refunds",
    "emails",
    "photos",
    "photo_consents",
    "portal_access",
)
EXPORT_SOURCES = ("booking", "billing", "media", "notify", "iam")
# Plain enough to catch a typo or a name where an email belongs; the services match exactly.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class PersonIn(Strict):
    """Exactly one of the two."""

    lead_id: Annotated[str, Field(max_length=64, description="a lead of your org (UUID)")] | None = None
    email: Annotated[str, Field(max_length=320, description="the person's email, any case")] | None = None

    @field_validator("lead_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return uuid_param(value, "lead_id")
        except ProblemError:
            raise ValueError("must be a UUID") from None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower()
        if not EMAIL.match(text):
            raise ValueError("must be an email address")
        return text

    @model_validator(mode="after")
    def _one(self) -> PersonIn:
        if (self.lead_id is None) == (self.email is None):
            raise ValueError("give exactly one of lead_id and email")
        return self

    def subject(self) -> dict[str, str]:
        return {"lead_id": self.lead_id} if self.lead_id else {"email": self.email or ""}


def _has_anything(person: privacy_pb2.Person) -> bool:
    return bool(person.lead_ids or person.emails or person.booking_ids or person.invoice_ids)


async def _export(
    privacy: dict[str, PrivacyServiceAsyncStub], person: privacy_pb2.Person
) -> dict[str, list[Any]]:
    bundle: dict[str, list[Any]] = {name: [] for name in SECTIONS}
    if not _has_anything(person):
        return bundle  # nobody the org knows: nothing any service could hold
    message = privacy_pb2.ExportPersonRequest(person=person)
    answers = await all_of(
        {name: privacy[name].ExportPerson(message) for name in EXPORT_SOURCES}, "export what it holds"
    )
    for answer in answers.values():
        for section, records in struct_json(answer.sections).items():
            bundle.setdefault(section, []).extend(records if isinstance(records, list) else [records])
    return bundle


@router.post(
    "/data/export",
    summary="Everything the org holds about a person (by lead_id or email), gathered from every "
    "service: metadata only, no tokens or signed URLs; an unknown person gets empty lists",
    dependencies=[MANAGER],
)
async def export_person(body: PersonIn, booking: Booking, privacy: Privacy) -> dict[str, Any]:
    found = await booking.FindPerson(
        booking_pb2.FindPersonRequest(lead_id=body.lead_id or "", email=body.email or "", purpose="export")
    )
    bundle = await _export(privacy, found.person)
    return {
        "subject": body.subject(),
        "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **bundle,
    }


def deletion_view(message: booking_pb2.DeletionRequest) -> dict[str, Any]:
    return {
        "id": message.id,
        "status": message.status,
        "subject": message.subject,
        "requested_by": message.requested_by or None,
        "matched_leads": message.matched_leads,
        "steps": [
            {
                "name": step.name,
                "done": step.done,
                "done_at": optional_time(step, "done_at"),
                "attempts": step.attempts,
                "last_error": step.last_error or None,
                "last_attempt_at": optional_time(step, "last_attempt_at"),
            }
            for step in message.steps
        ],
        "created_at": optional_time(message, "created_at"),
        "completed_at": optional_time(message, "completed_at"),
    }


@router.post(
    "/data-deletion/requests",
    status_code=202,
    summary="Ask for a person's data to be erased (by lead_id or email): their leads are marked "
    "pending deletion and the retention cleanup erases them; asking again answers the open request",
    dependencies=[MANAGER],
)
async def request_deletion(body: PersonIn, booking: Booking) -> ORJSONResponse:
    response = await booking.CreateDeletionRequest(
        booking_pb2.CreateDeletionRequestRequest(lead_id=body.lead_id or "", email=body.email or "")
    )
    view = {**deletion_view(response.request), "created": response.created}
    return ORJSONResponse(view, status_code=202)


@router.get(
    "/data-deletion/requests",
    summary="The org's data deletion requests, newest first, with the steps each has done",
    dependencies=[MANAGER],
)
async def list_deletion_requests(
    booking: Booking,
    status: Annotated[Literal["pending", "completed"] | None, Query(description="default: all")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    response = await booking.ListDeletionRequests(
        booking_pb2.ListDeletionRequestsRequest(status=status or "", limit=limit)
    )
    return {"requests": [deletion_view(r) for r in response.requests]}


@router.get(
    "/data-deletion/requests/{request_id}",
    summary="One data deletion request and which of its steps are done",
    dependencies=[MANAGER],
)
async def get_deletion_request(
    request_id: Annotated[str, Path(max_length=64)], booking: Booking
) -> dict[str, Any]:
    response = await booking.GetDeletionRequest(
        booking_pb2.GetDeletionRequestRequest(request_id=uuid_param(request_id, "request_id"))
    )
    return deletion_view(response.request)
