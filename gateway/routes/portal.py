"""Client and worker portals (seed 002, "Client portal v1 usage").

Clients: POST /client/login/request → magic link (by email; in dev/test optionally in the answer).
Workers: an admin mints a link (POST /v1/admin/workers/{id}/portal-link), and may end a worker's
portal access without deactivating them (POST /v1/admin/workers/{id}/portal/revoke).
Either link, GET /client/login/callback?token=… (or /worker/login/callback), signs nobody in: it
answers a small page whose button POSTs the token, in the body, to /client/login/confirm (or
/worker/login/confirm). That POST uses the link up (once) and opens a portal session, whose opaque
token becomes the `client_session` / `worker_session` cookie (and, to a JSON client, the answer's
`session_token`, for `Authorization: Bearer`). Then /v1/client/portal/bookings[/{id}] and
/v1/worker/portal/jobs[/{id}[/start|/complete]]; POST /client/logout and /worker/logout end it.

Why a page and a POST (issue 9, hole 8): a GET that signs in lets any site sign a visitor in as
someone else (login CSRF) with an <img> tag, and lets mail scanners that prefetch links use a
one-time link up. The page has no script (it cannot auto-submit) and the POST is refused when
another site started it (gateway/csrf.py).

Every portal call reaches booking with a CLIENT_PORTAL or WORKER_PORTAL context for the session's
org; booking itself confines it to that client's or worker's bookings and answers 404 for any other."""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import orjson
from cws.booking.v1 import booking_pb2
from cws.iam.v1 import iam_pb2
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.responses import HTMLResponse, ORJSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from gateway.access import ADMIN, OPEN_IN_READ_ONLY, PORTAL
from gateway.csrf import check_same_origin
from gateway.deps import bearer_scheme, require_roles
from gateway.portal_auth import (
    CLIENT,
    CLIENT_COOKIE,
    MAX_TOKEN_LENGTH,
    WORKER,
    WORKER_COOKIE,
    PortalKind,
    clear_session_cookie,
    credential_of,
    require_client,
    require_worker,
    set_session_cookie,
)
from gateway.principal import ANONYMOUS, Principal, context_for
from gateway.problems import ProblemError
from gateway.resources import Settings
from gateway.routes import convert
from gateway.routes.public import org_key
from gateway.schemas import Email, Strict
from gateway.settings import GatewaySettings
from gateway.stubs import Booking, BookingStub, Iam, IamStub
from libs.common.convert import to_ts
from libs.common.grpc_client import acting_as
from libs.common.logs import get_logger
from libs.common.roles import DISPATCH

router = APIRouter(tags=["portals"])
CLIENT_AUTH = (
    "Send the `client_session` cookie set by POST /client/login/confirm, or its session token as a Bearer."
)
WORKER_AUTH = (
    "Send the `worker_session` cookie set by POST /worker/login/confirm, or its session token as a Bearer."
)
log = get_logger(__name__)

OrgKeyHeader = Annotated[str | None, Header(alias="X-Org-Key", max_length=64)]
Id = Annotated[str, Path(max_length=64)]
Token = Annotated[str, Query(min_length=1, max_length=MAX_TOKEN_LENGTH, description="From the magic link")]
# A job that overran its slot must stay on the worker's list until it is completed.
WORKER_LOOKBACK = timedelta(hours=24)
# The magic link carries a credential: keep it out of caches and out of the next page's Referer.
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
# The confirm page: no script, no subresource, posts only to this origin, framed by nobody.
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


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


# --- signing in and out ------------------------------------------------------------------------


class ClientSignedIn(BaseModel):
    ok: bool
    org_id: str
    email: str
    expires_at: datetime
    session_token: str | None = Field(None, description="Only to a JSON client (for Authorization: Bearer)")


class WorkerSignedIn(BaseModel):
    ok: bool
    org_id: str
    worker_id: str
    expires_at: datetime
    session_token: str | None = Field(None, description="Only to a JSON client (for Authorization: Bearer)")


class WorkerPortalRevoked(BaseModel):
    revoked_sessions: int = Field(description="Portal sessions that were open and are now ended")
    revoked_links: int = Field(description="Links not yet used that are now revoked")


CONFIRM_DESCRIPTION = (
    "The link's token goes in the body (a form field or JSON `token`), never in the URL. A used, "
    "revoked or expired link is 401. Refused (403 `cross_site_request`) when another site's page "
    "sent it. A JSON client (JSON body or `Accept: application/json`) also gets `session_token`."
)
_TOKEN_BODY = {
    "type": "object",
    "required": ["token"],
    "properties": {"token": {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_LENGTH}},
}
CONFIRM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _TOKEN_BODY},
            "application/json": {"schema": _TOKEN_BODY},
        },
    }
}
CONFIRM_RESPONSES: dict[int | str, dict[str, Any]] = {
    415: {"description": "The body is neither a form nor JSON"}
}


def confirm_page(token: str, who: str) -> HTMLResponse:
    """The page a link opens: a button that posts the token to `confirm` (beside the callback, so it
    works under any path prefix). No script: nothing posts it but the person."""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>Sign in</title></head>
<body><main>
<h1>Sign in</h1>
<p>{html.escape(who)}</p>
<form method="post" action="confirm">
<input type="hidden" name="token" value="{html.escape(token, quote=True)}">
<button type="submit">Sign in</button>
</form>
<p>Did not ask for this link? Close this page; nothing happens until you press the button.</p>
</main></body></html>
"""
    return HTMLResponse(page, headers=PAGE_HEADERS)


def _token_problem(message: str) -> ProblemError:
    return ProblemError(
        422,
        "validation_error",
        "the request is invalid; see errors",
        errors=[{"field": "token", "message": message}],
    )


async def link_token_of(request: Request) -> tuple[str, bool]:
    """The link token from the body, and whether the caller speaks JSON."""
    if "token" in request.query_params:
        raise _token_problem("send the token in the body, not in the URL")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProblemError(400, "malformed_json", "the request body is not valid JSON") from None
        token = data.get("token") if isinstance(data, dict) else None
        wants_json = True
    elif content_type == "application/x-www-form-urlencoded":
        try:
            values = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise ProblemError(400, "bad_request", "the form body is not valid UTF-8") from None
        token = values["token"][0] if len(values.get("token", [])) == 1 else None
        wants_json = "application/json" in request.headers.get("accept", "")
    else:
        raise ProblemError(415, "unsupported_media_type", "send a form or JSON body with the link's token")
    if not isinstance(token, str) or not token.strip():
        raise _token_problem("is required")
    if len(token) > MAX_TOKEN_LENGTH or "\x00" in token:
        raise _token_problem("is not a portal link token")
    return token.strip(), wants_json


async def confirm(
    request: Request, iam: IamStub, settings: GatewaySettings, kind: PortalKind
) -> ORJSONResponse:
    check_same_origin(request, settings)  # login CSRF: before anything is read or used
    token, wants_json = await link_token_of(request)
    redeemed = await iam.RedeemPortalLink(iam_pb2.RedeemPortalLinkRequest(kind=kind, link_token=token))
    session = redeemed.session
    who = {"email": session.subject} if kind == CLIENT else {"worker_id": session.subject}
    body: dict[str, Any] = {
        "ok": True,
        "org_id": session.org_id,
        **who,
        "expires_at": session.expires_at.ToJsonString(),
    }
    if wants_json:
        body["session_token"] = redeemed.session_token
    response = ORJSONResponse(body, headers=NO_STORE)
    cookie = CLIENT_COOKIE if kind == CLIENT else WORKER_COOKIE
    set_session_cookie(settings, response, cookie, redeemed.session_token, session.expires_at.seconds)
    return response


async def logout(request: Request, iam: IamStub, settings: GatewaySettings, cookie: str) -> Response:
    token, from_cookie = credential_of(request, cookie)
    if from_cookie and token:
        check_same_origin(request, settings)
    if not token:
        raise ProblemError(
            401, "unauthenticated", "a portal session is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if len(token) > MAX_TOKEN_LENGTH:
        raise ProblemError(401, "invalid_portal_session", "the portal session is invalid or expired")
    await iam.RevokePortalSession(iam_pb2.RevokePortalSessionRequest(session_token=token))
    response = Response(status_code=204, headers=NO_STORE)
    clear_session_cookie(settings, response, cookie)
    return response


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
    response_class=HTMLResponse,
    summary="Follow the magic link: a page that asks to confirm the sign-in (it signs nobody in)",
    description="Checks the link without using it. The page's button POSTs it to /client/login/confirm.",
    dependencies=[PORTAL],
)
async def client_login_callback(token: Token, iam: Iam) -> HTMLResponse:
    found = await iam.VerifyClientPortalToken(iam_pb2.VerifyClientPortalTokenRequest(token=token))
    if not found.email:  # such a link opens no session (booking scopes a client by email)
        raise ProblemError(401, "invalid_portal_token", "this portal link does not name a client email")
    return confirm_page(token, f"You are signing in to your bookings as {found.email}.")


@router.post(
    "/client/login/confirm",
    response_model=ClientSignedIn,
    summary="Use a magic link (once): opens a portal session, sets the client_session cookie",
    description=CONFIRM_DESCRIPTION,
    dependencies=[PORTAL, OPEN_IN_READ_ONLY],
    openapi_extra=CONFIRM_BODY,
    responses=CONFIRM_RESPONSES,
)
async def client_login_confirm(request: Request, iam: Iam, settings: Settings) -> ORJSONResponse:
    return await confirm(request, iam, settings, CLIENT)


@router.post(
    "/client/logout",
    status_code=204,
    summary="End the client's portal session",
    description=CLIENT_AUTH,
    dependencies=[PORTAL, OPEN_IN_READ_ONLY],
)
async def client_logout(
    request: Request,
    iam: Iam,
    settings: Settings,
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> Response:
    return await logout(request, iam, settings, CLIENT_COOKIE)


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


@router.post(
    "/v1/admin/workers/{worker_id}/portal/revoke",
    response_model=WorkerPortalRevoked,
    summary="End a worker's portal sessions and revoke their unused links (dispatcher and up)",
    description=(
        "For a lost phone or a shared device: the worker stays active and a new link signs them in "
        "again. Another org's or an unknown worker is 404. Audited."
    ),
    dependencies=[ADMIN],
)
async def revoke_worker_portal_access(
    worker_id: Id,
    booking: Booking,
    iam: Iam,
    principal: Principal = Depends(require_roles(*DISPATCH)),
) -> WorkerPortalRevoked:
    # An inactive worker is no reason to refuse: their access may still be ending (booking's event).
    await _check_worker(booking, worker_id, active_only=False)
    revoked = await iam.RevokeWorkerPortalAccess(
        iam_pb2.RevokeWorkerPortalAccessRequest(worker_id=str(uuid.UUID(worker_id)))
    )
    return WorkerPortalRevoked(revoked_sessions=revoked.revoked_sessions, revoked_links=revoked.revoked_links)


async def _check_worker(booking: BookingStub, worker_id: str, *, active_only: bool = True) -> None:
    """IAM signs (and revokes) whatever id it is given; only booking knows the org's workers, so ask
    it first. Unknown and other orgs' workers answer as booking's own worker routes do (404)."""
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
        raise ProblemError(404, "worker_not_found", "worker not found")
    if active_only and not worker.active:
        raise ProblemError(409, "worker_inactive", "this worker is inactive")


@router.get(
    "/worker/login/callback",
    response_class=HTMLResponse,
    summary="Follow the worker link: a page that asks to confirm the sign-in (it signs nobody in)",
    description="Checks the link without using it. The page's button POSTs it to /worker/login/confirm.",
    dependencies=[PORTAL],
)
async def worker_login_callback(token: Token, iam: Iam) -> HTMLResponse:
    await iam.VerifyWorkerPortalToken(iam_pb2.VerifyWorkerPortalTokenRequest(token=token))
    return confirm_page(token, "You are signing in to your jobs.")


@router.post(
    "/worker/login/confirm",
    response_model=WorkerSignedIn,
    summary="Use a worker link (once): opens a portal session, sets the worker_session cookie",
    description=CONFIRM_DESCRIPTION,
    dependencies=[PORTAL, OPEN_IN_READ_ONLY],
    openapi_extra=CONFIRM_BODY,
    responses=CONFIRM_RESPONSES,
)
async def worker_login_confirm(request: Request, iam: Iam, settings: Settings) -> ORJSONResponse:
    return await confirm(request, iam, settings, WORKER)


@router.post(
    "/worker/logout",
    status_code=204,
    summary="End the worker's portal session",
    description=WORKER_AUTH,
    dependencies=[PORTAL, OPEN_IN_READ_ONLY],
)
async def worker_logout(
    request: Request,
    iam: Iam,
    settings: Settings,
    _bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> Response:
    return await logout(request, iam, settings, WORKER_COOKIE)


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
