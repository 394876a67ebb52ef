"""Everything a service process needs around its servicer: the grpc.aio server with reflection and
the standard health service, interceptors (signed context, typed errors, metrics, logs), the ops
servicer the gateway's /readyz asks, a small HTTP port for /healthz, /readyz and /metrics, the
outbox relay, readiness that flips health to SERVING only while database, migrations and NATS are
good, and a graceful stop that turns health NOT_SERVING before draining."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
import uvicorn
import uvloop
from cws.common.v1 import ops_pb2, ops_pb2_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from libs.common import context as request_context
from libs.common import status as rich_status
from libs.common import tracing
from libs.common.bus import EventBus, stream_name
from libs.common.call_signing import CallVerifier, body_digest
from libs.common.db import Database, OutboxTables, unavailable_if_database_away
from libs.common.errors import InvalidArgument, ServiceError
from libs.common.event_types import Broadcast, Consumer
from libs.common.events import DurableConsumer, OutboxRelay, prune_event_tables, run_broadcast
from libs.common.grpc_client import STREAM_BODY
from libs.common.logs import configure_logging, get_logger
from libs.common.readiness import Readiness
from libs.common.roles import STAFF
from libs.common.settings import CommonSettings
from libs.common.text_input import nul_violations

log = get_logger(__name__)

GRPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed", ["service", "method", "code"])
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "RPC handling time",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Probes carry no context: health, reflection and readiness. Everything else, feature flags included,
# needs the gateway's (or a suite service's) signature.
UNSIGNED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.", "/cws.common.v1.OpsService/GetReadiness")
# What a client-streaming call is signed over (libs/common/grpc_client.py STREAM_BODY).
STREAM_DIGEST = body_digest(STREAM_BODY)


def _digesting(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], tuple[bytes, Any]]:
    """The handler's deserializer, also handing on the SHA-256 of the exact bytes received: the
    signature covers that digest, so the body checked is the body the servicer gets."""

    def deserialize(data: bytes) -> tuple[bytes, Any]:
        return body_digest(data), deserializer(data) if deserializer is not None else data

    return deserialize


def _refused(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        log.error("rpc_shape_not_served", method=method)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this call's shape is not served")

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        refuse, handler.request_deserializer, handler.response_serializer
    )


class ContextInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the signed call (caller, method, body, age, nonce, principal: call_signing.py), makes
    its context current, maps typed errors to status codes with rich details, hides unexpected errors
    behind INTERNAL, and records metrics and logs."""

    def __init__(self, service: str, verifier: CallVerifier) -> None:
        self.service = service
        self.verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return self._unary_unary(handler, details)
        if handler.stream_unary is not None:
            return self._stream_unary(handler, details)
        if details.method.startswith(UNSIGNED_PREFIXES):
            return handler  # health's Watch and reflection stream, and carry no context
        if handler.unary_stream is not None:
            return self._unary_stream(handler, details)
        # No bidirectional call exists: one added later is refused rather than served unsigned, until
        # this interceptor learns its shape.
        return _refused(handler, details.method)

    def _unary_unary(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        inner: Any = handler.unary_unary  # an aio handler: a coroutine function (the stubs say sync)

        async def wrapper(received: tuple[bytes, Any], context: grpc.aio.ServicerContext) -> Any:
            digest, request = received
            return await self._serve(details, context, digest, request, lambda: inner(request, context))

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=_digesting(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _stream_unary(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """A client-streaming call: verified before its first message is read, over the digest of
        STREAM_BODY (the client signs it so; libs/common/grpc_client.py), then served as usual."""
        inner: Any = handler.stream_unary

        async def wrapper(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self._serve(details, context, STREAM_DIGEST, None, lambda: inner(requests, context))

        return grpc.stream_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary_stream(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        """A server-streaming call (media's OpenPhotoLink): one request, verified over its digest as
        a unary call is, before the servicer's generator runs; its messages are written with
        `context.write`, so the context, error mapping and metrics wrap the whole stream."""
        inner: Any = handler.unary_stream  # an async generator function

        async def wrapper(received: tuple[bytes, Any], context: grpc.aio.ServicerContext) -> None:
            digest, request = received

            async def drive() -> None:
                async for message in inner(request, context):
                    await context.write(message)

            await self._serve(details, context, digest, request, drive)

        return grpc.unary_stream_rpc_method_handler(
            wrapper,
            request_deserializer=_digesting(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    async def _serve(
        self,
        details: grpc.HandlerCallDetails,
        context: grpc.aio.ServicerContext,
        digest: bytes,
        request: Any,
        call: Callable[[], Awaitable[Any]],
    ) -> Any:
        method = details.method
        metadata = details.invocation_metadata
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        token = None
        call_token = request_context.set_call(method, request)
        try:
            if not method.startswith(UNSIGNED_PREFIXES):
                try:
                    ctx = self.verifier.verify(metadata, method, digest)
                except ServiceError as refused:
                    # A forged, replayed or misrouted internal call: worth an operator's look.
                    log.warning(
                        "internal_call_refused", method=method, reason=refused.code, peer=context.peer()
                    )
                    raise
                token = request_context.set_current(ctx)
                request_context.refuse_until_password_changed(ctx, method)
                structlog.contextvars.bind_contextvars(
                    request_id=ctx.request_id, org_id=ctx.org_id, principal=ctx.principal_id
                )
            if request is not None and (problems := nul_violations(request)):
                raise InvalidArgument.of(problems)
            return await unavailable_if_database_away(call())
        except ServiceError as error:
            code = error.grpc_code
            await context.abort(error.grpc_code, error.detail, trailing_metadata=rich_status.encode(error))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            code = context.code() or grpc.StatusCode.CANCELLED  # type: ignore[assignment]
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("rpc_failed", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            request_context.reset_call(call_token)
            if token is not None:
                request_context.reset_current(token)
                structlog.contextvars.unbind_contextvars("request_id", "org_id", "principal")
            GRPC_HANDLED.labels(self.service, method, code.name).inc()
            GRPC_SECONDS.labels(self.service, method).observe(time.perf_counter() - started)


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    def __init__(self, service: str, readiness: Readiness, settings: CommonSettings, db: Database) -> None:
        self.service = service
        self.readiness = readiness
        self.settings = settings
        self.db = db

    async def PruneEventTables(
        self, request: ops_pb2.PruneEventTablesRequest, context: Any
    ) -> ops_pb2.PruneEventTablesResponse:
        request_context.require_service()
        pruned = await prune_event_tables(
            self.db, request.retention_days or self.settings.event_retention_days
        )
        return ops_pb2.PruneEventTablesResponse(
            outbox_deleted=pruned.outbox, inbox_deleted=pruned.inbox, dead_letters_deleted=pruned.dead_letters
        )

    async def GetFeatureFlags(
        self, request: ops_pb2.GetFeatureFlagsRequest, context: Any
    ) -> ops_pb2.GetFeatureFlagsResponse:
        request_context.require_role(*STAFF)
        flags = struct_pb2.Struct()
        flags.update(self.settings.feature_flags())
        return ops_pb2.GetFeatureFlagsResponse(service=self.service, flags=flags)

    async def GetReadiness(
        self, request: ops_pb2.GetReadinessRequest, context: Any
    ) -> ops_pb2.GetReadinessResponse:
        checks = await self.readiness.run()
        response = ops_pb2.GetReadinessResponse(service=self.service, ok=all(c.ok for c in checks))
        for check in checks:
            detail = struct_pb2.Struct()
            detail.update(check.detail)
            response.checks.append(
                ops_pb2.ReadinessCheck(name=check.name, ok=check.ok, ms=check.ms, detail=detail)
            )
        return response


@dataclass
class ServiceApp:
    """One service process. `register` adds the servicers; `background` coroutines (consumers,
    sweepers) run beside the server and are cancelled on stop."""

    name: str
    settings: CommonSettings
    schema: str
    tables: OutboxTables
    migrations_dir: Path
    grpc_port: int
    http_port: int
    register: Callable[[grpc.aio.Server, ServiceApp], None]
    background: list[Callable[[ServiceApp], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # What the service consumes (its events.py). A callable is called after `register`, for handlers
    # that need what register built (notify's peers).
    consumers: Sequence[Consumer[Any]] | Callable[[ServiceApp], Sequence[Consumer[Any]]] = ()
    broadcasts: Sequence[Broadcast[Any]] | Callable[[ServiceApp], Sequence[Broadcast[Any]]] = ()
    service_names: tuple[str, ...] = ()
    # Raise cws.<service>.audit.recorded for every admin write (iam audits its own writes itself).
    audit_admin_writes: bool = False

    db: Database = field(init=False)
    bus: EventBus = field(init=False)
    readiness: Readiness = field(init=False)
    consumer_specs: Sequence[Consumer[Any]] = field(init=False, default=())
    health: health.aio.HealthServicer = field(init=False)  # type: ignore[name-defined]
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    async def run(self) -> None:
        configure_logging(self.name, self.settings.log_level)
        tracing.configure(self.name)  # before the engine, the channels and the server exist
        self.db = Database(
            self.settings.database_url,
            schema=self.schema,
            tables=self.tables,
            pool_size=self.settings.database_pool_size,
            max_overflow=self.settings.database_max_overflow,
            pool_timeout=self.settings.database_pool_timeout_seconds,
            statement_timeout_ms=self.settings.database_statement_timeout_ms,
            audit_admin_writes=self.audit_admin_writes,
        )
        self.bus = EventBus(
            self.settings.nats_url,
            name=f"cws-{self.name}",
            user=self.settings.nats_user,
            password=self.settings.nats_password,
        )
        self.readiness = Readiness(
            service=self.name, db=self.db, bus=self.bus, migrations_dir=self.migrations_dir
        )

        server = grpc.aio.server(
            interceptors=[
                ContextInterceptor(
                    self.name,
                    CallVerifier(
                        self.settings.trusted_callers, self.settings.internal_context_max_age_seconds
                    ),
                ),
                # Inside the context check: the call's span starts with its request id bound.
                *tracing.grpc_server_interceptors(),
            ],
            options=[("grpc.so_reuseport", 0)],
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        ops_pb2_grpc.add_OpsServiceServicer_to_server(
            OpsServicer(self.name, self.readiness, self.settings, self.db), server
        )
        self.register(server, self)
        reflection.enable_server_reflection(
            (*self.service_names, "cws.common.v1.OpsService", health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
        )
        await self._set_health(False)
        server.add_insecure_port(f"0.0.0.0:{self.grpc_port}")
        await server.start()

        http = uvicorn.Server(
            uvicorn.Config(
                self._ops_http(),
                host="0.0.0.0",
                port=self.http_port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        self._spawn(self.bus.connect(), "nats-connect")
        self._spawn(self._await_stream(), "await-stream")
        self._spawn(OutboxRelay(self.db, self.bus, self.name).run(), "outbox-relay")
        self._spawn(self._readiness_loop(), "readiness")
        self._spawn(http.serve(), "ops-http")
        self.consumer_specs = self.consumers(self) if callable(self.consumers) else self.consumers
        for spec in self.consumer_specs:
            self._spawn(DurableConsumer(spec, db=self.db, bus=self.bus, service=self.name).run(), spec.name)
        for broadcast in self.broadcasts(self) if callable(self.broadcasts) else self.broadcasts:
            self._spawn(run_broadcast(self.bus, broadcast), broadcast.name)
        for make in self.background:
            self._spawn(make(self), make.__name__)
        log.info("service_started", grpc_port=self.grpc_port, http_port=self.http_port)

        await stop.wait()
        log.info("service_stopping")
        await self._set_health(False)
        await server.stop(grace=5)
        http.should_exit = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        await self.db.dispose()
        tracing.shutdown()
        log.info("service_stopped")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _await_stream(self) -> None:
        """Say, until it exists, that this service's stream is missing. The NATS admin creates it
        (libs/common/streams.py); meanwhile the outbox keeps the events and publishes them later."""
        await self.bus.wait_connected()
        while True:
            try:
                await self.bus.js.stream_info(stream_name(self.name))
                return
            except Exception as exc:  # missing, or JetStream not ready yet
                log.warning(
                    "stream_missing",
                    stream=stream_name(self.name),
                    error=str(exc),
                    hint="run python -m libs.common.streams as the NATS admin",
                )
                await asyncio.sleep(5)

    async def _readiness_loop(self) -> None:
        while True:
            checks = await self.readiness.run()
            await self._set_health(all(c.ok for c in checks))
            await asyncio.sleep(self.settings.readiness_interval_seconds)

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    def _ops_http(self) -> Starlette:
        async def healthz(_: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(_: Request) -> Response:
            checks = await self.readiness.run()
            ok = all(c.ok for c in checks)
            body = {
                "ok": ok,
                "service": self.name,
                "checks": [{"name": c.name, "ok": c.ok, "ms": c.ms, "detail": c.detail} for c in checks],
            }
            return JSONResponse(body, status_code=200 if ok else 503)

        async def metrics(request: Request) -> Response:
            token = self.settings.metrics_token
            if token and request.headers.get("authorization", "") != f"Bearer {token}":
                return JSONResponse({"detail": "metrics token required"}, status_code=401)
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        return Starlette(
            routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
        )


def main(app: ServiceApp) -> None:
    # uvloop: the gRPC server's callbacks are a large share of a service's CPU per request.
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(app.run())
