"""`make bench` / `python -m tools.bench`: the suite against the baseline, one table.

1. Starts a private stack like the tests do (tools/bench/stack.py) plus the baseline process.
2. Creates one org with an owner (IAM's own domain code) and bulk-loads its calendar
   (tools/bench/seed.py) while the processes start.
3. Loads the gateway and the baseline from a separate process (tools/bench/load.py), closed loop at
   a fixed concurrency: read one booking by id, create a booking. Finds the read path's saturating
   rate (closed loop at a higher concurrency) and runs an open loop at half of it for its p99.
4. Measures GET /v1/admin/schedule/suggestions over random windows, if the suite serves it.
5. Billing (tools/bench/billing_bench.py): the invoices queue, suite against baseline, over the bench
   org's invoices (seeded in step 2), then Stripe webhooks accepted per second at the gateway and how
   long billing takes to process what it stored.
6. Starts notify and an SMTP sink process and measures email delivery from a backlog and the latency
   from a booking confirmation to the email accepted by the sink (tools/bench/notify_bench.py).
7. Media (tools/bench/media_bench.py): 2 MB photo uploads per second through the gateway into the
   local backend and into moto's S3 server (a second media with the r2 backend), media's peak RSS
   while 16 uploads run at once (2 MB and 8 MB files), and the time to mint a signed photo link.
8. The web console (tools/bench/web_bench.py): the server time of its main pages, signed in as the
   bench org's owner through the console's form, each page closed loop at BENCH_WEB_CONCURRENCY (2).
9. Outbox relay (tools/bench/relay_bench.py): BENCH_RELAY_EVENTS (50,000) rows in booking's outbox
   in one transaction, timed until booking's relay has them all acknowledged by JetStream.
10. The hop floor (tools/bench/hop_floor.py), once the stack has stopped: the CPU of one bare gRPC call
   between two processes and of the signed call context, and the read ratio they leave possible.
11. Prints one Markdown table (also .run/bench/last.md; raw numbers in .run/bench/last.json) and stops
   everything, dropping the database, whatever happened.

A benchmark, not a test: a missed target is reported, never a failure; the exit status is non-zero
only when something crashed. Knobs (environment): BENCH_SECONDS (8, measured seconds per scenario),
BENCH_WARMUP (2), BENCH_CONCURRENCY (16), BENCH_SATURATION_CONCURRENCY (32), BENCH_CLIENT (raw or
httpx), BENCH_WORKERS (1000), BENCH_BOOKINGS (100000), BENCH_SUGGESTIONS (200), BENCH_INVOICES (20000),
BENCH_WEBHOOK_REPEAT_EVERY (4: one webhook in 4 a redelivery), BENCH_EMAILS (10000, the notify
backlog; 0 skips it), BENCH_CONFIRM_RATE (unset: half the measured capacity), BENCH_CONFIRM_CAPACITY_SECONDS (4), BENCH_CONFIRM_SECONDS (10),
BENCH_MEDIA_CONCURRENCY (16), BENCH_MEDIA_SECONDS (5), BENCH_MEDIA_WARMUP (1), BENCH_MEDIA_S3 (1; 0
skips the S3 row), BENCH_WEB_CONCURRENCY (2), BENCH_WEB_SECONDS (4), BENCH_HOP_CALLS (20000; 0 skips it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tools.bench import billing_bench, hop_floor, media_bench, notify_bench, relay_bench, web_bench
from tools.bench import stack as bench_stack
from tools.bench.cpu import CpuMeter
from tools.bench.report import Row, table, verdict
from tools.bench.seed import SeedResult, seed
from tools.devstack import ROOT

# Issue 15's targets: the suite's throughput against the one-process baseline's, in the same run.
READ_TARGET_RATIO = 0.9
CREATE_TARGET_RATIO = 0.6
HALF_SATURATION_P99_MS = 25.0
SUGGESTIONS_P99_MS = 15.0
SUGGESTIONS_LIMIT = 50  # the default page (issue 15)
SUGGESTIONS_PATH = "/v1/admin/schedule/suggestions"
# Every server process a request can set off (billing consumes booking events, so a create costs it
# CPU too); the load generator and the rest of the machine are not the servers'.
SERVER_PROCESSES = ("gateway", "booking", "iam", "billing", "media", "baseline", "postgres")


@dataclass(frozen=True)
class Config:
    seconds: float
    warmup: float
    concurrency: int
    saturation_concurrency: int
    client: str
    workers: int
    bookings: int
    suggestions: int

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ.get
        return cls(
            seconds=float(env("BENCH_SECONDS", "8")),
            warmup=float(env("BENCH_WARMUP", "2")),
            concurrency=int(env("BENCH_CONCURRENCY", "16")),
            saturation_concurrency=int(env("BENCH_SATURATION_CONCURRENCY", "32")),
            client=env("BENCH_CLIENT", "raw"),
            workers=int(env("BENCH_WORKERS", "1000")),
            bookings=max(1, int(env("BENCH_BOOKINGS", "100000"))),
            suggestions=int(env("BENCH_SUGGESTIONS", "200")),
        )


@dataclass(frozen=True)
class Owner:
    org_id: str
    email: str
    password: str


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def _create_owner(app_url: str) -> Owner:
    from libs.common.db import Database
    from services.iam.manage import create_org_with_owner
    from services.iam.models import SCHEMA, event_tables

    db = Database(app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    try:
        email = f"bench-owner-{secrets.token_hex(4)}@example.com"
        password = "Bench-owner-password-" + secrets.token_hex(6)
        created = await create_org_with_owner(db, name="Bench Cleaning Co", email=email, password=password)
        return Owner(str(created.org_id), email, password)
    finally:
        await db.dispose()


def login(gateway_url: str, owner: Owner) -> str:
    response = httpx.post(
        f"{gateway_url}/v1/auth/login", json={"email": owner.email, "password": owner.password}, timeout=10
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario in a fresh load-generator process; its JSON result."""
    timeout = float(spec.get("warmup", 0)) + float(spec.get("duration", 0)) + 90
    done = subprocess.run(
        [sys.executable, "-m", "tools.bench.load"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["ok"] == 0:
        raise RuntimeError(f"no request succeeded: {result['first_error'] or result['statuses']}")
    return result


def wait_outbox_drained(admin_url: str, timeout: float = 30) -> None:
    """The suite's relay publishes the create scenario's events after it; let that finish first."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM booking.event_outbox WHERE published_at IS NULL"
            ).fetchone()
            if row and row[0] == 0:
                return
            time.sleep(0.25)
    log("outbox not drained yet; going on")


def sample_booking_ids(admin_url: str, org_id: str, count: int = 2000) -> list[str]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT id FROM booking.bookings WHERE org_id = %s ORDER BY random() LIMIT %s", (org_id, count)
        ).fetchall()
    return [str(r[0]) for r in rows]


def create_bodies(count: int) -> list[dict[str, Any]]:
    rng = random.Random(3)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return [
        {
            "method": "POST",
            "path": "/v1/admin/bookings",
            "body": {
                "starts_at": (
                    base + timedelta(days=rng.randint(2, 600), minutes=30 * rng.randint(0, 47))
                ).isoformat(),
                "duration_minutes": 120,
                "client_name": f"Bench Client {i}",
                "client_email": f"bench-client-{i}@example.com",
                "cleaning_type": "standard",
                "beds": 2,
                "baths": 1,
            },
        }
        for i in range(count)
    ]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def suggestion_requests(seeded: SeedResult, count: int) -> list[dict[str, Any]]:
    """Random windows of 1 to 4 hours that start between 07:00 and 18:00 UTC on a seeded day, so
    they meet the working slots (08-20 UTC) where teams are busy or free."""
    rng = random.Random(5)
    first_day = seeded.first_start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = max(1, (seeded.last_end - first_day).days)
    requests = []
    for _ in range(count):
        start = first_day + timedelta(days=rng.randrange(days), hours=7, minutes=15 * rng.randrange(45))
        end = start + timedelta(minutes=rng.choice((60, 90, 120, 180, 240)))
        requests.append(
            {
                "method": "GET",
                "path": f"{SUGGESTIONS_PATH}?starts_at={_iso(start)}&ends_at={_iso(end)}"
                f"&limit={SUGGESTIONS_LIMIT}",
            }
        )
    return requests


def compare_reads(suite: dict[str, Any], baseline: dict[str, Any]) -> str:
    if suite == baseline:
        return "identical"
    differing = sorted(k for k in set(suite) | set(baseline) if suite.get(k) != baseline.get(k))
    return "differ in " + ", ".join(differing)


def probe_suggestions(gateway_url: str, headers: dict[str, str], path: str) -> tuple[bool, str]:
    try:
        response = httpx.get(f"{gateway_url}{path}", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return False, f"not available ({type(exc).__name__})"
    if response.status_code == 200:
        body = response.json()
        teams = len(body.get("teams", [])) if isinstance(body, dict) else "?"
        workers = len(body.get("workers", [])) if isinstance(body, dict) else "?"
        return True, f"a sample window returned {teams} teams and {workers} workers"
    kind = ""
    with contextlib.suppress(ValueError):
        kind = str(response.json().get("type", "")).rsplit("/", 1)[-1]
    return False, f"not available (HTTP {response.status_code}{' ' + kind if kind else ''})"


def git_revision() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.results: dict[str, Any] = {}
        self.failed = False
        self.meter: CpuMeter | None = None

    def spec(self, base_url: str, token: str, requests: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "base_url": base_url,
            "headers": {"authorization": f"Bearer {token}"},
            "requests": requests,
            "concurrency": self.config.concurrency,
            "warmup": self.config.warmup,
            "duration": self.config.seconds,
            "client": self.config.client,
            **extra,
        }

    def measure(self, name: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        log(f"{name}: {spec.get('mode', 'closed')} loop, {spec.get('concurrency')} connections ...")
        assert self.meter is not None
        try:
            before, started = self.meter.snapshot(), time.monotonic()
            result = run_load(spec)
            after, wall = self.meter.snapshot(), time.monotonic() - started
        except Exception as exc:
            log(f"{name} failed: {exc}")
            self.failed = True
            self.results[name] = {"error": str(exc)}
            return None
        usage = self.meter.usage(before, after, result["client_cpu_s"])
        result["cpu_ms_per_request"] = usage.per_request_ms(result["sent"])
        result["cpu_s"] = usage.by_name
        result["other_cores_busy"] = usage.by_name["rest of machine"] / wall
        result["pg_sessions_opened"] = usage.sessions
        self.results[name] = result
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms_per_request"].items() if v >= 0.01)
        log(
            f"{name}: {result['rps']:.0f} rps, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"{result['errors']} errors; CPU ms/request: {cpu}; "
            f"rest of machine {result['other_cores_busy']:.2f} cores; "
            f"{usage.sessions} Postgres sessions opened"
        )
        return result

    def run(self) -> None:
        config = self.config
        loadavg = os.getloadavg()
        started = time.monotonic()
        with contextlib.ExitStack() as exits:
            stack = bench_stack.start_infrastructure(exits)
            log(f"database {stack.db_name} on {stack.server_admin_url.rsplit('@', 1)[-1].rsplit('/', 1)[0]}")
            owner = asyncio.run(_create_owner(stack.app_url))
            bench_stack.start_processes(exits, stack)
            log(
                f"seeding {config.workers} workers and {config.bookings} bookings while the processes start ..."
            )
            seeded = seed(
                stack.admin_url,
                owner.org_id,
                workers=config.workers,
                teams=max(1, config.workers // 10),
                bookings=config.bookings,
            )
            log(seeded.summary())
            invoices = billing_bench.seed_invoices(
                stack.admin_url, owner.org_id, billing_bench.BillingConfig.from_env().invoices
            )
            log(invoices.summary())
            bench_stack.wait_processes(stack)
            self.meter = CpuMeter(bench_stack.pids(stack), stack.admin_url, stack.db_name)
            assert stack.gateway and stack.baseline
            gateway, baseline = stack.gateway.url, stack.baseline.url
            token = login(gateway, owner)
            headers = {"Authorization": f"Bearer {token}"}
            ids = sample_booking_ids(stack.admin_url, owner.org_id)
            # The org's booking profile and pricing config come from IAM's org.created event (or the
            # suite's first call); the baseline reads them as the monolith would.
            suite_read = httpx.get(f"{gateway}/v1/admin/bookings/{ids[0]}", headers=headers, timeout=10)
            suite_read.raise_for_status()
            base_read = httpx.get(f"{baseline}/v1/admin/bookings/{ids[0]}", headers=headers, timeout=10)
            base_read.raise_for_status()
            same = compare_reads(suite_read.json(), base_read.json())
            reads = [{"method": "GET", "path": f"/v1/admin/bookings/{i}"} for i in ids]
            creates = create_bodies(4000)

            read_suite = self.measure("read suite", self.spec(gateway, token, reads))
            read_base = self.measure("read baseline", self.spec(baseline, token, reads))
            saturation = self.measure(
                "read suite saturation",
                self.spec(
                    gateway,
                    token,
                    reads,
                    concurrency=config.saturation_concurrency,
                    warmup=1.0,
                    duration=max(3.0, config.seconds / 2),
                ),
            )
            half = half_base = None
            if saturation:
                # The saturating rate: the best the closed loops reached (more connections than the
                # service's pool can mean less throughput, not more).
                rate = max(saturation["rps"], read_suite["rps"] if read_suite else 0.0) / 2
                half = self.measure(
                    "read suite open loop",
                    self.spec(gateway, token, reads, mode="open", rate=rate, concurrency=config.concurrency),
                )
                # The control: the same rate against the baseline. A tail both share comes from the
                # machine (other processes, the scheduler), not from the suite.
                half_base = self.measure(
                    "read baseline open loop",
                    self.spec(baseline, token, reads, mode="open", rate=rate, concurrency=config.concurrency),
                )
            create_base = self.measure("create baseline", self.spec(baseline, token, creates))
            create_suite = self.measure(
                "create suite", self.spec(gateway, token, creates[len(creates) // 2 :])
            )
            wait_outbox_drained(stack.admin_url)

            windows = suggestion_requests(seeded, config.suggestions)
            available, about = probe_suggestions(gateway, headers, windows[0]["path"])
            suggestions = None
            if available:
                suggestions = self.measure(
                    "suggestions",
                    self.spec(
                        gateway,
                        token,
                        windows,
                        concurrency=1,
                        warmup=0,
                        duration=0,
                        warmup_requests=10,
                        requests_total=config.suggestions,
                        shuffle=False,
                    ),
                )
            log(f"suggestions: {about}")
            billing = billing_bench.run(
                stack,
                owner.org_id,
                gateway,
                baseline,
                token,
                invoices,
                measure=self.measure,
                spec=self.spec,
                meter=self.meter,
                concurrency=config.concurrency,
                seconds=config.seconds,
                warmup=config.warmup,
            )
            notify = notify_bench.run(exits, stack, owner.org_id, gateway, token)
            media = media_bench.run(
                exits,
                stack,
                owner.org_id,
                gateway,
                token,
                measure=self.measure,
                spec=self.spec,
                meter=self.meter,
            )
            web = web_bench.run(
                exits,
                stack,
                gateway,
                owner.email,
                owner.password,
                seeded.first_start + timedelta(days=1),
                ids[0],
                measure=self.measure,
                spec=self.spec,
                meter=self.meter,
            )
            relay = relay_bench.run(stack)

        # After the stack stopped: nothing else of ours is running while the bare hop is timed.
        self.notes += self._hop_note(read_base)
        elapsed = time.monotonic() - started
        self._rows(read_suite, read_base, saturation, half, create_suite, create_base, suggestions, about)
        if half_base:
            self.rows.insert(5, Row("read baseline, open loop at the same rate (control)", half_base))
        gen = [r for r in self.results.values() if isinstance(r, dict) and "client_cpu_us_per_request" in r]
        gen_cpu = sum(r["client_cpu_us_per_request"] for r in gen) / max(1, len(gen))
        others = [r["other_cores_busy"] for r in gen]
        self.notes.append(self._cpu_note(read_suite, read_base, create_suite, create_base))
        self.notes += [
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, git {git_revision()}, {os.cpu_count()} cores, "
            f"load average {loadavg[0]:.2f} before the run; {elapsed:.0f} s in all.",
            f"Closed loops: {config.concurrency} keep-alive HTTP/1.1 connections on loopback, "
            f"{config.warmup:g} s warm-up + {config.seconds:g} s measured per scenario; the load generator "
            f"({config.client} client) is its own process and spent ~{gen_cpu:.0f} µs CPU per request.",
            "Gateway and baseline: one uvicorn worker each; the same access token for both; "
            f"GET responses of suite and baseline for the same booking: {same}.",
            "Server CPU ms/request: CPU time of gw = gateway, bk = booking, iam, bl = billing, md = media, app = baseline, pg = the "
            "Postgres backends of this run's database, per request sent (warm-up included), from /proc. "
            "Other processes on the machine (other sessions, Postgres' WAL writer, NATS) kept "
            f"{min(others, default=0):.2f}-{max(others, default=0):.2f} cores busy during the scenarios.",
            seeded.summary() + ".",
        ]
        self.rows += billing.rows + notify.rows + media.rows + web.rows + relay.rows
        self.notes += billing.notes + notify.notes + media.notes + web.notes + relay.notes
        self.results.update(billing.results)
        self.results.update(notify.results)
        self.results.update(media.results)
        self.results.update(web.results)
        self.results.update(relay.results)
        self.failed = (
            self.failed or billing.failed or notify.failed or media.failed or web.failed or relay.failed
        )

    def _rows(
        self,
        read_suite: dict[str, Any] | None,
        read_base: dict[str, Any] | None,
        saturation: dict[str, Any] | None,
        half: dict[str, Any] | None,
        create_suite: dict[str, Any] | None,
        create_base: dict[str, Any] | None,
        suggestions: dict[str, Any] | None,
        about: str,
    ) -> None:
        c = self.config.concurrency

        def ratio(suite: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
            return suite["rps"] / base["rps"] if suite and base and base["rps"] else None

        read_ratio = ratio(read_suite, read_base)
        create_ratio = ratio(create_suite, create_base)
        failed = "failed (see stderr)"
        self.rows.append(
            Row(
                f"read by id, suite (c={c})",
                read_suite,
                ratio=f"{read_ratio:.2f}" if read_ratio is not None else "—",
                target=f"≥ {READ_TARGET_RATIO} x baseline: {verdict(read_ratio >= READ_TARGET_RATIO)}"
                if read_ratio is not None
                else f"≥ {READ_TARGET_RATIO} x baseline",
                note=failed,
            )
        )
        self.rows.append(Row(f"read by id, baseline (c={c})", read_base, ratio="1.00", note=failed))
        self.rows.append(
            Row(
                f"create, suite (c={c})",
                create_suite,
                ratio=f"{create_ratio:.2f}" if create_ratio is not None else "—",
                target=f"≥ {CREATE_TARGET_RATIO} x baseline: {verdict(create_ratio >= CREATE_TARGET_RATIO)}"
                if create_ratio is not None
                else f"≥ {CREATE_TARGET_RATIO} x baseline",
                note=failed,
            )
        )
        self.rows.append(Row(f"create, baseline (c={c})", create_base, ratio="1.00", note=failed))
        if saturation and half:
            best = max(saturation["rps"], read_suite["rps"] if read_suite else 0.0)
            label = (
                f"read suite, open loop at {half['rps']:.0f} rps = ½ saturation ({best:.0f} rps: best of "
                f"c={c} and c={self.config.saturation_concurrency}, {saturation['rps']:.0f} rps at the latter)"
            )
            target = (
                f"p99 < {HALF_SATURATION_P99_MS:g} ms: {verdict(half['p99_ms'] < HALF_SATURATION_P99_MS)}"
            )
        else:
            label, target = "read suite, open loop at ½ saturation", f"p99 < {HALF_SATURATION_P99_MS:g} ms"
        self.rows.append(Row(label, half, target=target, note=failed))
        name = (
            f"suggestions (1 connection, {self.config.workers:,} workers, {self.config.bookings:,} bookings, "
            f"page of {SUGGESTIONS_LIMIT})"
        )
        if suggestions:
            target = f"p99 < {SUGGESTIONS_P99_MS:g} ms: {verdict(suggestions['p99_ms'] < SUGGESTIONS_P99_MS)}"
            self.rows.append(Row(name, suggestions, target=target))
            self.notes.append(f"Suggestions: {suggestions['ok']} random windows of 1-4 h; {about}.")
        else:
            self.rows.append(
                Row(
                    name,
                    None,
                    target=f"p99 < {SUGGESTIONS_P99_MS:g} ms",
                    note=about if about.startswith("not available") else failed,
                )
            )

    def _cpu_note(self, *results: dict[str, Any] | None) -> str:
        """Server CPU per request, suite against baseline: the cost the architecture adds, which the
        throughput ratio hides while the suite's two processes can use both cores."""

        read_suite, read_base, create_suite, create_base = (self._server_cpu(r) for r in results)
        parts = []
        for name, suite, base in (("read", read_suite, read_base), ("create", create_suite, create_base)):
            if suite and base:
                parts.append(f"{name} {suite:.1f} against {base:.1f} ms ({suite / base:.1f}x)")
        sessions = ", ".join(
            f"{name} {r['pg_sessions_opened']}"
            for name, r in self.results.items()
            if isinstance(r, dict) and "pg_sessions_opened" in r
        )
        return (
            "Server CPU per request, suite against baseline: "
            + ("; ".join(parts) or "n/a")
            + f". Postgres sessions opened per scenario (pool overflow churn; their backends' CPU is "
            f"not in pg): {sessions}."
        )

    @staticmethod
    def _server_cpu(result: dict[str, Any] | None) -> float | None:
        """Server CPU ms per request of a read or create scenario, every process it set off."""
        if not result:
            return None
        cpu = result.get("cpu_ms_per_request", {})
        return sum(cpu.get(k, 0.0) for k in SERVER_PROCESSES)

    def _hop_note(self, read_base: dict[str, Any] | None) -> list[str]:
        """What one gRPC hop and one signed context cost on this machine, and the read ratio they leave
        possible against this run's baseline (the read row's bound in docs/performance.md)."""
        if int(os.environ.get("BENCH_HOP_CALLS", "20000")) <= 0:
            return []
        try:
            floor = hop_floor.measure()
        except Exception as exc:
            log(f"hop floor failed: {exc}")
            self.failed = True
            self.results["hop floor"] = {"error": str(exc)}
            return [f"Hop floor: failed ({exc})."]
        log(f"hop floor: {hop_floor.describe(floor)}")
        # The baseline's own processes only: the idle suite beside it is not the monolith's cost.
        base_cpu = (read_base or {}).get("cpu_ms_per_request", {})
        base_ms = base_cpu.get("baseline", 0.0) + base_cpu.get("postgres", 0.0)
        ceiling = floor.ceiling(base_ms) if base_ms else None
        self.results["hop floor"] = {
            **floor.as_dict(),
            "baseline_read_ms": base_ms,
            "read_ratio_ceiling": ceiling,
        }
        bound = (
            f" Against this run's baseline read ({base_ms:.2f} ms of server CPU), a suite that did nothing "
            f"else per read than the baseline plus one hop and one signed context could reach at most "
            f"{ceiling:.2f} of its throughput on a CPU-bound machine."
            if base_ms and ceiling
            else ""
        )
        return [
            f"Hop floor (tools/bench/hop_floor.py): {hop_floor.describe(floor)}: grpc.aio on uvloop on "
            f"both sides, a bytes handler with no interceptor, {len(hop_floor.REQUEST)} B in and "
            f"{len(hop_floor.ANSWER)} B out, {hop_floor.IN_FLIGHT} in flight.{bound}"
        ]

    def report(self) -> str:
        return table(self.rows) + "\n\n" + "\n".join(f"- {note}" for note in self.notes) + "\n"


def main() -> int:
    bench_stack.install_signal_handlers()
    bench = Bench(Config.from_env())
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted; everything was stopped and the database dropped")
        return 130
    text = bench.report()
    out = bench_stack.BENCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "last.md").write_text(text)
    (out / "last.json").write_text(json.dumps(bench.results, indent=2, default=str))
    print(text)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
