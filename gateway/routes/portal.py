"""Client and worker portals (seed 002, "Client portal v1 usage").

Clients: POST /client/login/request → magic link (by email; in dev/test optionally in the answer),
GET /client/login/callback → `client_session` cookie, then /v1/client/portal/bookings[/{id}].
Workers: an admin mints a link (POST /v1/admin/workers/{id}/portal-link), GET /worker/login/callback
→ `worker_session` cookie, then /v1/worker/portal/jobs[/{id}[/start|/complete]].

Every portal call reaches booking with a CLIENT_PORTAL or WORKER_PORTAL context for the token's org;
booking itself confines it to that client's or worker's bookings and answers 404 for any other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from cws.booking.v1 import booking_pb2
from cws.iam.v1 import iam_pb2
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import ORJSONResponse
from pydantic import Field

from gateway.access import ADMIN, OPEN_IN_READ_ONLY, PORTAL
from gateway.deps import require_roles
from gateway.portal_auth import (
    CLIENT_COOKIE,
    MAX_TOKEN_LENGTH,
    WORKER_COOKIE,
    require_client,
    require_worker,
    set_session_cookie,
    verify_client_token,
    verify_worker_token,
)
from gateway.principal import ANONYMOUS, Principal, context_for
from gateway.problems import ProblemError
from gateway.resources import Settings
from gateway.routes import convert
from gateway.routes.public import org_key
from gateway.schemas import Email, Strict
from gateway.stubs import Booking, BookingStub, Iam
from libs.common.convert import to_ts
from libs.common.grpc_client import acting_as
from libs.common.logs import get_logger
from libs.common.roles import DISPATCH

router = APIRouter(tags=["portals"])
CLIENT_AUTH = "Send the `client_session` cookie set by /client/login/callback, or its token as a Bearer."
WORKER_AUTH = "Send the `worker_session` cookie set by /worker/login/callback, or its token as a Bearer."
log = get_logger(__name__)

OrgKeyHeader = Annotated[str | None, Header(alias="X-Org-Key", max_length=64)]
Id = Annotated[str, Path(max_length=64)]
Token = Annotated[str, Query(min_length=1, max_length=MAX_TOKEN_LENGTH, description="From the magic link")]
# A job that overran its slot must stay on the worker's list until it is completed.
WORKER_LOOKBACK = timedelta(hours=24)
# The magic link carries a credential: keep it out of caches and out of the next page's Referer.
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class ClientLoginIn(Strict):
    email: Email
    org_key: Annotated[str, Field(max_length=64)] | None = None


# What a client sees of their booking: no staff notes, cancel reasons (staff free text), staffing.
CLIENT_FIELDS = (
    "id",
    "status",
    "starts_at",
    "ends_at",
    "time_zone",
    "starts_at_local",
    "ends_at_local",
    "client_name",
    "address",
    "postal_code",
    "cleaning_type",
    "beds",
    "baths",
    "total_before_tax",
    "total_before_tax_cents",
    "currency",
    "deposit_required",
    "deposit_paid",
)
# What a worker needs for the job: where, when, what, whom to call; no prices, no client email.
WORKER_FIELDS = (
    "id",
    "status",
    "starts_at",
    "ends_at",
    "time_zone",
    "starts_at_local",
    "ends_at_local",
    "client_name",
    "client_phone",
    "address",
    "postal_code",
    "cleaning_type",
    "beds",
    "baths",
    "notes",
    "team_id",
    "worker_ids",
)


def client_view(message: booking_pb2.Booking) -> dict[str, Any]:
    full = convert.booking(message)
    return {key: full[key] for key in CLIENT_FIELDS}


def worker_view(message: booking_pb2.Booking) -> dict[str, Any]:
    full = convert.booking(message)
    return {key: full[key] for key in WORKER_FIELDS}


# --- client portal -----------------------------------------------------------------------------


@router.post(
    "/client/login/request",
    status_code=202,
    summary="Ask for a magic link by email; always 202, whether or not the email is known",
    dependencies=[PORTAL, OPEN_IN_READ_ONLY],
)
async def request_client_login(
    body: ClientLoginIn,
    request: Request,
    booking: Booking,
    iam: Iam,
    settings: Settings,
    x_org_key: OrgKeyHeader = None,
) -> dict[str, str]:
    sent = {"status": "sent"}
    key = (body.org_key or "").strip().lower() or org_key(request, settings, x_org_key)
    org: Principal | None = None  # None: the public org (X-Test-Org in dev/test, else DEFAULT_ORG_ID)
    if key:
        try:
            resolved = await booking.ResolvePublicOrg(booking_pb2.ResolvePublicOrgRequest(org_key=key))
        except ProblemError as error:
            if error.status != 404:
                raise
            log.warning("client_login_unknown_org_key", org_key=key)
            return sent  # same answer as for any email: nothing to learn from it
        org = Principal(principal_id="", org_id=resolved.org_id, role="", auth_method=ANONYMOUS)
    # The magic link is issued in the org the key named, not the request's public org.
    with acting_as(context_for(request, org)):
        found = await iam.RequestClientLogin(iam_pb2.RequestClientLoginRequest(email=body.email))
    if found.token:  # only with CLIENT_MAGIC_LINK_IN_RESPONSE (dev/test)
        return {**sent, "magic_link": "/client/login/callback?" + urlencode({"token": found.token})}
    return sent


@router.get(
    "/client/login/callback",
    summary="Follow the magic link: sets the client_session cookie",
    dependencies=[PORTAL],
)
async def client_login_callback(token: Token, iam: Iam, settings: Settings) -> ORJSONResponse:
    verified = await verify_client_token(iam, token)
    response = ORJSONResponse(
        {"ok": True, "org_id": verified.principal.org_id, "email": verified.principal.principal_id},
        headers=NO_STORE,
    )
    set_session_cookie(settings, response, CLIENT_COOKIE, token, verified.expires_at)
    return response


@router.get(
    "/v1/client/portal/bookings",
    description=CLIENT_AUTH,
    summary="The signed-in client's bookings (upcoming by default)",
    dependencies=[PORTAL],
)
async def client_bookings(
    booking: Booking,
    include_past: bool = Query(False, description="Also list bookings that have ended"),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    client: Principal = Depends(require_client),
) -> dict[str, Any]:
    message = booking_pb2.ListBookingsRequest(limit=limit, offset=offset)
    if not include_past:
        message.from_time.CopyFrom(to_ts(datetime.now(UTC)))
    response = await booking.ListBookings(message)
    return {"bookings": [client_view(b) for b in response.bookings], "total": response.total}


@router.get(
    "/v1/client/portal/bookings/{booking_id}",
    description=CLIENT_AUTH,
    summary="One of the signed-in client's bookings",
    dependencies=[PORTAL],
)
async def client_booking(
    booking_id: Id,
    booking: Booking,
    client: Principal = Depends(require_client),
) -> dict[str, Any]:
    response = await booking.GetBooking(booking_pb2.GetBookingRequest(booking_id=booking_id))
    return client_view(response.booking)


# --- worker portal -----------------------------------------------------------------------------


@router.post(
    "/v1/admin/workers/{worker_id}/portal-link",
    summary="Mint a worker portal link (dispatcher and up); hand it to the worker",
    dependencies=[ADMIN],
)
async def worker_portal_link(
    worker_id: Id,
    booking: Booking,
    iam: Iam,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> ORJSONResponse:
    await _check_worker(booking, worker_id)
    issued = await iam.IssueWorkerPortalToken(iam_pb2.IssueWorkerPortalTokenRequest(worker_id=worker_id))
    return ORJSONResponse(
        {
            "token": issued.token,
            "expires_at": issued.expires_at.ToJsonString(),
            "link": "/worker/login/callback?" + urlencode({"token": issued.token}),
        },
        headers=NO_STORE,
    )


async def _check_worker(booking: BookingStub, worker_id: str) -> None:
    """IAM signs whatever id it is given; only booking knows the org's workers, so ask it first."""
    try:
        wanted = str(uuid.UUID(worker_id))
    except ValueError:
        raise ProblemError(
            422,
            "validation_error",
            "the request is invalid; see errors",
            errors=[{"field": "worker_id", "message": "must be a UUID"}],
        ) from None
    found = await booking.ListWorkers(booking_pb2.ListWorkersRequest())
    worker = next((w for w in found.workers if w.id == wanted), None)
    if worker is None:
        raise ProblemError(404, "not_found", "worker not found")
    if not worker.active:
        raise ProblemError(409, "worker_inactive", "this worker is inactive")


@router.get(
    "/worker/login/callback",
    summary="Follow the worker link: sets the worker_session cookie",
    dependencies=[PORTAL],
)
async def worker_login_callback(token: Token, iam: Iam, settings: Settings) -> ORJSONResponse:
    verified = await verify_worker_token(iam, token)
    response = ORJSONResponse(
        {"ok": True, "org_id": verified.principal.org_id, "worker_id": verified.principal.principal_id},
        headers=NO_STORE,
    )
    set_session_cookie(settings, response, WORKER_COOKIE, token, verified.expires_at)
    return response


@router.get(
    "/v1/worker/portal/jobs",
    description=WORKER_AUTH,
    summary="Jobs assigned to the signed-in worker",
    dependencies=[PORTAL],
)
async def worker_jobs(
    booking: Booking,
    include_past: bool = Query(False, description="Also list jobs that ended more than a day ago"),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    worker: Principal = Depends(require_worker),
) -> dict[str, Any]:
    message = booking_pb2.ListBookingsRequest(limit=limit, offset=offset)
    if not include_past:
        message.from_time.CopyFrom(to_ts(datetime.now(UTC) - WORKER_LOOKBACK))
    response = await booking.ListBookings(message)
    return {"jobs": [worker_view(b) for b in response.bookings], "total": response.total}


@router.get(
    "/v1/worker/portal/jobs/{job_id}",
    description=WORKER_AUTH,
    summary="One job assigned to the signed-in worker",
    dependencies=[PORTAL],
)
async def worker_job(
    job_id: Id,
    booking: Booking,
    worker: Principal = Depends(require_worker),
) -> dict[str, Any]:
    response = await booking.GetBooking(booking_pb2.GetBookingRequest(booking_id=job_id))
    return worker_view(response.booking)


@router.post(
    "/v1/worker/portal/jobs/{job_id}/{action}",
    description=WORKER_AUTH,
    summary="start or complete one's own job",
    dependencies=[PORTAL],
)
async def worker_transition(
    job_id: Id,
    action: str,
    booking: Booking,
    worker: Principal = Depends(require_worker),
) -> dict[str, Any]:
    if action not in ("start", "complete"):
        raise ProblemError(404, "not_found", f"unknown job action {action!r}")
    response = await booking.TransitionBooking(
        booking_pb2.TransitionBookingRequest(booking_id=job_id, action=action)
    )
    # The NPS token of a completed job is the client's to use, never the worker's: it is dropped.
    return worker_view(response.booking)
