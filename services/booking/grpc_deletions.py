"""The person lookup and data deletion requests of the booking servicer (seed 002's data
export/delete playbook, issue 13). Proto in, domain call (persons.py, deletion_requests.py), proto out.

Every call by an owner or admin is audited with actor and subject (the unit of work's admin audit
record); a lookup changes no row, so it names its subject with `audit_change` to be recorded too."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from cws.booking.v1 import booking_pb2

from libs.common import context as request_context
from libs.common.convert import page, to_ts, to_ts_or_none
from libs.common.db import Database, unit_of_work
from libs.common.roles import MANAGERS
from services.booking import deletion_requests, persons
from services.booking.models import Record

DEFAULT_PENDING = 20


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def deletion_request(row: Record) -> booking_pb2.DeletionRequest:
    steps: dict[str, dict[str, Any]] = row.steps or {}
    return booking_pb2.DeletionRequest(
        id=str(row.id),
        status=row.status,
        subject=row.subject,
        requested_by=row.requested_by,
        created_at=to_ts(row.created_at),
        completed_at=to_ts_or_none(row.completed_at),
        matched_leads=row.matched_leads,
        steps=[
            booking_pb2.DeletionStep(
                name=name,
                done=bool(step.get("done")),
                done_at=to_ts_or_none(_time(step.get("done_at"))),
                attempts=int(step.get("attempts", 0)),
                last_error=step.get("last_error") or "",
                last_attempt_at=to_ts_or_none(_time(step.get("last_attempt_at"))),
            )
            for name in deletion_requests.STEPS
            for step in (steps.get(name, {}),)
        ],
    )


class DeletionsApi:
    db: Database

    async def FindPerson(
        self, request: booking_pb2.FindPersonRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.FindPersonResponse:
        request_context.require_role(*MANAGERS)
        subject = persons.parse_subject(request.lead_id, request.email)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, matched_leads = await persons.find(uow, subject)
            uow.audit_change(
                before={},
                after={
                    "purpose": request.purpose[:50],
                    "subject": subject.label,
                    "leads": matched_leads,
                    "bookings": len(found.booking_ids),
                },
            )
        return booking_pb2.FindPersonResponse(person=found.person())

    async def CreateDeletionRequest(
        self, request: booking_pb2.CreateDeletionRequestRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.CreateDeletionRequestResponse:
        caller = request_context.require_role(*MANAGERS)
        subject = persons.parse_subject(request.lead_id, request.email)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row, created, matched_bookings = await deletion_requests.create(uow, subject, caller.principal_id)
            uow.audit_change(
                before={},
                after={
                    "deletion_request_id": str(row.id),
                    "subject": subject.label,
                    "created": created,
                    "leads": row.matched_leads,
                    "bookings": matched_bookings,
                },
            )
        return booking_pb2.CreateDeletionRequestResponse(request=deletion_request(row), created=created)

    async def GetDeletionRequest(
        self, request: booking_pb2.GetDeletionRequestRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.GetDeletionRequestResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await deletion_requests.get(uow, request.request_id)
        return booking_pb2.GetDeletionRequestResponse(request=deletion_request(row))

    async def ListDeletionRequests(
        self, request: booking_pb2.ListDeletionRequestsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListDeletionRequestsResponse:
        request_context.require_role(*MANAGERS)
        status = deletion_requests.check_status(request.status)
        limit, _ = page(request.limit, 0)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await deletion_requests.list_requests(uow, status=status, limit=limit)
        return booking_pb2.ListDeletionRequestsResponse(requests=[deletion_request(r) for r in rows])

    async def ListPendingDeletions(
        self, request: booking_pb2.ListPendingDeletionsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListPendingDeletionsResponse:
        request_context.require_service()
        limit, _ = page(request.limit, 0, default=DEFAULT_PENDING)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await deletion_requests.pending(uow, limit=limit)
        return booking_pb2.ListPendingDeletionsResponse(
            deletions=[
                booking_pb2.PendingDeletion(request=deletion_request(row), person=person)
                for row, person in found
            ]
        )

    async def RecordDeletionStep(
        self, request: booking_pb2.RecordDeletionStepRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.RecordDeletionStepResponse:
        request_context.require_service()
        invoice_ids = list(request.invoice_ids)
        deletion_requests.check_step(request.step, invoice_ids)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await deletion_requests.record_step(
                uow,
                request.request_id,
                request.step,
                done=request.done,
                error=request.error,
                invoice_ids=invoice_ids,
            )
        return booking_pb2.RecordDeletionStepResponse(request=deletion_request(row))
