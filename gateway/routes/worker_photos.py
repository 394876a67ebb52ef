"""Job photos, worker side (issue 12): a worker signed in to the worker portal uploads photos of their
own assigned jobs and lists their own uploads.

Authentication is the worker portal's (gateway/portal_auth.py: the `worker_session` cookie or its
token as a Bearer, checked by IAM on every request); the request's calls then act as that worker.
A booking the worker is not assigned to, another worker's or another org's, is 404: booking answers
so in the worker's context before a byte of the body is read, and media checks the assignment again
with booking (the worker id from the signed context) before it reads the file.

The upload is the admin upload's stream (gateway/routes/photos.py `stream_upload`: multipart field
`file`, 413 past ORDER_PHOTO_MAX_BYTES while streaming, 415 for anything but an allowed image) sent
to media's UploadWorkerPhoto, which stores it exactly as a staff upload (`uploader_role` WORKER,
`uploaded_by` the worker's id); 409 `subscription_paused` while the org is paused."""

from __future__ import annotations

import re
from typing import Annotated, Any

from cws.booking.v1 import booking_pb2
from cws.media.v1 import media_pb2
from fastapi import APIRouter, Depends, Path, Request

from gateway.access import PORTAL
from gateway.portal_auth import require_worker
from gateway.principal import Principal
from gateway.resources import Settings
from gateway.routes.photos import photo_view, refuse_declared_oversize, stream_upload
from gateway.stubs import Booking, Media

router = APIRouter(tags=["photos", "portals"])
WORKER_AUTH = (
    "Send the `worker_session` cookie set by POST /worker/login/confirm, or its session token as a Bearer."
)
Id = Annotated[str, Path(max_length=64)]
# Read as a stream by the route (BodyLimitMiddleware leaves its limit to it, as for the admin upload).
UPLOAD_PATHS = (re.compile(r"^/v1/worker/portal/bookings/[^/]+/photos$"),)


@router.post(
    "/v1/worker/portal/bookings/{booking_id}/photos",
    dependencies=[PORTAL],
    status_code=201,
    summary="Upload a photo of one's own assigned job (multipart/form-data, field `file`)",
    description=WORKER_AUTH + " A job the worker is not assigned to is 404.",
    responses={
        404: {"description": "not a job of this worker"},
        409: {"description": "the org's subscription is paused"},
        413: {"description": "past ORDER_PHOTO_MAX_BYTES"},
        415: {"description": "not an allowed image"},
    },
)
async def upload_worker_photo(
    booking_id: Id,
    request: Request,
    media: Media,
    booking: Booking,
    settings: Settings,
    worker: Principal = Depends(require_worker),
) -> dict[str, Any]:
    max_bytes = settings.order_photo_max_bytes
    refuse_declared_oversize(request, max_bytes)
    # In the worker's context booking answers only the worker's own jobs (404 for any other).
    await booking.GetBooking(booking_pb2.GetBookingRequest(booking_id=booking_id))
    response = await stream_upload(
        request, max_bytes, booking_id, media_pb2.UploadWorkerPhotoRequest, media.UploadWorkerPhoto
    )
    return photo_view(response.photo)


@router.get(
    "/v1/worker/portal/bookings/{booking_id}/photos",
    dependencies=[PORTAL],
    summary="One's own uploads to one's own assigned job, newest first",
    description=WORKER_AUTH + " Photos other people took of the job are not listed.",
)
async def list_worker_photos(
    booking_id: Id, media: Media, worker: Principal = Depends(require_worker)
) -> dict[str, Any]:
    response = await media.ListWorkerPhotos(media_pb2.ListWorkerPhotosRequest(booking_id=booking_id))
    return {"items": [photo_view(p) for p in response.photos]}
