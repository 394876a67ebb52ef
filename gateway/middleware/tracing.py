"""The request's server span, the root of its trace (installed only when tracing is on,
libs/common/tracing.py). Inside the request-id middleware, so the span carries the request id.

A `traceparent` sent by a caller is not continued: the gateway is the public door, and letting
anyone on the internet choose trace ids (or force sampling) is not its to give. The trace starts here.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.middleware.common import ASGIApp, Message, Receive, Scope, Send


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tracer = trace.get_tracer("cws.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method = scope["method"]
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # An empty context: no span of a previous request leaks in through a reused task.
        with self.tracer.start_as_current_span(
            method,
            context=otel_context.Context(),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as span:
            try:
                await self.app(scope, receive, capture)
            finally:
                # The route's template, never the raw path: paths carry tokens (photo links, portals).
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
