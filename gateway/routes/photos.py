"""Job photos, staff side (issue 12): upload a photo of a booking, list a booking's photos, one
photo's metadata.

Roles: uploading is for DISPATCHER or higher (OWNER, ADMIN, DISPATCHER; a VIEWER or FINANCE user gets
403); reading is for any staff. Media checks every role again and confines every call to the caller's
org: another org's booking or photo is 404.

The upload is multipart/form-data with the photo in the field `file`, streamed from the client to
media (gateway/multipart_stream.py): the Content-Length, when given, is checked before anything is
read (413 past ORDER_PHOTO_MAX_BYTES plus the form's envelope); then the file's bytes are counted as
they pass (413 at the first byte past ORDER_PHOTO_MAX_BYTES, with or without Content-Length) and sent
on to media's client-streaming UploadPhoto in chunks of at most 256 KiB. Media decides the type from
the content (415 for anything but an allowed image), strips the metadata and stores it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from cws.booking.v1 import booking_pb2
from cws.media.v1 import media_pb2
from fastapi import APIRouter, Depends, Path, Request

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.multipart_stream import boundary_of, file_field
from gateway.problems import ProblemError
from gateway.resources import Settings
from gateway.routes.convert import optional_time
from gateway.stubs import Booking, Media
from libs.common.roles import DISPATCH, STAFF

router = APIRouter(tags=["photos"])
UPLOADER = Depends(require_roles(*DISPATCH))
ANY_STAFF = Depends(require_roles(*STAFF))
Id = Annotated[str, Path(max_length=64)]

# Media's upload messages (the same oneof: metadata first, then chunks), and what its upload rpcs answer.
UploadMessage = TypeVar("UploadMessage", media_pb2.UploadPhotoRequest, media_pb2.UploadWorkerPhotoRequest)
UploadAnswer = TypeVar("UploadAnswer")
# What media takes per message (media_pb2.UploadPhotoRequest.chunk).
CHUNK_BYTES = 256 * 1024
# The form around the file (boundaries, part headers, small fields) on top of the photo itself.
ENVELOPE_BYTES = 64 * 1024
# Upload routes read their own body as a stream; BodyLimitMiddleware leaves their limit to the route.
UPLOAD_PATHS = (re.compile(r"^/v1/admin/bookings/[^/]+/photos$"),)


def photo_view(photo: media_pb2.Photo) -> dict[str, Any]:
    return {
        "photo_id": photo.id,
        "booking_id": photo.booking_id,
        "status": photo.status,
        "mime": photo.mime,
        "ext": photo.ext,
        "bytes": photo.bytes,
        "sha256": photo.sha256,
        "width": photo.width,
        "height": photo.height,
        "uploaded_by": photo.uploaded_by,
        "uploader_role": photo.uploader_role,
        "created_at": optional_time(photo, "created_at"),
        "review_note": photo.review_note or None,
        "reviewed_by": photo.reviewed_by or None,
        "reviewed_at": optional_time(photo, "reviewed_at"),
    }


def too_large(max_bytes: int) -> ProblemError:
    return ProblemError(413, "payload_too_large", f"a photo may be at most {max_bytes} bytes")


@router.post(
    "/v1/admin/bookings/{booking_id}/photos",
    dependencies=[ADMIN, UPLOADER],
    status_code=201,
    summary="Upload a photo of a booking (multipart/form-data, field `file`); dispatcher or higher",
    responses={
        413: {"description": "past ORDER_PHOTO_MAX_BYTES"},
        415: {"description": "not an allowed image"},
    },
)
async def upload_photo(
    booking_id: Id, request: Request, media: Media, booking: Booking, settings: Settings
) -> dict[str, Any]:
    max_bytes = settings.order_photo_max_bytes
    refuse_declared_oversize(request, max_bytes)
    # Another org's booking is 404 whatever the body holds, before a byte of it is read (media asks
    # booking again, authoritatively, before it reads the file).
    await booking.GetBooking(booking_pb2.GetBookingRequest(booking_id=booking_id))
    response = await stream_upload(
        request, max_bytes, booking_id, media_pb2.UploadPhotoRequest, media.UploadPhoto
    )
    return photo_view(response.photo)


def refuse_declared_oversize(request: Request, max_bytes: int) -> None:
    """413 before anything is read when the declared Content-Length is past the photo limit plus the
    form's envelope (BodyLimitMiddleware still stops a body that lies about it)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + ENVELOPE_BYTES:
        raise too_large(max_bytes)


async def stream_upload(
    request: Request,
    max_bytes: int,
    booking_id: str,
    message: type[UploadMessage],
    send: Callable[[AsyncIterator[UploadMessage]], Awaitable[UploadAnswer]],
) -> UploadAnswer:
    """The body's `file` field, streamed to media by `send` (a client-streaming upload rpc: the
    admin's UploadPhoto, the worker portal's UploadWorkerPhoto), counted as it passes (413 at the first
    byte past ORDER_PHOTO_MAX_BYTES, `max_bytes`). The caller has checked the booking first."""
    boundary = boundary_of(request.headers.get("content-type", ""))
    filename, declared_type, body = await file_field(request.stream(), boundary, "file")
    # An error raised while gRPC consumes the messages becomes a cancelled call: keep it to answer with.
    failed: list[ProblemError] = []

    async def messages() -> AsyncIterator[UploadMessage]:
        yield message(
            metadata=media_pb2.UploadMetadata(
                booking_id=booking_id, filename=filename, declared_content_type=declared_type
            )
        )
        seen = 0
        try:
            async for piece in body:
                seen += len(piece)
                if seen > max_bytes:
                    raise too_large(max_bytes)
                for start in range(0, len(piece), CHUNK_BYTES):
                    yield message(chunk=piece[start : start + CHUNK_BYTES])
        except ProblemError as problem:
            failed.append(problem)
            raise

    try:
        response = await send(messages())
    except (ProblemError, asyncio.CancelledError):
        # grpc.aio cancels the call when the message iterator raises: the reason is ours, in `failed`.
        if failed:
            raise failed[0] from None
        raise
    if failed:
        raise failed[0]
    return response


@router.get(
    "/v1/admin/bookings/{booking_id}/photos",
    dependencies=[ADMIN, ANY_STAFF],
    summary="A booking's photos, newest first (metadata; links are signed separately)",
)
async def list_booking_photos(booking_id: Id, media: Media) -> dict[str, Any]:
    response = await media.ListBookingPhotos(media_pb2.ListBookingPhotosRequest(booking_id=booking_id))
    return {"items": [photo_view(p) for p in response.photos]}


@router.get(
    "/v1/admin/photos/{photo_id}",
    dependencies=[ADMIN, ANY_STAFF],
    summary="One photo's metadata",
)
async def get_photo(photo_id: Id, media: Media) -> dict[str, Any]:
    response = await media.GetPhoto(media_pb2.GetPhotoRequest(photo_id=photo_id))
    return photo_view(response.photo)
