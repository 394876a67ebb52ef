"""A real OTLP/HTTP trace receiver that keeps what it is sent: the tracing test's stand-in for a
collector (Jaeger, Tempo, the OpenTelemetry Collector), at its network boundary.

The suite's processes export with OpenTelemetry's own OTLP/HTTP exporter (protobuf, POST /v1/traces);
this decodes each request with the OTLP protobuf messages and keeps one `ReceivedSpan` per span.
`python -m tools.otlp_sink --port 4318` runs it alone and prints one line per span, for a look at
what a process exports without installing a collector.
"""

from __future__ import annotations

import argparse
import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tools.devstack import free_port

# opentelemetry.proto.trace.v1.Span.SpanKind, by number.
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int

    def __str__(self) -> str:
        return f"{self.service} {self.kind} {self.name!r} {self.span_id}<-{self.parent_span_id or 'root'}"


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status_code=span.status.code,
                    )
                )
    return spans


@dataclass
class OtlpSink:
    port: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    on_span: Callable[[ReceivedSpan], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpSink:
        self.port = self.port or free_port()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404, "only traces are received here")
                    return
                received = decode(body)
                with sink.lock:
                    sink.spans.extend(received)
                if sink.on_span is not None:
                    for span in received:
                        sink.on_span(span)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    sink = OtlpSink(port=args.port, on_span=lambda span: print(span, span.attributes, flush=True)).start()
    print(f"receiving OTLP/HTTP traces on {sink.url}/v1/traces", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
