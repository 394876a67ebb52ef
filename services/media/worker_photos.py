"""Worker uploads: a worker signed in to the worker portal uploads photos of the bookings they are
assigned to, and sees their own uploads. No gRPC here.

Who the worker is comes only from the signed context (the gateway's worker portal session, checked by
IAM): its principal is the worker's id. Whether they are assigned comes only from booking (its
`worker_ids` for the booking, asked by media as itself in the worker's org): a booking of another
worker, or of another org, is NotFound, the same answer as a booking that does not exist, so ids
cannot be probed. The upload itself is the staff upload's (photos.upload): same intake, limits,
pause check, key and event; only `uploaded_by` (the worker id) and `uploader_role` (WORKER) differ."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from libs.common.context import AuthMethod, RequestContext
from libs.common.db import Database, unit_of_work
from libs.common.errors import NotFound, PermissionDenied
from libs.common.roles import Role
from services.media.models import Record, order_photos

WORKER_PORTAL = AuthMethod.Value("AUTH_METHOD_WORKER_PORTAL")
# booking's answer: the ids of the workers assigned to a booking of the org (NotFound if not the org's).
AssignedWorkers = Callable[[uuid.UUID, uuid.UUID], Awaitable[frozenset[str]]]


def require_worker(ctx: RequestContext) -> str:
    """The worker's id from a worker portal context; anyone else (staff included) is refused: staff
    upload through the admin API, which has its own rules."""
    if ctx.auth_method != WORKER_PORTAL or ctx.role != Role.WORKER or not ctx.principal_id:
        raise PermissionDenied("only a worker signed in to the worker portal may do this", code="worker_only")
    return ctx.principal_id


async def require_assigned(
    assigned_workers: AssignedWorkers, org_id: uuid.UUID, booking_id: uuid.UUID, worker_id: str
) -> None:
    """NotFound unless `worker_id` is assigned to the booking (booking's own answer)."""
    if worker_id not in await assigned_workers(org_id, booking_id):
        raise NotFound("booking not found", code="booking_not_found")


async def list_own(db: Database, org_id: uuid.UUID, booking_id: uuid.UUID, worker_id: str) -> list[Record]:
    """The worker's own uploads to the booking (not deleted), newest first; the caller checked the
    assignment. Other uploaders' photos of the same job are not the worker's to list."""
    async with unit_of_work(db, org_id) as uow:
        rows = await uow.session.execute(
            select(order_photos)
            .where(
                order_photos.c.org_id == org_id,
                order_photos.c.booking_id == booking_id,
                order_photos.c.uploaded_by == worker_id,
                order_photos.c.uploader_role == Role.WORKER,
                order_photos.c.deleted_at.is_(None),
            )
            .order_by(order_photos.c.created_at.desc(), order_photos.c.id)
        )
        return list(rows.all())
