"""The review and cleanup part of media's servicer: the photo queue, approve, needs-retake, delete
(dispatcher or higher), and the storage janitor (suite services only, called by jobs with no org).

The work is in review.py and janitor.py; this part checks roles and ids, and tells the worker who
uploaded a photo that it needs a retake, through notify's outbox (Enqueue), after the transition is
committed. A staff uploader is told nothing by email: they are the ones looking at the queue."""

from __future__ import annotations

import uuid

import grpc
from cws.booking.v1 import booking_pb2
from cws.media.v1 import media_pb2
from cws.notify.v1 import notify_pb2
from google.protobuf import struct_pb2

from libs.common import context as request_context
from libs.common.context import service_context
from libs.common.convert import page, parse_id
from libs.common.db import Database
from libs.common.errors import ServiceError
from libs.common.grpc_client import acting_as, peer_answers
from libs.common.logs import get_logger
from libs.common.roles import DISPATCH, Role
from services.media import janitor, protos, review
from services.media.models import Record
from services.media.peers import Peers
from services.media.settings import MediaSettings
from services.media.storage.base import Storage

log = get_logger(__name__)


class ReviewApi:
    db: Database
    settings: MediaSettings
    peers: Peers
    storage: Storage

    async def PhotoQueue(
        self, request: media_pb2.PhotoQueueRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.PhotoQueueResponse:
        request_context.require_role(*DISPATCH)
        limit, _ = page(request.limit, 0)
        rows = await review.queue(
            self.db, request_context.current_org_id(), review.queue_statuses(request.status), limit
        )
        return media_pb2.PhotoQueueResponse(photos=[protos.photo(row) for row in rows])

    async def ApprovePhoto(
        self, request: media_pb2.ApprovePhotoRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.ApprovePhotoResponse:
        ctx = request_context.require_role(*DISPATCH)
        row = await review.transition(
            self.db,
            request_context.current_org_id(),
            parse_id(request.photo_id, "photo_id"),
            to="approved",
            allowed_from=review.APPROVABLE,
            reviewer=ctx.principal_id,
            note=None,
        )
        return media_pb2.ApprovePhotoResponse(photo=protos.photo(row))

    async def RequestPhotoRetake(
        self, request: media_pb2.RequestPhotoRetakeRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.RequestPhotoRetakeResponse:
        ctx = request_context.require_role(*DISPATCH)
        photo_id = parse_id(request.photo_id, "photo_id")
        note = review.clean_note(request.note)
        org_id = request_context.current_org_id()
        row = await review.transition(
            self.db,
            org_id,
            photo_id,
            to="needs_retake",
            allowed_from=review.RETAKEABLE,
            reviewer=ctx.principal_id,
            note=note,
        )
        notified = await self._tell_worker(org_id, row, ctx.request_id)
        return media_pb2.RequestPhotoRetakeResponse(photo=protos.photo(row), worker_notified=notified)

    async def _tell_worker(self, org_id: uuid.UUID, row: Record, request_id: str) -> bool:
        """Email the worker who uploaded the photo (booking knows their address). The retake is already
        recorded: if booking or notify is away, the reviewer still gets their answer (worker_notified
        false, logged) rather than an error for a change that happened."""
        if row.uploader_role != Role.WORKER:
            return False
        try:
            with acting_as(service_context("media", str(org_id), request_id)):
                with peer_answers("booking", refused_means_not_found=True):
                    workers = await self.peers.booking.stub.ListWorkers(booking_pb2.ListWorkersRequest())
                email = next((w.email for w in workers.workers if w.id == row.uploaded_by and w.email), "")
                if not email:
                    return False
                with peer_answers("notify", refused_means_not_found=True):
                    await self.peers.notify.stub.Enqueue(
                        notify_pb2.EnqueueRequest(
                            kind="email",
                            # One email per review: a retried call for the same review is one email.
                            # Structured, so notify matches the booking's rows by `:booking:<id>`
                            # (the booking timeline, issue 13) without a LIKE on the bare id.
                            dedupe_key=(
                                f"email:photo_retake:booking:{row.booking_id}"
                                f":photo:{row.id}:{row.reviewed_at.isoformat()}"
                            ),
                            payload=retake_email(email, row),
                        )
                    )
        except ServiceError as error:
            log.warning("retake_email_not_enqueued", photo_id=str(row.id), error=str(error))
            return False
        return True

    async def DeletePhoto(
        self, request: media_pb2.DeletePhotoRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.DeletePhotoResponse:
        request_context.require_role(*DISPATCH)
        await review.delete(self.db, request_context.current_org_id(), parse_id(request.photo_id, "photo_id"))
        return media_pb2.DeletePhotoResponse()

    async def RunStorageJanitor(
        self, request: media_pb2.RunStorageJanitorRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.RunStorageJanitorResponse:
        request_context.require_service()
        batch = request.batch if 0 < request.batch <= 1000 else self.settings.storage_janitor_batch
        result = await janitor.run(
            self.db,
            self.storage,
            batch=batch,
            backoff=janitor.Backoff(
                self.settings.storage_janitor_backoff_seconds,
                self.settings.storage_janitor_max_backoff_seconds,
            ),
        )
        return media_pb2.RunStorageJanitorResponse(
            deleted=result.deleted,
            failed=result.failed,
            remaining=result.remaining,
            retrying=result.retrying,
        )


def retake_email(to: str, row: Record) -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update(
        {
            "to": to,
            "subject": "A job photo needs to be retaken",
            "text": (
                "Hello,\n\nA photo you uploaded for booking "
                f"{row.booking_id} needs to be retaken.\n\nReviewer's note: {row.review_note}\n"
            ),
        }
    )
    return payload
