"""The notify rows of `make bench`: email throughput from a backlog, and the latency from a booking
confirmation at the gateway to the email accepted by a mail provider.

Both deliver over SMTP to tools.smtp_sink in its own process, which appends
"<accept time, epoch seconds> <recipient> <Message-ID>" per accepted recipient to a file the bench
reads as it grows (stack.start_sink). Notify starts only here, after the other scenarios.

1. Confirmation latency: first the machine's confirmation capacity, measured: pending bookings
   confirmed in a closed loop (16 connections, BENCH_CONFIRM_CAPACITY_SECONDS, 4), counted from the
   first confirmation to the last of their emails accepted by the sink. Then new pending bookings
   (each with its own client email) confirmed at the gateway in an open loop at half that capacity
   (or BENCH_CONFIRM_RATE per second, if set) for BENCH_CONFIRM_SECONDS (10) after 1 s of warm-up: a
   fixed rate would overload a slower machine and measure its queue instead of the pipeline. A confirmation's latency
   runs from the moment it was due (so a stalled pipeline cannot hide its queue) to the sink's
   acceptance of the email to its client, matched by recipient: gateway → booking → booking's
   outbox → NATS → notify's consumer → notify's outbox → SMTP. It runs first, on a steady outbox,
   so the after-effects of the backlog (10,000 freshly updated rows) are not in it.
2. Backlog: notify is stopped, BENCH_EMAILS pending email rows (10,000) for the bench org are
   written with one INSERT, as a restart after an outage would find them; then notify starts
   (EMAIL_MODE=smtp, OUTBOX_CONCURRENCY and the rest at their defaults). emails/s counts from the
   sink's first acceptance to its last, so the process start-up is not in it (the notes give the
   time from start to the last acceptance too). Server CPU per email is taken over the same window.
3. SMTP floor (tools/bench/smtp_floor.py): with notify stopped, a bare aiosmtplib client sends 3,000
   mails to the same sink over 16 kept-open connections: the rate and CPU of the exchange alone.

A missed target is reported, never a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tools.bench import smtp_floor
from tools.bench import stack as bench_stack
from tools.bench.cpu import CpuMeter, Snapshot
from tools.bench.load import percentile
from tools.bench.report import Row, verdict

BACKLOG_TARGET_PER_SECOND = 1500.0  # issue 15
CONFIRM_P99_MS = 100.0
# Enough for a closed loop of capacity_seconds on a fast machine; the loop stops when they run out.
CAPACITY_BOOKINGS = 600
CONFIRM_WARMUP_SECONDS = 1.0
# Server processes whose CPU the notify rows show (the sink is the provider, not the suite).
NOTIFY_PARTS = (("gateway", "gw"), ("booking", "bk"), ("iam", "iam"), ("notify", "nt"), ("postgres", "pg"))
SERVER = tuple(name for name, _ in NOTIFY_PARTS)

BACKLOG_TEXT = (
    "Hello,\n\nThis is a reminder of your cleaning tomorrow, Tuesday 24 November 2026, 09:00 to 11:00 "
    "(America/Edmonton). Our team arrives at the start of the window; please leave a key or let us "
    "know how to get in. Reply to this email if anything changed.\n\n-- Bench Cleaning Co"
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class NotifyConfig:
    emails: int
    confirm_rate: float | None  # None: half the measured capacity
    confirm_seconds: float
    capacity_seconds: float

    @classmethod
    def from_env(cls) -> NotifyConfig:
        env = os.environ.get
        return cls(
            emails=int(env("BENCH_EMAILS", "10000")),
            confirm_rate=float(rate) if (rate := env("BENCH_CONFIRM_RATE")) else None,
            confirm_seconds=float(env("BENCH_CONFIRM_SECONDS", "10")),
            capacity_seconds=float(env("BENCH_CONFIRM_CAPACITY_SECONDS", "4")),
        )


@dataclass
class NotifyRow(Row):
    """A Row whose CPU column includes notify (nt)."""

    def cells(self) -> list[str]:
        cells = super().cells()
        if self.result is not None:
            cells[-1] = cpu_cell(self.result.get("cpu_ms_per_request", {}))
        return cells


def cpu_cell(per_item: dict[str, float]) -> str:
    parts = [(short, per_item[name]) for name, short in NOTIFY_PARTS if per_item.get(name, 0.0) >= 0.05]
    if not parts:
        return ""
    return " + ".join(f"{short} {ms:.1f}" for short, ms in parts) + f" = {sum(ms for _, ms in parts):.1f}"


@dataclass
class AcceptLog:
    """The sink's record file, read as it grows: the first acceptance time per recipient."""

    path: Path
    offset: int = 0
    lines: int = 0
    first: dict[str, float] = field(default_factory=dict)
    message_ids: dict[str, set[str]] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)

    def read(self) -> list[str]:
        """Recipients accepted for the first time since the last read."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
        new = []
        for line in chunk[:end].decode(errors="replace").splitlines():
            at, recipient, message_id = line.split(" ", 2)
            self.lines += 1
            if recipient not in self.first:
                self.first[recipient] = float(at)
                new.append(recipient)
            self.copies[recipient] = self.copies.get(recipient, 0) + 1
            self.message_ids.setdefault(recipient, set()).add(message_id)
        self.offset += end
        return new

    def have(self, recipients: set[str] | list[str]) -> int:
        return sum(1 for r in recipients if r in self.first)


@dataclass
class NotifyBench:
    exits: contextlib.ExitStack
    stack: bench_stack.Stack
    org_id: str
    gateway_url: str
    token: str
    config: NotifyConfig = field(default_factory=NotifyConfig.from_env)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    meter: CpuMeter | None = None
    accepted: AcceptLog | None = None
    capacity: dict[str, Any] | None = None  # the closed loop that found the confirmation capacity

    def run(self) -> None:
        """Both scenarios; whatever goes wrong becomes a row saying so, not an exception."""
        backlog_name = f"notify: emails/s from a backlog of {self.config.emails:,} to an SMTP sink"
        confirm_name = (
            f"notify: booking confirm → email accepted, open loop for {self.config.confirm_seconds:g} s"
        )
        backlog = confirm = None
        try:
            sink = bench_stack.start_sink(self.exits, self.stack)
            self.accepted = AcceptLog(sink.record)
            # Latency first, on a quiet outbox: measured after the backlog, it shares the machine
            # with the clean-up of 10,000 just-updated rows (autovacuum), which is that scenario's.
            notify = self._start_notify(sink.port).wait_ready()
            rate = self.config.confirm_rate
            if rate is None:
                capacity = self.measure_capacity()
                rate = max(1.0, round(capacity / 2, 1))
                confirm_name = (
                    f"notify: booking confirm → email accepted, open loop at {rate:g}/s = ½ capacity "
                    f"({capacity:.0f} confirmations/s, closed loop c=16) for {self.config.confirm_seconds:g} s"
                )
            else:
                confirm_name = (
                    f"notify: booking confirm → email accepted, open loop {rate:g}/s "
                    f"(BENCH_CONFIRM_RATE) for {self.config.confirm_seconds:g} s"
                )
            count = math.ceil(rate * (CONFIRM_WARMUP_SECONDS + self.config.confirm_seconds))
            log(f"notify: creating {count} pending bookings to confirm at {rate:g}/s ...")
            bookings = asyncio.run(create_pending_bookings(self.gateway_url, self.token, count))
            confirm = self.measure_confirmations(bookings, rate)
            if self.config.emails > 0:
                notify.stop()  # the backlog is written while notify is down, as after an outage
                backlog = self.measure_backlog(sink.port)
                self.measure_smtp_floor(sink)
        except Exception as exc:
            log(f"notify scenarios failed: {exc!r}")
            self.failed = True
            self.results["notify error"] = repr(exc)
        failed = "failed (see stderr)"
        target = f"≥ {BACKLOG_TARGET_PER_SECOND:,g} emails/s"
        if backlog:
            target += f": {verdict(backlog['rps'] >= BACKLOG_TARGET_PER_SECOND)}"
        skipped = "skipped (BENCH_EMAILS=0)" if self.config.emails <= 0 else failed
        self.rows.append(NotifyRow(backlog_name, backlog, target=target, note=skipped))
        target = f"p99 < {CONFIRM_P99_MS:g} ms"
        if confirm:
            target += f": {verdict(confirm['p99_ms'] < CONFIRM_P99_MS and confirm['errors'] == 0)}"
        self.rows.append(NotifyRow(confirm_name, confirm, target=target, note=failed))
        if self.capacity:
            self.rows.append(
                NotifyRow(
                    "notify: confirmation capacity, closed loop c=16 (its CPU per confirmation)",
                    self.capacity,
                    target="reported",
                )
            )

    def _start_notify(self, smtp_port: int) -> bench_stack.ServiceProc:
        notify = bench_stack.start_notify(self.exits, self.stack, smtp_port)
        self.meter = CpuMeter(bench_stack.pids(self.stack), self.stack.admin_url, self.stack.db_name)
        return notify

    def _snapshot(self) -> Snapshot:
        assert self.meter is not None
        return self.meter.snapshot()

    def measure_backlog(self, smtp_port: int) -> dict[str, Any]:
        n = self.config.emails
        assert self.accepted is not None
        run = secrets.token_hex(3)
        recipients = {f"bench-backlog-{run}-{i}@example.com" for i in range(1, n + 1)}
        inserted = time.perf_counter()
        insert_backlog(self.stack.admin_url, self.org_id, run, n)
        log(
            f"notify: {n:,} pending email rows written in {time.perf_counter() - inserted:.2f} s; starting notify"
        )
        started = time.perf_counter()
        notify = self._start_notify(smtp_port)
        ready_after: float | None = None
        first: Snapshot | None = None
        first_count = 0
        last_check = 0.0
        # Generous: a rate far under the target still finishes, and a stuck engine ends the run.
        deadline = started + 30 + n / 100
        got = 0
        while time.perf_counter() < deadline:
            got += sum(1 for r in self.accepted.read() if r in recipients)
            if first is None and got:
                first, first_count = self._snapshot(), got
            if got >= n:
                break
            if not notify.alive:
                raise RuntimeError(f"notify exited:\n{notify.tail()}")
            now = time.perf_counter()
            if ready_after is None and now - last_check > 0.2:
                last_check = now
                if _ready(notify.http_port):
                    ready_after = now - started
            time.sleep(0.02)
        done_after = time.perf_counter() - started
        last = self._snapshot()
        if ready_after is None:
            ready_after = _wait_ready(notify) - started
        times = sorted(self.accepted.first[r] for r in recipients if r in self.accepted.first)
        if len(times) < 2 or first is None:
            raise RuntimeError(f"the sink accepted {len(times)} of {n} backlog emails in {done_after:.0f} s")
        window = times[-1] - times[0]
        rate = (len(times) - 1) / window if window > 0 else math.nan
        copies = sum(self.accepted.copies[r] for r in recipients if r in self.accepted.copies)
        mixed = sum(1 for r in recipients if len(self.accepted.message_ids.get(r, ())) > 1)
        assert self.meter is not None
        usage = self.meter.usage(first, last, 0.0)
        per_email = usage.per_request_ms(max(1, got - first_count))
        result = {
            "rps": rate,
            "p50_ms": math.nan,
            "p99_ms": math.nan,
            "ok": got,
            "errors": n - got,
            "sent": n,
            "duplicates": copies - got,
            "duplicates_with_another_message_id": mixed,
            "first_to_last_s": window,
            "start_to_last_s": done_after,
            "ready_after_s": ready_after,
            "cpu_ms_per_request": per_email,
            "cpu_s": usage.by_name,
        }
        self.results["notify backlog"] = result
        log(
            f"notify backlog: {got:,}/{n:,} accepted, {rate:.0f} emails/s first to last ({window:.1f} s); "
            f"{done_after:.1f} s from process start (ready after {ready_after:.1f} s); "
            f"{copies - got} duplicates; CPU ms/email: {_cpu_text(per_email)}"
        )
        self.notes.append(
            f"Notify backlog: {n:,} pending email rows of one org written with one INSERT while notify was "
            f"stopped; emails/s from the sink's first acceptance to its last ({window:.1f} s); "
            f"{done_after:.1f} s from starting the notify process to the last acceptance (it reported "
            f"ready after {ready_after:.1f} s); {copies - got} duplicate deliveries. CPU per email over "
            f"the same window (nt = notify); the SMTP sink took {per_email.get('smtp-sink', 0.0):.2f} ms "
            "more per email in its own process."
        )
        return result

    def measure_smtp_floor(self, sink: bench_stack.SinkProc) -> None:
        """The SMTP exchange alone against the same sink, notify stopped: what bounds the backlog row."""
        assert sink.process is not None
        floor = smtp_floor.measure(sink.port, sink.process.pid, run=secrets.token_hex(3))
        self.results["notify smtp floor"] = floor.as_dict()
        log(f"notify: SMTP floor: {smtp_floor.describe(floor)}")
        self.notes.append(
            f"SMTP floor (tools/bench/smtp_floor.py), after the backlog with notify stopped: a bare "
            f"aiosmtplib client, no database, to the same sink: {smtp_floor.describe(floor)}. Those two "
            "figures are part of every backlog email's cost; Postgres' share per email is the backlog row's."
        )

    def measure_capacity(self) -> float:
        """Confirmations per second the machine carries end to end: a closed loop of 16 confirming
        for capacity_seconds, from the first confirmation to the last of their emails accepted."""
        assert self.accepted is not None
        count = CAPACITY_BOOKINGS
        log(f"notify: creating {count} pending bookings to measure the confirmation capacity ...")
        bookings = asyncio.run(create_pending_bookings(self.gateway_url, self.token, count))
        assert self.meter is not None
        before, driver_before = self._snapshot(), time.process_time()
        started = time.time()
        confirmed = asyncio.run(
            confirm_closed_loop(self.gateway_url, self.token, bookings, 16, self.config.capacity_seconds)
        )
        driver_cpu = time.process_time() - driver_before
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            self.accepted.read()
            if self.accepted.have(set(confirmed)) >= len(confirmed):
                break
            time.sleep(0.02)
        last = max(
            (self.accepted.first[email] for email in confirmed if email in self.accepted.first), default=0.0
        )
        capacity = len(confirmed) / (last - started) if confirmed and last > started else 1.0
        # At capacity the background loops (relays, schedulers, health) are a small share of the
        # window, so this is the CPU a confirmation itself costs; the open loop at half the rate
        # divides the same loops by half as many confirmations.
        per_confirm = self.meter.usage(before, self._snapshot(), driver_cpu).per_request_ms(len(confirmed))
        self.capacity = {
            "rps": capacity,
            "p50_ms": math.nan,
            "p99_ms": math.nan,
            "ok": len(confirmed),
            "errors": len(confirmed) - self.accepted.have(set(confirmed)),
            "cpu_ms_per_request": per_confirm,
        }
        self.results["notify confirm capacity"] = self.capacity
        log(
            f"notify: {len(confirmed)} confirmations and their emails in {last - started:.1f} s: {capacity:.1f}/s; "
            f"CPU ms/confirmation: {_cpu_text(per_confirm)}"
        )
        self.notes.append(
            f"Confirmation capacity: {len(confirmed)} bookings confirmed in a closed loop of 16 connections "
            f"for {self.config.capacity_seconds:g} s, and their emails accepted, in {last - started:.2f} s: "
            f"{capacity:.1f} confirmations/s; the open loop offers half of it."
        )
        return capacity

    def measure_confirmations(self, bookings: list[tuple[str, str]], rate: float) -> dict[str, Any] | None:
        assert self.stack.notify is not None and self.accepted is not None and self.meter is not None
        _wait_ready(self.stack.notify)
        before = self._snapshot()
        cpu_before = time.process_time()
        sent = asyncio.run(confirm_open_loop(self.gateway_url, self.token, bookings, rate))
        driver_cpu = time.process_time() - cpu_before
        recipients = [email for _, email in bookings]
        confirmed = {s.email for s in sent if s.status == 200}
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline:
            self.accepted.read()
            if self.accepted.have(confirmed) >= len(confirmed):
                break
            time.sleep(0.02)
        after = self._snapshot()
        warm = CONFIRM_WARMUP_SECONDS * rate
        scored = [s for s in sent if s.index >= warm]
        latencies = sorted(
            (self.accepted.first[s.email] - s.due) * 1000 for s in scored if s.email in self.accepted.first
        )
        responses = sorted(s.response_ms for s in scored if s.status == 200)
        failed = sum(1 for s in scored if s.status != 200)
        missing = sum(1 for s in scored if s.status == 200 and s.email not in self.accepted.first)
        span = (scored[-1].due - scored[0].due) if len(scored) > 1 else math.nan
        usage = self.meter.usage(before, after, driver_cpu)
        per_confirm = usage.per_request_ms(len(sent))
        copies = sum(self.accepted.copies.get(r, 0) for r in recipients)
        result = {
            "rps": (len(scored) - 1) / span if span and span > 0 else math.nan,
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else math.nan,
            "ok": len(latencies),
            "errors": failed + missing,
            "sent": len(sent),
            "confirm_failed": failed,
            "email_missing": missing,
            "first_error": next((s.error for s in sent if s.status != 200), ""),
            "duplicates": copies - len([r for r in recipients if r in self.accepted.first]),
            "response_p50_ms": percentile(responses, 0.5),
            "response_p99_ms": percentile(responses, 0.99),
            "cpu_ms_per_request": per_confirm,
            "cpu_s": usage.by_name,
        }
        self.results["notify confirm latency"] = result
        log(
            f"notify confirmations: {len(latencies)}/{len(scored)} emails, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms; confirm responses p50 "
            f"{result['response_p50_ms']:.1f} ms, p99 {result['response_p99_ms']:.1f} ms; {failed} failed "
            f"confirmations {result['first_error']}; CPU ms/confirmation: {_cpu_text(per_confirm)}"
        )
        self.notes.append(
            f"Confirmation to email: {len(sent)} pending bookings confirmed with POST "
            f"/v1/admin/bookings/{{id}}/confirm at {rate:g}/s (open loop, {CONFIRM_WARMUP_SECONDS:g} s of it "
            f"warm-up, not scored); latency from the moment each confirmation was due to the sink's "
            f"acceptance of the email to that booking's client. The confirm responses alone: p50 "
            f"{result['response_p50_ms']:.1f} ms, p99 {result['response_p99_ms']:.1f} ms. CPU per "
            "confirmation counts everything the confirmation set off, email included."
        )
        return result


def _cpu_text(per_item: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in per_item.items() if v >= 0.01)


def _ready(http_port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_ready(proc: bench_stack.ServiceProc) -> float:
    proc.wait_ready(60)
    return time.perf_counter()


def insert_backlog(admin_url: str, org_id: str, run: str, count: int) -> None:
    """`count` due email rows in the shape the email consumers enqueue, as the table owner (the rows
    are the org's: org_id is the bench org)."""
    with psycopg.connect(admin_url) as conn:
        conn.execute(
            """
            INSERT INTO notify.outbox_events (id, org_id, kind, dedupe_key, payload, target)
            SELECT gen_random_uuid(), %(org)s, 'email', 'email:bench_backlog:' || %(run)s::text || ':' || g,
                   jsonb_build_object(
                       'to', r.address, 'subject', 'Reminder: your cleaning tomorrow (' || g || ')',
                       'text', %(text)s::text, 'email_type', 'booking_reminder', 'booking_id', NULL,
                       'from_name', 'Bench Cleaning Co', 'redact_after_send', false),
                   r.address
              FROM generate_series(1, %(count)s::int) AS g,
                   LATERAL (SELECT 'bench-backlog-' || %(run)s::text || '-' || g || '@example.com' AS address) AS r
            """,
            {"org": org_id, "run": run, "text": BACKLOG_TEXT, "count": count},
        )


async def create_pending_bookings(gateway_url: str, token: str, count: int) -> list[tuple[str, str]]:
    """(booking id, client email) of `count` new pending bookings, each with its own client email."""
    run = secrets.token_hex(3)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=700)
    created: list[tuple[str, str]] = []
    limit = asyncio.Semaphore(8)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        email = f"bench-confirm-{run}-{i}@example.com"
        body = {
            "starts_at": (base + timedelta(hours=i)).isoformat(),
            "duration_minutes": 120,
            "client_name": f"Bench Confirm {i}",
            "client_email": email,
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        }
        async with limit:
            response = await client.post("/v1/admin/bookings", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"creating a booking: HTTP {response.status_code} {response.text[:300]}")
        created.append((str(response.json()["id"]), email))

    async with httpx.AsyncClient(
        base_url=gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        await asyncio.gather(*(one(client, i) for i in range(count)))
    order = {email: i for i, email in enumerate(f"bench-confirm-{run}-{i}@example.com" for i in range(count))}
    return sorted(created, key=lambda c: order[c[1]])


@dataclass(frozen=True)
class Sent:
    index: int
    email: str
    due: float  # epoch seconds, the clock the sink records acceptances with
    status: int
    response_ms: float
    error: str = ""


async def confirm_closed_loop(
    gateway_url: str, token: str, bookings: list[tuple[str, str]], concurrency: int, seconds: float
) -> list[str]:
    """`concurrency` clients confirming one booking after another until `seconds` have passed (or
    the bookings run out): the client emails of the confirmations answered 200."""
    queue = list(reversed(bookings))
    confirmed: list[str] = []
    stop = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue and time.perf_counter() < stop:
            booking_id, email = queue.pop()
            response = await client.post(f"/v1/admin/bookings/{booking_id}/confirm")
            if response.status_code == 200:
                confirmed.append(email)

    async with httpx.AsyncClient(
        base_url=gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return confirmed


async def confirm_open_loop(
    gateway_url: str, token: str, bookings: list[tuple[str, str]], rate: float
) -> list[Sent]:
    """Each confirmation starts when due (i / rate after the start), whatever earlier ones do."""

    async def one(client: httpx.AsyncClient, index: int, booking_id: str, email: str, due: float) -> Sent:
        due_wall = wall0 + (due - mono0)
        try:
            response = await client.post(f"/v1/admin/bookings/{booking_id}/confirm")
        except httpx.HTTPError as exc:
            return Sent(index, email, due_wall, 0, math.nan, repr(exc))
        took = (time.perf_counter() - due) * 1000
        error = "" if response.status_code == 200 else response.text[:300]
        return Sent(index, email, due_wall, response.status_code, took, error)

    async with httpx.AsyncClient(
        base_url=gateway_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    ) as client:
        # A few connections opened first, so the first scored requests do not pay for them.
        await asyncio.gather(*(client.get("/healthz") for _ in range(4)))
        mono0, wall0 = time.perf_counter() + 0.05, time.time() + 0.05
        tasks = []
        for index, (booking_id, email) in enumerate(bookings):
            due = mono0 + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, index, booking_id, email, due)))
        return list(await asyncio.gather(*tasks))


def run(
    exits: contextlib.ExitStack, stack: bench_stack.Stack, org_id: str, gateway_url: str, token: str
) -> NotifyBench:
    bench = NotifyBench(exits, stack, org_id, gateway_url, token)
    bench.run()
    return bench
