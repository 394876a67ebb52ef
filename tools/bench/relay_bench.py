"""Outbox relay throughput: events per second from one service's outbox to JetStream (issue 15).

Booking's own process relays (libs/common/events.py OutboxRelay, as it runs in production). The bench
waits until booking's outbox is idle, writes `BENCH_RELAY_EVENTS` (50,000) rows into
booking.event_outbox in one transaction and notifies, as a unit of work does, then times from that
commit until every row is marked published, which the relay does only once JetStream acknowledged
it. The subject (`cws.booking.bench.relayed`) is booking's to publish and nobody consumes it, so the
run sets off no other work; afterwards the stream is checked to hold exactly that many new messages.
CPU per event: booking's process and the Postgres backends of the run's database over the window
(the bench's own inserting and polling session excluded).

    python -m tools.bench.relay_bench [--events 50000] [--runs 2]

Standalone, it starts its own Postgres database and NATS (tools/bench/stack.py) and booking alone.
In `make bench` (tools/bench/__main__.py) it runs against the bench stack's booking.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from libs.common.bus import stream_name
from tools.bench import stack as bench_stack
from tools.bench.cpu import CpuMeter, Snapshot, process_cpu
from tools.bench.report import Row, verdict
from tools.processes import service_proc

SUBJECT = "cws.booking.bench.relayed"
TARGET_PER_SECOND = 5000.0
# About the size of a booking event's protobuf with its ids and times.
PAYLOAD = os.urandom(240)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class RelayResult:
    events: int
    seconds: float
    insert_seconds: float
    cpu_ms_per_event: dict[str, float]
    stream_messages: int
    other_cores_busy: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    def as_row_result(self) -> dict[str, Any]:
        nan = float("nan")
        return {
            "rps": self.rate,
            "p50_ms": nan,
            "p99_ms": nan,
            "ok": self.events,
            "errors": self.events - self.stream_messages if self.stream_messages < self.events else 0,
            "cpu_ms_per_request": self.cpu_ms_per_event,
        }


@dataclass
class RelayRows:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


async def _stream_messages(stack: bench_stack.Stack) -> int:
    client = await stack.nats.connect_as("admin")
    try:
        info = await client.jetstream().stream_info(stream_name("booking"))
        return int(info.state.messages)
    finally:
        await client.close()


def _pending(conn: psycopg.Connection[Any], run: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM booking.event_outbox WHERE published_at IS NULL AND request_id = %s", (run,)
    ).fetchone()
    return int(row[0]) if row else 0


def _wait_idle(conn: psycopg.Connection[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT count(*) FROM booking.event_outbox WHERE published_at IS NULL").fetchone()[0]:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise RuntimeError("booking's outbox did not drain before the relay bench")
        time.sleep(0.1)


def measure(stack: bench_stack.Stack, booking_pid: int, events: int, timeout: float = 300) -> RelayResult:
    """One run: `events` rows in one transaction, then the time until booking's relay published all."""
    run = f"bench-relay-{secrets.token_hex(4)}"
    pids = {"booking": booking_pid}
    if stack.nats.process is not None:
        pids["nats-server"] = stack.nats.process.pid
    meter = CpuMeter(pids, stack.admin_url, stack.db_name)
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        own_backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        _wait_idle(conn)
        messages_before = asyncio.run(_stream_messages(stack))
        before = meter.snapshot()
        own_before = process_cpu(own_backend) or 0.0
        inserting = time.perf_counter()
        with conn.transaction():
            # As UnitOfWork._flush_events writes them: created_at a microsecond apart, in order.
            conn.execute(
                "INSERT INTO booking.event_outbox (id, subject, payload, org_id, request_id, created_at) "
                "SELECT gen_random_uuid(), %s, %s, NULL, %s, clock_timestamp() + i * interval '1 microsecond' "
                "FROM generate_series(1, %s) AS i",
                (SUBJECT, PAYLOAD, run, events),
            )
            conn.execute("SELECT pg_notify('cws_outbox_booking', '')")
        committed = time.perf_counter()
        while _pending(conn, run):
            if time.perf_counter() - committed > timeout:
                raise RuntimeError(f"booking's relay left {_pending(conn, run)} of {events} rows unpublished")
            time.sleep(0.02)
        done = time.perf_counter()
        after = meter.snapshot()
        own_spent = (process_cpu(own_backend) or 0.0) - own_before
    messages = asyncio.run(_stream_messages(stack)) - messages_before
    seconds = done - committed
    cpu = _cpu(before, after, own_backend, own_spent)
    busy = (after.machine - before.machine) / max(done - inserting, 1e-9)
    return RelayResult(
        events=events,
        seconds=seconds,
        insert_seconds=committed - inserting,
        cpu_ms_per_event={k: v / events * 1000 for k, v in cpu.items()},
        stream_messages=messages,
        other_cores_busy=max(0.0, busy - sum(cpu.values()) / max(done - inserting, 1e-9)),
    )


def _cpu(before: Snapshot, after: Snapshot, own_backend: int, own_spent: float) -> dict[str, float]:
    named = {name: max(0.0, cpu - before.named.get(name, 0.0)) for name, cpu in after.named.items()}
    postgres = sum(max(0.0, cpu - before.backends.get(pid, 0.0)) for pid, cpu in after.backends.items())
    # The bench's own session inserted the rows and polled: not the relay's cost.
    postgres = max(0.0, postgres - own_spent) if own_backend in after.backends else postgres
    return {**named, "postgres": postgres}


def describe(result: RelayResult) -> str:
    cpu = " + ".join(f"{k} {v:.3f}" for k, v in result.cpu_ms_per_event.items())
    return (
        f"{result.events} events in {result.seconds:.2f} s = {result.rate:,.0f} events/s "
        f"(insert {result.insert_seconds:.2f} s, not counted); stream +{result.stream_messages} messages; "
        f"CPU ms/event: {cpu}; rest of machine ~{result.other_cores_busy:.2f} cores"
    )


def run(stack: bench_stack.Stack, events: int | None = None) -> RelayRows:
    """The `make bench` row, against the bench stack's booking process."""
    out = RelayRows()
    events = events or int(os.environ.get("BENCH_RELAY_EVENTS", "50000"))
    name = "outbox relay: events/s from one outbox to JetStream"
    target = f"≥ {TARGET_PER_SECOND:,.0f} events/s"
    if events <= 0:
        return out
    assert stack.booking and stack.booking.process
    try:
        log(f"relay: {events} outbox rows in booking's outbox ...")
        result = measure(stack, stack.booking.process.pid, events)
    except Exception as exc:
        log(f"relay failed: {exc}")
        out.failed = True
        out.results[name] = {"error": str(exc)}
        out.rows.append(Row(name, None, target=target, note=f"failed: {exc}"[:120]))
        return out
    log(f"relay: {describe(result)}")
    out.results[name] = {**result.as_row_result(), "seconds": result.seconds, "events": events}
    met = result.rate >= TARGET_PER_SECOND and result.stream_messages == events
    out.rows.append(Row(name, result.as_row_result(), target=f"{target}: {verdict(met)}"))
    out.notes.append(
        f"Outbox relay: {events:,} rows written to booking's outbox in one transaction, timed from its "
        f"commit until booking's relay had every one acknowledged by JetStream and marked published "
        f"({result.seconds:.2f} s); the stream gained {result.stream_messages:,} messages. CPU over that "
        "window: booking's process and this database's Postgres backends, per event (the table's "
        f"column); nats-server spent {result.cpu_ms_per_event.get('nats-server', 0.0):.3f} ms per event."
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_RELAY_EVENTS", "50000")))
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    bench_stack.install_signal_handlers()
    with contextlib.ExitStack() as exits:
        stack = bench_stack.start_infrastructure(exits)
        booking = service_proc("booking", stack.env(), stack.log_dir)
        booking.start()
        exits.callback(booking.stop, timeout=10)
        stack.booking = booking
        booking.wait_ready(90)
        assert booking.process is not None
        for index in range(args.runs):
            result = measure(stack, booking.process.pid, args.events)
            print(f"run {index + 1}: {describe(result)}", flush=True)


if __name__ == "__main__":
    main()
