"""OpenTelemetry tracing: one trace per request across every hop, off unless an OTLP endpoint is set.

The hops: the gateway's HTTP request (gateway/middleware/tracing.py) → the gRPC call (OpenTelemetry's
aio interceptors; the trace context rides in the call's metadata) → the service's handler and its SQL
(the SQLAlchemy instrumentation) → the event it raised, whose context is stored in the outbox row
beside it (`trace_context`), since the relay publishes later and from another task → the publish,
with the context in the NATS message's `traceparent` header → the consumer → the notify outbox row it
wrote (again `trace_context`) → the delivery of the email or webhook. Every span carries the request id
(`cws.request_id`) from the log context, so a trace and the log lines of one request find each other.

Off (no `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_SDK_DISABLED=true`): no SDK is imported, no interceptor or engine hook is installed, and every
helper here returns at its first line, so a process pays one boolean test per hop.
On: spans are batched (`OTEL_BSP_*`) and exported over OTLP/HTTP (protobuf) to the endpoint, with the
standard `OTEL_EXPORTER_OTLP_*` settings (headers, timeout). Root spans are sampled at
`OTEL_TRACES_SAMPLER_ARG` (default 1.0), children follow their parent. A client span with no parent (a
background loop's SQL, a scheduled call) starts no trace of its own: traces begin at an entry point.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import structlog

if TYPE_CHECKING:  # the API itself is imported only once tracing is on
    from opentelemetry.trace import Span

Kind = Literal["internal", "server", "client", "producer", "consumer"]

REQUEST_ID_ATTRIBUTE = "cws.request_id"
TRACEPARENT = "traceparent"
# Probes and ops calls would each start a trace every few seconds and bury the requests.
UNTRACED_GRPC_SERVICES = ("grpc.health.v1.Health", "cws.common.v1.OpsService", "grpc.reflection")

_enabled = False


def enabled() -> bool:
    return _enabled


def endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def configure(process: str) -> bool:
    """Install the SDK for this process (`cws-<process>` as service.name) when an endpoint is set.
    Call it once at start-up, before the database engine and the gRPC channels and server exist."""
    global _enabled
    if _enabled or not endpoint_configured():
        return _enabled
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from libs.common.tracing_sdk import EntrySpanSampler, RequestIdProcessor

    provider = TracerProvider(
        # Explicit attributes win over OTEL_SERVICE_NAME, which a shared .env would give every process.
        resource=Resource.create({"service.name": f"cws-{process}", "service.namespace": "cws"}),
        sampler=EntrySpanSampler.from_environ(os.environ),
    )
    provider.add_span_processor(RequestIdProcessor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # Engines created from now on (libs/common/db.py looks create_async_engine up at call time) get
    # a span per statement; no sqlcommenter, so statements stay what pg_stat_statements groups.
    # The instrumentation declares SQLAlchemy < 2.1 and would otherwise do nothing on our 2.1: it
    # only listens to engine events SQLAlchemy 2.1 still has, and tests/test_tracing.py sees its spans.
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _enabled = True
    return True


def shutdown() -> None:
    """Export what is still batched (a stopping process would otherwise lose its last spans)."""
    if not _enabled:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if flush is not None:
        flush()


def grpc_client_interceptors() -> Sequence[Any]:
    if not _enabled:
        return ()
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def grpc_server_interceptors() -> Sequence[Any]:
    if not _enabled:
        return ()
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix

    untraced = any_of(*(service_prefix(name) for name in UNTRACED_GRPC_SERVICES))
    return [aio_server_interceptor(filter_=negate(untraced))]


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent, stored beside work another task does later (an outbox
    row), so that work joins this trace. None when tracing is off or no span is current."""
    if not _enabled:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def span(
    name: str,
    *,
    kind: Kind = "internal",
    parent: str | None = None,
    attributes: Mapping[str, str | int | bool] | None = None,
) -> Iterator[Span | None]:
    """A span around a block, current inside it, as a child of `parent` (a stored traceparent) when
    given, else of the current span. Yields None when tracing is off."""
    if not _enabled:
        yield None
        return
    from opentelemetry import propagate, trace

    context = propagate.extract({TRACEPARENT: parent}) if parent else None
    tracer = trace.get_tracer("cws")
    span_kind = trace.SpanKind[kind.upper()]
    with tracer.start_as_current_span(
        name, context=context, kind=span_kind, attributes=attributes
    ) as current:
        yield current


def request_id_of_current_log_context() -> str:
    """The request id bound to the log context (structlog contextvars), '' when none is."""
    value = structlog.contextvars.get_contextvars().get("request_id", "")
    return value if isinstance(value, str) else ""
