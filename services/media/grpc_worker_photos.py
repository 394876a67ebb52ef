"""The worker part of the media servicer: a worker's uploads from the worker portal and their list
(worker_photos.py holds the rules, photos.py the upload itself)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
from cws.media.v1 import media_pb2

from libs.common import context as request_context
from libs.common.convert import parse_id
from libs.common.db import Database
from libs.common.errors import InvalidArgument, invalid
from libs.common.roles import Role
from services.media import photos, protos, worker_photos
from services.media.peers import Peers
from services.media.settings import MediaSettings
from services.media.storage.base import Storage

# As for UploadPhoto: the gateway sends chunks of at most 256 KiB; a little slack for other clients.
MAX_CHUNK_BYTES = 512 * 1024


class WorkerPhotosApi:
    db: Database
    settings: MediaSettings
    peers: Peers
    storage: Storage

    async def UploadWorkerPhoto(
        self,
        request_iterator: AsyncIterator[media_pb2.UploadWorkerPhotoRequest],
        context: grpc.aio.ServicerContext,
    ) -> media_pb2.UploadWorkerPhotoResponse:
        worker_id = worker_photos.require_worker(request_context.current())
        org_id = request_context.current_org_id()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument("the first message of an upload must be its metadata", code="invalid")
        booking_id = parse_id(first.metadata.booking_id, "booking_id")

        async def check_assigned(org: uuid.UUID, booking: uuid.UUID) -> None:
            await worker_photos.require_assigned(self._assigned_workers, org, booking, worker_id)

        row = await photos.upload(
            self.db,
            self.storage,
            org_id=org_id,
            booking_id=booking_id,
            uploaded_by=worker_id,
            uploader_role=Role.WORKER,
            chunks=_chunks(request_iterator),
            check_booking=check_assigned,
            max_bytes=self.settings.order_photo_max_bytes,
            allowed_mime=self.settings.allowed_mime,
            spool_dir=self.settings.spool_dir,
        )
        return media_pb2.UploadWorkerPhotoResponse(photo=protos.photo(row))

    async def ListWorkerPhotos(
        self, request: media_pb2.ListWorkerPhotosRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.ListWorkerPhotosResponse:
        worker_id = worker_photos.require_worker(request_context.current())
        org_id = request_context.current_org_id()
        booking_id = parse_id(request.booking_id, "booking_id")
        await worker_photos.require_assigned(self._assigned_workers, org_id, booking_id, worker_id)
        rows = await worker_photos.list_own(self.db, org_id, booking_id, worker_id)
        return media_pb2.ListWorkerPhotosResponse(photos=[protos.photo(row) for row in rows])

    async def _assigned_workers(self, org_id: uuid.UUID, booking_id: uuid.UUID) -> frozenset[str]:
        return (await self.peers.booking_facts(org_id, booking_id)).worker_ids


async def _chunks(requests: AsyncIterator[media_pb2.UploadWorkerPhotoRequest]) -> AsyncIterator[bytes]:
    """The file's bytes from the messages after the metadata (UploadWorkerPhotoRequest is its own
    message type, as buf's lint wants, so grpc_api's reader of UploadPhotoRequest does not type-check
    here)."""
    async for message in requests:
        if message.WhichOneof("part") != "chunk":
            raise invalid("chunk", "only the first message of an upload may carry metadata")
        if len(message.chunk) > MAX_CHUNK_BYTES:
            raise invalid("chunk", f"a chunk may hold at most {MAX_CHUNK_BYTES} bytes")
        yield message.chunk
