"""Tracing's own rules, with the SDK's in-memory exporter: traces start at entry points, children
follow their parent (a stored traceparent included), every span gets the log context's request id;
and with no endpoint set, a process loads no SDK at all (the cross-process tree is
tests/test_tracing.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from libs.common.tracing import REQUEST_ID_ATTRIBUTE, endpoint_configured
from libs.common.tracing_sdk import EntrySpanSampler, RequestIdProcessor


@pytest.fixture
def traced() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=EntrySpanSampler.from_environ({}))
    provider.add_span_processor(RequestIdProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def test_a_client_span_with_no_parent_starts_no_trace(traced: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    with tracer.start_as_current_span("SELECT cws", kind=SpanKind.CLIENT) as stray:
        assert not stray.is_recording()  # a background loop's SQL: dropped
    with (
        tracer.start_as_current_span("POST /v1/leads", kind=SpanKind.SERVER),
        tracer.start_as_current_span("SELECT cws", kind=SpanKind.CLIENT),
    ):
        pass
    assert [(s.name, s.kind) for s in exporter.get_finished_spans()] == [
        ("SELECT cws", SpanKind.CLIENT),
        ("POST /v1/leads", SpanKind.SERVER),
    ]


def test_a_stored_traceparent_continues_its_trace(traced: tuple[Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    with tracer.start_as_current_span("confirm", kind=SpanKind.SERVER) as request:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # what the outbox row keeps
    later = propagate.extract({"traceparent": carrier["traceparent"]})
    # The relay's publish, a producer and a client span with that parent: kept, in the same trace.
    with (
        tracer.start_as_current_span("publish", context=later, kind=SpanKind.PRODUCER),
        tracer.start_as_current_span("deliver", kind=SpanKind.CLIENT),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"confirm", "publish", "deliver"}
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert spans["publish"].parent is not None
    assert spans["publish"].parent.span_id == request.get_span_context().span_id
    assert spans["deliver"].parent is not None
    assert spans["deliver"].parent.span_id == spans["publish"].context.span_id


def test_every_span_gets_the_request_id_of_the_log_context(
    traced: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = traced
    with (
        structlog.contextvars.bound_contextvars(request_id="req-123"),
        tracer.start_as_current_span("served", kind=SpanKind.SERVER),
        tracer.start_as_current_span("sql", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("no request", kind=SpanKind.CONSUMER):
        pass
    found = {s.name: (s.attributes or {}).get(REQUEST_ID_ATTRIBUTE) for s in exporter.get_finished_spans()}
    assert found == {"sql": "req-123", "served": "req-123", "no request": None}


@pytest.mark.parametrize(("ratio", "recorded"), [("0", False), ("1", True), ("junk", True), ("", True)])
def test_the_sample_ratio_comes_from_the_standard_setting(ratio: str, recorded: bool) -> None:
    provider = TracerProvider(sampler=EntrySpanSampler.from_environ({"OTEL_TRACES_SAMPLER_ARG": ratio}))
    with provider.get_tracer("t").start_as_current_span("request", kind=SpanKind.SERVER) as span:
        assert span.is_recording() is recorded


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_tracing_is_on_only_with_an_endpoint(environ: dict[str, str], on: bool) -> None:
    assert endpoint_configured(environ) is on


def test_off_no_process_loads_the_sdk_or_the_api() -> None:
    """The gateway and every service's modules, imported and set up with tracing off, load nothing
    of OpenTelemetry: the cost of tracing when off is the boolean test in each helper."""
    code = (
        "import sys, os\n"
        "os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None)\n"
        "import gateway.app, libs.common.grpc_server, services.notify.delivery.loop\n"
        "from libs.common import tracing\n"
        "assert tracing.configure('test') is False\n"
        "assert tracing.grpc_client_interceptors() == () and tracing.current_traceparent() is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')"
        " or m.startswith('opentelemetry.instrumentation'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "APP_ENV": "test"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
