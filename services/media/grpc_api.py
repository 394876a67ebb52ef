"""Media's gRPC servicer: the edge of each call (roles, ids, messages); the work is in the domain
modules (photos.py), which hold no gRPC. Other parts of the servicer (links, review) are mixins
beside `PhotosApi`, as billing's are."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
from cws.media.v1 import media_pb2, media_pb2_grpc

from libs.common import context as request_context
from libs.common.convert import parse_id
from libs.common.db import Database
from libs.common.errors import InvalidArgument, invalid
from libs.common.roles import DISPATCH, STAFF
from services.media import photos, protos
from services.media.grpc_delivery import DeliveryApi
from services.media.grpc_review import ReviewApi
from services.media.grpc_usage import UsageApi
from services.media.grpc_worker_photos import WorkerPhotosApi
from services.media.peers import Peers
from services.media.settings import MediaSettings
from services.media.storage.base import Storage

# The gateway sends chunks of at most 256 KiB; a little slack for other clients.
MAX_CHUNK_BYTES = 512 * 1024


class PhotosApi:
    db: Database
    settings: MediaSettings
    peers: Peers
    storage: Storage

    async def UploadPhoto(
        self,
        request_iterator: AsyncIterator[media_pb2.UploadPhotoRequest],
        context: grpc.aio.ServicerContext,
    ) -> media_pb2.UploadPhotoResponse:
        ctx = request_context.require_role(*DISPATCH)
        org_id = request_context.current_org_id()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument("the first message of an upload must be its metadata", code="invalid")
        booking_id = parse_id(first.metadata.booking_id, "booking_id")

        row = await photos.upload(
            self.db,
            self.storage,
            org_id=org_id,
            booking_id=booking_id,
            uploaded_by=ctx.principal_id,
            uploader_role=ctx.role,
            chunks=_chunks(request_iterator),
            check_booking=self._check_booking,
            max_bytes=self.settings.order_photo_max_bytes,
            allowed_mime=self.settings.allowed_mime,
            spool_dir=self.settings.spool_dir,
        )
        return media_pb2.UploadPhotoResponse(photo=protos.photo(row))

    async def _check_booking(self, org_id: uuid.UUID, booking_id: uuid.UUID) -> None:
        await self.peers.booking_facts(org_id, booking_id)

    async def ListBookingPhotos(
        self, request: media_pb2.ListBookingPhotosRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.ListBookingPhotosResponse:
        request_context.require_role(*STAFF)
        rows = await photos.list_for_booking(
            self.db,
            request_context.current_org_id(),
            parse_id(request.booking_id, "booking_id"),
            self._check_booking,
        )
        return media_pb2.ListBookingPhotosResponse(photos=[protos.photo(row) for row in rows])

    async def GetPhoto(
        self, request: media_pb2.GetPhotoRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.GetPhotoResponse:
        request_context.require_role(*STAFF)
        row = await photos.get(
            self.db, request_context.current_org_id(), parse_id(request.photo_id, "photo_id")
        )
        return media_pb2.GetPhotoResponse(photo=protos.photo(row))


async def _chunks(requests: AsyncIterator[media_pb2.UploadPhotoRequest]) -> AsyncIterator[bytes]:
    """The file's bytes from the messages after the metadata; a second metadata or an oversized
    message is the client's mistake."""
    async for message in requests:
        if message.WhichOneof("part") != "chunk":
            raise invalid("chunk", "only the first message of an upload may carry metadata")
        if len(message.chunk) > MAX_CHUNK_BYTES:
            raise invalid("chunk", f"a chunk may hold at most {MAX_CHUNK_BYTES} bytes")
        yield message.chunk


class MediaServicer(
    PhotosApi, WorkerPhotosApi, UsageApi, ReviewApi, DeliveryApi, media_pb2_grpc.MediaServiceServicer
):
    def __init__(self, db: Database, settings: MediaSettings, peers: Peers, storage: Storage) -> None:
        self.db = db
        self.settings = settings
        self.peers = peers
        self.storage = storage
