"""Photo review and deletion, staff side (issue 12, seed 002 "Operator productivity queues").

- GET /v1/admin/queue/photos?status=pending|needs_retake|all&limit=: photos awaiting review or a
  retake, oldest first, as a JSON array (seed 004's smoke line reads it as one).
- POST /v1/admin/photos/{photo_id}/approve and /needs-retake {"note": ...}: the review; 409 when the
  photo's status does not allow it. A needs-retake tells the worker who uploaded it, by email.
- DELETE /v1/admin/photos/{photo_id}: the photo is gone (404 after) and its object is removed later by
  the storage janitor.
All are for DISPATCHER or higher (OWNER, ADMIN, DISPATCHER): FINANCE and VIEWER get 403. Media checks
the role again and confines each call to the caller's org: another org's photo is 404. The writes are
audited by media (before/after in cws.media.audit.recorded)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cws.media.v1 import media_pb2
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import Field

from gateway.access import ADMIN
from gateway.deps import require_roles
from gateway.routes.photos import photo_view
from gateway.schemas import Strict
from gateway.stubs import Media
from libs.common.roles import DISPATCH

router = APIRouter(tags=["photos"])
REVIEWER = Depends(require_roles(*DISPATCH))
Id = Annotated[str, Path(max_length=64)]


class RetakeIn(Strict):
    # What to retake and why; sent to the worker as written.
    note: Annotated[str, Field(min_length=1, max_length=1000)]


@router.get(
    "/v1/admin/queue/photos",
    dependencies=[ADMIN, REVIEWER],
    summary="Photos awaiting review (pending) or a retake (needs_retake), oldest first: a JSON array",
)
async def photos_queue(
    media: Media,
    status: Literal["pending", "needs_retake", "all"] = "all",
    limit: int = Query(50, ge=1, le=200),
) -> list[dict[str, Any]]:
    response = await media.PhotoQueue(media_pb2.PhotoQueueRequest(status=status, limit=limit))
    return [photo_view(photo) for photo in response.photos]


@router.post(
    "/v1/admin/photos/{photo_id}/approve",
    dependencies=[ADMIN, REVIEWER],
    summary="Approve a pending (or needs_retake) photo; 409 if it is approved already",
)
async def approve_photo(photo_id: Id, media: Media) -> dict[str, Any]:
    response = await media.ApprovePhoto(media_pb2.ApprovePhotoRequest(photo_id=photo_id))
    return photo_view(response.photo)


@router.post(
    "/v1/admin/photos/{photo_id}/needs-retake",
    dependencies=[ADMIN, REVIEWER],
    summary="Ask for a retake of a pending or approved photo (the worker who uploaded it is emailed)",
)
async def photo_needs_retake(photo_id: Id, body: RetakeIn, media: Media) -> dict[str, Any]:
    response = await media.RequestPhotoRetake(
        media_pb2.RequestPhotoRetakeRequest(photo_id=photo_id, note=body.note)
    )
    return {**photo_view(response.photo), "worker_notified": response.worker_notified}


@router.delete(
    "/v1/admin/photos/{photo_id}",
    dependencies=[ADMIN, REVIEWER],
    status_code=204,
    summary="Delete a photo (tombstoned; the storage janitor removes its object from the backend)",
)
async def delete_photo(photo_id: Id, media: Media) -> Response:
    await media.DeletePhoto(media_pb2.DeletePhotoRequest(photo_id=photo_id))
    return Response(status_code=204)
