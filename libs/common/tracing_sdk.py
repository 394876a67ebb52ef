"""The SDK parts of tracing (sampler, request-id processor). Imported only when tracing is on, so a
process without an OTLP endpoint never loads the SDK (libs/common/tracing.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from libs.common.tracing import REQUEST_ID_ATTRIBUTE, request_id_of_current_log_context


class _EntryPointRoots(Sampler):
    """For spans with no parent: a client span (a background loop's SQL, a scheduled gRPC call) is
    dropped, so traces start where work enters the suite; any other is sampled at `ratio`."""

    def __init__(self, ratio: float) -> None:
        self.ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self.ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"EntryPointRoots{{{self.ratio.get_description()}}}"


class EntrySpanSampler(ParentBased):
    """Children follow their parent; roots as `_EntryPointRoots` decides."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EntrySpanSampler:
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            ratio = min(max(float(raw), 0.0), 1.0) if raw else 1.0
        except ValueError:
            ratio = 1.0
        return cls(root=_EntryPointRoots(ratio))


class RequestIdProcessor(SpanProcessor):
    """Puts the request id of the log context on every span as it starts: the gateway binds it per
    request, a service per call (from the signed context), a consumer per event (from its headers)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        request_id = request_id_of_current_log_context()
        if request_id:
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
