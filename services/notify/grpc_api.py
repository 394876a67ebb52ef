"""The notify servicer: proto in, domain call, proto out. The outbox and its operators' RPCs live here;
reminders and digests in grpc_scheduled.py (ScheduledApi).

Every RPC acts in the caller's org (row-level security makes another org's ids not found). The
operator RPCs are for MANAGERS only (OWNER, ADMIN; suite services call with role ADMIN). Exports other
services hand over (QueueExport) are taken from suite services only, and the stored ones are read by
finance staff (FINANCE_STAFF)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from cws.notify.v1 import notify_pb2, notify_pb2_grpc
from google.protobuf.json_format import MessageToDict
from sqlalchemy import Row

from libs.common import context as request_context
from libs.common.convert import page, to_ts, to_ts_or_none
from libs.common.db import Database, unit_of_work
from libs.common.errors import invalid
from libs.common.roles import DISPATCH, FINANCE_STAFF, MANAGERS
from services.notify import exports, outbox
from services.notify.delivery.loop import Delivery
from services.notify.grpc_scheduled import ScheduledApi
from services.notify.peers import Peers
from services.notify.settings import NotifySettings


def outbox_proto(row: Row[Any]) -> notify_pb2.OutboxEvent:
    return notify_pb2.OutboxEvent(
        id=str(row.id),
        kind=row.kind,
        dedupe_key=row.dedupe_key,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error or "",
        created_at=to_ts(row.created_at),
        updated_at=to_ts(row.updated_at),
        next_attempt_at=to_ts(row.next_attempt_at),
        target=row.target,
    )


def export_proto(row: Row[Any]) -> notify_pb2.ExportDeadLetter:
    return notify_pb2.ExportDeadLetter(
        id=str(row.id),
        outbox_id=str(row.outbox_id),
        target=row.target,
        last_error=row.last_error or "",
        attempts=row.attempts,
        created_at=to_ts(row.created_at),
        replayed_at=to_ts_or_none(row.replayed_at),
    )


def dead_letter_proto(row: Row[Any]) -> notify_pb2.DeadLetterItem:
    return notify_pb2.DeadLetterItem(
        kind=row.kind,
        id=str(row.id),
        outbox_id=str(row.outbox_id),
        event_kind=row.event_kind,
        dedupe_key=row.dedupe_key,
        target=row.target,
        attempts=row.attempts,
        last_error=row.last_error or "",
        created_at=to_ts(row.created_at),
    )


def stored_export_proto(found: exports.StoredExport) -> notify_pb2.StoredExport:
    return notify_pb2.StoredExport(
        id=str(found.id),
        mode=found.mode,
        period=found.period,
        filename=found.filename,
        rows=found.rows,
        bytes=found.bytes,
        created_at=to_ts(found.created_at),
    )


def email_event_proto(row: Row[Any]) -> notify_pb2.EmailEvent:
    return notify_pb2.EmailEvent(
        id=str(row.id),
        outbox_id=str(row.outbox_id or ""),
        email_type=row.email_type,
        recipient=row.recipient,
        subject=row.subject,
        status=row.status,
        error=row.error or "",
        booking_id=str(row.booking_id or ""),
        created_at=to_ts(row.created_at),
    )


class NotifyServicer(ScheduledApi, notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, db: Database, settings: NotifySettings, delivery: Delivery, peers: Peers) -> None:
        self.db = db
        self.settings = settings
        self.delivery = delivery
        self.peers = peers

    async def Enqueue(self, request: notify_pb2.EnqueueRequest, context: Any) -> notify_pb2.EnqueueResponse:
        request_context.require_role(*DISPATCH)
        payload = MessageToDict(request.payload)
        target = outbox.target_of(request.kind, payload, self.settings)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            enqueued = await outbox.enqueue(
                uow, kind=request.kind, dedupe_key=request.dedupe_key, payload=payload, target=target
            )
        return notify_pb2.EnqueueResponse(event=outbox_proto(enqueued.row), created=enqueued.created)

    async def DeliverDue(
        self, request: notify_pb2.DeliverDueRequest, context: Any
    ) -> notify_pb2.DeliverDueResponse:
        request_context.require_role(*MANAGERS)
        if request.max_rows < 0:
            raise invalid("max_rows", "must not be negative")
        max_rows = request.max_rows or self.settings.outbox_batch_size * 10
        # Delivery acts as the service for every org, not as the caller: a fresh context keeps the
        # caller's org out of it and its row updates out of the admin audit trail.
        counts = await asyncio.create_task(self.delivery.deliver_due(max_rows), context=contextvars.Context())
        return notify_pb2.DeliverDueResponse(
            claimed=counts.claimed,
            sent=counts.sent,
            retried=counts.retried,
            dead=counts.dead,
            deferred=counts.deferred,
        )

    async def ListOutboxDeadLetters(
        self, request: notify_pb2.ListOutboxDeadLettersRequest, context: Any
    ) -> notify_pb2.ListOutboxDeadLettersResponse:
        request_context.require_role(*MANAGERS)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await outbox.list_dead(uow, limit=limit, offset=offset)
        return notify_pb2.ListOutboxDeadLettersResponse(events=[outbox_proto(r) for r in rows])

    async def ReplayOutbox(
        self, request: notify_pb2.ReplayOutboxRequest, context: Any
    ) -> notify_pb2.ReplayOutboxResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await outbox.replay(uow, request.id)
        return notify_pb2.ReplayOutboxResponse(event=outbox_proto(row))

    async def ListExportDeadLetters(
        self, request: notify_pb2.ListExportDeadLettersRequest, context: Any
    ) -> notify_pb2.ListExportDeadLettersResponse:
        request_context.require_role(*MANAGERS)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await outbox.list_export_dead(uow, limit=limit, offset=offset)
        return notify_pb2.ListExportDeadLettersResponse(events=[export_proto(r) for r in rows])

    async def ReplayExportDeadLetter(
        self, request: notify_pb2.ReplayExportDeadLetterRequest, context: Any
    ) -> notify_pb2.ReplayExportDeadLetterResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            row = await outbox.replay_export(uow, request.id)
        return notify_pb2.ReplayExportDeadLetterResponse(event=outbox_proto(row))

    async def DeadLetterQueue(
        self, request: notify_pb2.DeadLetterQueueRequest, context: Any
    ) -> notify_pb2.DeadLetterQueueResponse:
        request_context.require_role(*MANAGERS)
        kind = request.kind or "all"
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await outbox.dead_letter_queue(uow, kind=kind, limit=limit, offset=offset)
        return notify_pb2.DeadLetterQueueResponse(
            items=[dead_letter_proto(r) for r in found.items],
            outbox_dead_count=found.outbox_dead_count,
            export_dead_count=found.export_dead_count,
            total=found.total(kind),
        )

    async def ListEmailEvents(
        self, request: notify_pb2.ListEmailEventsRequest, context: Any
    ) -> notify_pb2.ListEmailEventsResponse:
        request_context.require_role(*MANAGERS)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows = await outbox.list_email_events(
                uow, booking_id=request.booking_id, limit=limit, offset=offset
            )
        return notify_pb2.ListEmailEventsResponse(events=[email_event_proto(r) for r in rows])

    async def RetryDeadEmails(
        self, request: notify_pb2.RetryDeadEmailsRequest, context: Any
    ) -> notify_pb2.RetryDeadEmailsResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            result = await outbox.retry_dead_emails(uow, self.settings)
        return notify_pb2.RetryDeadEmailsResponse(requeued=result.requeued, left_dead=result.left_dead)

    async def RetentionCleanup(
        self, request: notify_pb2.RetentionCleanupRequest, context: Any
    ) -> notify_pb2.RetentionCleanupResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            deleted = await outbox.retention_cleanup(uow, self.settings)
        return notify_pb2.RetentionCleanupResponse(deleted=deleted)

    # --- exports of other services (billing's accounting CSV) and their review ---------------------

    async def QueueExport(
        self, request: notify_pb2.QueueExportRequest, context: Any
    ) -> notify_pb2.QueueExportResponse:
        # Only suite services hand over exports: a person's export goes through the service that
        # owns its data (a finance user downloads the accounting CSV from billing directly).
        request_context.require_service()
        export = exports.ExportIn(
            mode=request.mode,
            period=request.period,
            filename=request.filename,
            content=request.content,
            rows=request.rows,
            dedupe_key=request.dedupe_key,
        )
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            queued = await exports.queue(uow, self.settings, export)
        return notify_pb2.QueueExportResponse(
            delivery=queued.delivery, id=str(queued.id), created=queued.created
        )

    async def ListStoredExports(
        self, request: notify_pb2.ListStoredExportsRequest, context: Any
    ) -> notify_pb2.ListStoredExportsResponse:
        request_context.require_role(*FINANCE_STAFF)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await exports.list_stored(uow, mode=request.mode, limit=limit, offset=offset)
        return notify_pb2.ListStoredExportsResponse(exports=[stored_export_proto(e) for e in found])

    async def GetStoredExport(
        self, request: notify_pb2.GetStoredExportRequest, context: Any
    ) -> notify_pb2.GetStoredExportResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, content = await exports.get_stored(uow, request.id, mode=request.mode)
        return notify_pb2.GetStoredExportResponse(export=stored_export_proto(found), content=content)
