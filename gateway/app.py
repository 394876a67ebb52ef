"""The gateway application: the edge middleware, the routes, and the clients built at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import ORJSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.captcha import Captcha
from gateway.clients import build_backends
from gateway.middleware import (
    AdminAllowlistMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    CallContextMiddleware,
    ClientIpMiddleware,
    MetricsMiddleware,
    RateLimitMiddleware,
    ReadOnlyMiddleware,
    RequestIdMiddleware,
    RouteAccessMiddleware,
    limiter_storage,
)
from gateway.principal import request_id_of
from gateway.problems import ProblemError, problem_response
from gateway.revocations import RevokedSessions
from gateway.routes import (
    accounting,
    admin,
    analytics,
    auth,
    billing,
    bookings,
    data_protection,
    finance,
    health,
    iam_users,
    insights,
    integrations,
    jobs,
    notifications,
    outbox,
    photo_links,
    photo_review,
    photos,
    portal,
    pricing,
    public,
    scheduling,
    subscription,
    timeline,
    worker_photos,
)
from gateway.schemas import Problem
from gateway.settings import GatewaySettings
from libs.common import tracing
from libs.common.bus import EventBus
from libs.common.logs import configure_logging, get_logger

log = get_logger(__name__)

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}, "description": description}
    for status, description in {
        400: "Malformed request",
        401: "Missing, invalid or revoked credentials; `mfa_required`",
        403: "Role, org or IP allowlist refuses it",
        404: "No such resource in the caller's org (another org's ids are not found either)",
        409: "Conflict, or ADMIN_READ_ONLY (`read_only`)",
        413: "Body too large",
        422: "Invalid input, with `errors`",
        429: "Rate limited (Retry-After)",
        503: "A service is unavailable",
    }.items()
}


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level)
    tracing.configure("gateway")  # before the channels are made (lifespan)
    bus = EventBus(
        settings.nats_url, name="cws-gateway", user=settings.nats_user, password=settings.nats_password
    )
    revoked = RevokedSessions(bus, settings.auth_access_token_ttl_minutes * 60)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Channels and connections are made here, inside the running loop, once.
        app.state.backends = build_backends(settings)
        app.state.http = httpx.AsyncClient(timeout=5)
        app.state.captcha = Captcha(settings, app.state.http)
        tasks = [
            asyncio.create_task(bus.connect(), name="nats-connect"),
            asyncio.create_task(revoked.run(), name="revocations"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await bus.close()
            await app.state.backends.close()
            await app.state.http.aclose()
            tracing.shutdown()

    app = FastAPI(
        title="CleanWithSnapshot API",
        version="1.0.0",
        description="The public door of the CleanWithSnapshot suite. Errors are RFC 9457 Problem+JSON.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        responses=PROBLEM_RESPONSES,
    )
    app.state.settings = settings
    app.state.bus = bus
    app.state.revoked = revoked
    for router in (
        health.router,
        auth.router,
        iam_users.router,
        admin.router,
        public.router,
        bookings.router,
        scheduling.router,
        pricing.router,
        portal.router,
        insights.router,
        outbox.router,
        notifications.router,
        jobs.router,
        integrations.router,
        billing.router,
        accounting.router,
        finance.router,
        subscription.router,
        photos.router,
        photo_links.router,
        photo_review.router,
        worker_photos.router,
        timeline.router,
        analytics.router,
        data_protection.router,
    ):
        app.include_router(router)
    _install_error_handlers(app)

    # Added innermost first; requests pass them in the reverse order. The call context goes last,
    # once authentication and break-glass have settled who the request's gRPC calls act as.
    app.add_middleware(CallContextMiddleware)
    app.add_middleware(ReadOnlyMiddleware, settings=settings)
    app.add_middleware(AuthMiddleware, settings=settings, revoked=revoked)
    app.add_middleware(AdminAllowlistMiddleware, settings=settings)
    app.add_middleware(RouteAccessMiddleware, router=app.router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        streamed=[
            (path, settings.order_photo_max_bytes + photos.ENVELOPE_BYTES)
            for path in (*photos.UPLOAD_PATHS, *worker_photos.UPLOAD_PATHS)
        ],
    )
    app.add_middleware(RateLimitMiddleware, settings=settings, storage=limiter_storage(settings.redis_url))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "X-Break-Glass-Token",
                "Idempotency-Key",
            ],
            expose_headers=["X-Request-ID", "RateLimit", "RateLimit-Policy", "Retry-After"],
        )
    app.add_middleware(ClientIpMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware)
    if tracing.enabled():
        from gateway.middleware.tracing import TracingMiddleware  # imports the API: only when on

        app.add_middleware(TracingMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def on_problem(request: Request, error: ProblemError) -> Response:
        return problem_response(
            error.status,
            error.code,
            error.detail,
            request_id=request_id_of(request),
            instance=request.url.path,
            errors=error.errors,
            headers=error.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError) -> Response:
        errors = error.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(
                400,
                "malformed_json",
                "the request body is not valid JSON",
                request_id=request_id_of(request),
                instance=request.url.path,
            )
        fields = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                "message": e.get("msg", ""),
            }
            for e in errors
        ]
        return problem_response(
            422,
            "validation_error",
            "the request is invalid; see errors",
            request_id=request_id_of(request),
            instance=request.url.path,
            errors=fields,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "error")
        return problem_response(
            error.status_code,
            code,
            str(error.detail),
            request_id=request_id_of(request),
            instance=request.url.path,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(
            500,
            "internal_error",
            "an unexpected error occurred; it has been logged",
            request_id=request_id_of(request),
            instance=request.url.path,
        )
