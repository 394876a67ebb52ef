"""Tracing across every hop (issue 14), against the real processes: a booking confirmed through the
gateway is one trace, from the HTTP request down to the email the SMTP sink accepted, with the request
id on every span.

The processes are separate, so the SDK's in-memory exporter (which sees only its own process) cannot
gather the tree; each process exports with the real OTLP/HTTP exporter to `tools/otlp_sink.py`, a
receiver at the network boundary, as a collector would be. Booking and notify are run traced in
place of the session's (notify's consumers are durable: a second notify would share the event).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from conftest import notify_env
from libs.common.tracing import REQUEST_ID_ATTRIBUTE
from services.booking.tests.helpers import create_booking, slot
from tools.otlp_sink import OtlpSink, ReceivedSpan
from tools.processes import service_proc
from tools.testkit import eventually, owner


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink().start()
    yield sink
    sink.stop()


def traced(sink: OtlpSink) -> dict[str, str]:
    # Batches leave every 100 ms instead of every 5 s, so the test waits for the trace, not the timer.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.parent_span_id == parent.span_id]


def descendants(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    found, frontier = [], [parent]
    while frontier:
        below = [span for node in frontier for span in children(spans, node)]
        found.extend(below)
        frontier = below
    return found


def only(spans: list[ReceivedSpan], what: str) -> ReceivedSpan:
    assert len(spans) == 1, f"{what}: {[str(s) for s in spans]}"
    return spans[0]


def is_sql(span: ReceivedSpan) -> bool:
    return span.kind == "client" and any(key.startswith("db.") for key in span.attributes)


async def test_a_booking_confirmation_is_one_trace_down_to_the_email(
    stack, iam, booking, notify, gateways, smtp_sink, make_org, http, otlp_sink
):
    logs = stack.work_dir / "logs"
    booking_traced = service_proc(
        "booking", {**stack.env(), **traced(otlp_sink)}, logs, label="booking-traced"
    )
    await asyncio.to_thread(booking.stop)
    await asyncio.to_thread(notify.stop)
    notify_traced = service_proc(
        "notify",
        {**notify_env(stack, iam, booking_traced, smtp_sink), **traced(otlp_sink)},
        logs,
        label="notify-traced",
    )
    gateway = None
    try:
        await asyncio.gather(
            booking_traced.start().wait_ready_async(), notify_traced.start().wait_ready_async()
        )
        gateway = await asyncio.to_thread(
            gateways.get,
            BOOKING_GRPC_TARGET=booking_traced.target,
            NOTIFY_GRPC_TARGET=notify_traced.target,
            **traced(otlp_sink),
        )
        org = await make_org("Traced Cleaning")
        headers = await owner(http, gateway.url, org)
        recipient = f"traced-{secrets.token_hex(4)}@example.com"
        created = await create_booking(http, gateway.url, headers, starts_at=slot(50), client_email=recipient)

        request_id = f"trace-test-{secrets.token_hex(6)}"
        confirmed = await http.post(
            f"{gateway.url}/v1/admin/bookings/{created['id']}/confirm",
            headers={**headers, "X-Request-ID": request_id},
        )
        assert confirmed.status_code == 200, confirmed.text
        await smtp_sink.delivered(recipient, 1, 20)

        def roots() -> list[ReceivedSpan]:
            with otlp_sink.lock:
                return [
                    s
                    for s in otlp_sink.spans
                    if s.attributes.get(REQUEST_ID_ATTRIBUTE) == request_id and not s.parent_span_id
                ]

        await eventually(lambda: roots(), timeout=10, message="the request's root span")
        root = only(roots(), "one root span for the request")
        delivered = lambda: [s for s in otlp_sink.trace(root.trace_id) if s.name == "notify deliver email"]  # noqa: E731
        await eventually(delivered, timeout=15, message="the email's delivery span in the request's trace")
        await asyncio.sleep(0.5)  # the last batches of the other processes (100 ms schedule)
        spans = otlp_sink.trace(root.trace_id)
    finally:
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(notify_traced.stop)
        await asyncio.to_thread(booking_traced.stop)
        await asyncio.gather(booking.start().wait_ready_async(), notify.start().wait_ready_async())

    tree = "\n".join(str(s) for s in spans)
    # The gateway's request, the root.
    assert (root.service, root.kind, root.name) == (
        "cws-gateway",
        "server",
        "POST /v1/admin/bookings/{booking_id}/confirm",
    ), tree
    assert root.attributes["http.response.status_code"] == 200
    # → the gRPC call, as the gateway made it (under FastAPI's own endpoint span) and as booking
    # served it (the context travels in the call's metadata).
    call = only(
        [
            s
            for s in descendants(spans, root)
            if s.service == "cws-gateway" and s.kind == "client" and s.name.endswith("/TransitionBooking")
        ],
        f"the gateway's TransitionBooking call\n{tree}",
    )
    served = only(children(spans, call), f"booking serving the call\n{tree}")
    assert (served.service, served.kind) == ("cws-booking", "server"), tree
    # → the SQL booking ran for it.
    assert [s for s in children(spans, served) if is_sql(s) and s.service == "cws-booking"], tree
    # → the event, published by booking's relay later, in this trace (context kept in the outbox row).
    published = only(
        [s for s in children(spans, served) if s.name == "cws.booking.booking.confirmed publish"],
        f"the confirmed event's publish\n{tree}",
    )
    assert (published.service, published.kind) == ("cws-booking", "producer"), tree
    # → NATS → notify's consumer (context in the message's headers), and its SQL.
    consumed = only(
        [s for s in children(spans, published) if s.service == "cws-notify" and s.kind == "consumer"],
        f"notify consuming the event\n{tree}",
    )
    assert consumed.name == "cws.booking.booking.confirmed process", tree
    assert [s for s in children(spans, consumed) if is_sql(s)], tree
    # → the email it queued, sent by the delivery loop (context kept in the delivery outbox row).
    sent = only(
        [s for s in children(spans, consumed) if s.name == "notify deliver email"],
        f"the email's delivery\n{tree}",
    )
    assert [s for s in spans if s.name == "notify deliver email"] == [sent], tree  # sent once
    assert (sent.service, sent.kind, sent.attributes.get("cws.outcome")) == (
        "cws-notify",
        "client",
        "sent",
    ), tree

    # One trace, the request id on every span of it.
    assert {s.trace_id for s in spans} == {root.trace_id}
    missing = [str(s) for s in spans if s.attributes.get(REQUEST_ID_ATTRIBUTE) != request_id]
    assert not missing, "spans without the request id:\n" + "\n".join(missing)
