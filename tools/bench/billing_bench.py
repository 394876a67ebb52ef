"""The billing rows of `make bench`: Stripe webhooks accepted per second at the gateway, and the
invoices queue read path against the monolith baseline.

Billing runs in the bench stack from the start (stack.start_processes) with a webhook secret of its
own; the bench org's invoices are bulk-loaded while the processes start (`seed_invoices`).

1. Invoices queue: GET /v1/admin/queue/invoices?status=all&limit=50 at the gateway and at the
   baseline (the same SQL against the same tables: tools/bench/baseline.py), closed loop at
   BENCH_CONCURRENCY, like the read-by-id rows. BENCH_INVOICES (20000) invoices of the bench org: a
   mix of SENT, PARTIAL, OVERDUE and PAID, the PARTIAL and PAID ones with a manual or Stripe payment,
   written with INSERT ... SELECT as the superuser (numbers INV-000001 on, the org's counter set past
   them so issuing goes on from there).
2. Webhooks: POST /v1/webhooks/stripe at the gateway, closed loop at BENCH_CONCURRENCY, each request a
   `payment_intent.succeeded` event (Stripe's shape, metadata org_id, invoice_id and purpose invoice)
   for one of the org's owed invoices, signed with billing's STRIPE_WEBHOOK_SECRET
   (tools/stripe_local.sign). One in BENCH_WEBHOOK_REPEAT_EVERY requests (4; 0: none) is a redelivery
   of an event sent at least 4 x BENCH_CONCURRENCY requests earlier (so it was answered already). A
   2xx means billing stored the event durably (the endpoint's contract); billing's loop processes them
   in the background meanwhile (a payment row, the invoice's status, outbox events). After the run,
   the time until every stored event is processed is polled from billing.stripe_events (a note, not
   the target). The requests are built beforehand, enough for 1,200/s over the scenario; a run that
   sends more repeats them (more duplicates than asked), which the notes say.
3. Accounting CSV: GET /v1/admin/exports/accounting.csv for one calendar year of the bench org in
   which BENCH_ACCOUNTING_INVOICES (100000) issued invoices were bulk-loaded with SQL (a past year, so
   the rows above see none of them; a third with a succeeded payment), read to its last byte as one
   client would. Time to last byte (target < 5 s) and billing's peak RSS during the exports over its
   idle RSS before them (target < 150 MB); the gateway's growth is a note. Runs after the rows above.

A missed target is reported, never a failure.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import os
import random
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tools.bench import stack as bench_stack
from tools.bench.cpu import CpuMeter
from tools.bench.report import Row, verdict
from tools.stripe_local import sign

WEBHOOKS_TARGET_PER_SECOND = 500.0
QUEUE_PATH = "/v1/admin/queue/invoices?status=all&limit=50"
WEBHOOK_PATH = "/v1/webhooks/stripe"
POOL_RATE = 1200  # requests built per second of the scenario
STATUS_MIX = (("SENT", 0.35), ("PARTIAL", 0.15), ("OVERDUE", 0.25), ("PAID", 0.25))
ACCOUNTING_PATH = "/v1/admin/exports/accounting.csv"
ACCOUNTING_YEAR = 2021  # before every other bench invoice (they are issued in the last 135 days)
ACCOUNTING_SECONDS_TARGET = 5.0
ACCOUNTING_RSS_TARGET_MB = 150.0
GST_EXPORT_PATH = "/v1/admin/finance/taxes/export"
GST_EXPORT_EXPENSES = 2_000  # a quarter's expenses beside the quarter's invoices

Measure = Callable[[str, dict[str, Any]], dict[str, Any] | None]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BillingConfig:
    invoices: int
    repeat_every: int

    @classmethod
    def from_env(cls) -> BillingConfig:
        env = os.environ.get
        return cls(
            invoices=max(100, int(env("BENCH_INVOICES", "20000"))),
            repeat_every=max(0, int(env("BENCH_WEBHOOK_REPEAT_EVERY", "4"))),
        )


@dataclass(frozen=True)
class InvoiceSeed:
    invoices: int
    by_status: dict[str, int]
    payments: int
    seconds: float

    def summary(self) -> str:
        mix = ", ".join(f"{n:,} {s}" for s, n in self.by_status.items())
        return (
            f"seeded {self.invoices:,} invoices ({mix}) with {self.payments:,} payments "
            f"in {self.seconds:.1f} s"
        )


def seed_invoices(admin_url: str, org_id: str, count: int) -> InvoiceSeed:
    """`count` issued invoices of one org, one line each, as the superuser in one transaction. Every
    CHECK of services/billing/models.py holds: total = subtotal + tax (5 % rounded half up), issued
    ones numbered and with issued_at, PARTIAL and PAID backed by a succeeded payment (manual, or Stripe
    for every third PAID one)."""
    started = time.perf_counter()
    bounds, acc = [], 0.0
    for status, share in STATUS_MIX:
        acc += share
        bounds.append((status, acc))
    # g's status by its place in [0, 1): a fixed pseudo-random spread, so statuses interleave.
    case = (
        "CASE "
        + " ".join(f"WHEN (g * 0.6180339887) %% 1 < {b:.4f} THEN '{s}'" for s, b in bounds[:-1])
        + f" ELSE '{bounds[-1][0]}' END"
    )
    with psycopg.connect(admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT set_config('app.current_org_id', %s, true)", (org_id,))
        cur.execute(
            f"""
            CREATE TEMP TABLE bench_invoices ON COMMIT DROP AS
            SELECT gen_random_uuid() AS id, g, {case} AS status,
                   5000 + (g * 7919) %% 45000 AS subtotal
              FROM generate_series(1, %(count)s::int) AS g
            """,  # type: ignore[arg-type]
            {"count": count},
        )
        cur.execute(
            """
            INSERT INTO billing.invoices (id, org_id, number, status, currency, client_name, client_email,
                issued_at, due_date, subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis,
                total_cents, created_at, updated_at)
            SELECT b.id, %(org)s, 'INV-' || lpad(b.g::text, 6, '0'), b.status, 'CAD',
                   'Bench Client ' || b.g, 'bench-invoice-' || b.g || '@example.com',
                   t.issued, (t.issued + make_interval(days => 14))::date,
                   b.subtotal, b.subtotal, x.tax, round(x.tax * 100.0 / b.subtotal, 4),
                   b.subtotal + x.tax, t.issued, t.issued
              FROM bench_invoices AS b,
                   LATERAL (SELECT (b.subtotal * 5 + 50) / 100 AS tax) AS x,
                   LATERAL (SELECT now() - make_interval(days => CASE b.status
                       WHEN 'OVERDUE' THEN 15 + b.g %% 120
                       WHEN 'SENT' THEN b.g %% 14
                       ELSE b.g %% 90 END) AS issued) AS t
            """,
            {"org": org_id},
        )
        cur.execute(
            """
            INSERT INTO billing.invoice_items (id, org_id, invoice_id, position, description, quantity,
                unit_price_cents, tax_rate, amount_cents)
            SELECT gen_random_uuid(), %(org)s, b.id, 0, 'Standard clean', 1, b.subtotal, 5, b.subtotal
              FROM bench_invoices AS b
            """,
            {"org": org_id},
        )
        cur.execute(
            """
            INSERT INTO billing.invoice_payments (id, org_id, invoice_id, provider, method, amount_cents,
                currency, status, provider_ref, reference, received_at, recorded_by)
            SELECT gen_random_uuid(), %(org)s, i.id, p.provider, p.method, p.amount, 'CAD', 'succeeded',
                   CASE p.provider WHEN 'stripe' THEN 'pi_bench_seed_' || b.g END,
                   CASE p.provider WHEN 'manual' THEN 'cheque ' || b.g ELSE '' END,
                   i.issued_at + interval '3 days',
                   CASE p.provider WHEN 'manual' THEN 'user:bench' ELSE 'stripe' END
              FROM bench_invoices AS b JOIN billing.invoices AS i ON i.id = b.id,
                   LATERAL (SELECT
                       CASE WHEN b.status = 'PAID' AND b.g %% 3 = 0 THEN 'stripe' ELSE 'manual' END AS provider,
                       CASE WHEN b.status = 'PAID' AND b.g %% 3 = 0 THEN 'card' ELSE 'cheque' END AS method,
                       CASE b.status WHEN 'PAID' THEN i.total_cents ELSE i.total_cents / 3 END AS amount) AS p
             WHERE b.status IN ('PARTIAL', 'PAID')
            """,
            {"org": org_id},
        )
        payments = cur.rowcount
        cur.execute(
            """
            INSERT INTO billing.invoice_number_counters (org_id, last_number) VALUES (%(org)s, %(count)s)
            ON CONFLICT (org_id) DO UPDATE SET last_number = greatest(
                billing.invoice_number_counters.last_number, EXCLUDED.last_number)
            """,
            {"org": org_id, "count": count},
        )
        cur.execute("SELECT status, count(*) FROM bench_invoices GROUP BY status ORDER BY status")
        by_status = {str(s): int(n) for s, n in cur.fetchall()}
        conn.commit()
        conn.autocommit = True
        for table in ("invoices", "invoice_items", "invoice_payments"):
            conn.execute(f"VACUUM (ANALYZE) billing.{table}")  # type: ignore[arg-type]
    return InvoiceSeed(count, by_status, payments, time.perf_counter() - started)


def owed_invoices(admin_url: str, org_id: str) -> list[tuple[str, str, int]]:
    """(id, number, total_cents) of the org's SENT, PARTIAL and OVERDUE invoices."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT id, number, total_cents FROM billing.invoices "
            "WHERE org_id = %s AND status IN ('SENT', 'PARTIAL', 'OVERDUE') ORDER BY number",
            (org_id,),
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def _stripe_id(prefix: str, rng: random.Random, length: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


def payment_succeeded_event(
    rng: random.Random, org_id: str, invoice: tuple[str, str, int], created: int
) -> dict[str, Any]:
    """A payment_intent.succeeded event as Stripe sends it for a Checkout payment billing asked for."""
    invoice_id, number, total = invoice
    amount = max(100, total // 3)
    intent = _stripe_id("pi_3", rng)
    return {
        "id": _stripe_id("evt_3", rng),
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "data": {
            "object": {
                "id": intent,
                "object": "payment_intent",
                "amount": amount,
                "amount_capturable": 0,
                "amount_details": {"tip": {}},
                "amount_received": amount,
                "application": None,
                "application_fee_amount": None,
                "automatic_payment_methods": None,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": "automatic_async",
                "client_secret": f"{intent}_secret_{_stripe_id('', rng, 25)}",
                "confirmation_method": "automatic",
                "created": created - 4,
                "currency": "cad",
                "customer": _stripe_id("cus_", rng, 14),
                "description": f"Invoice {number}",
                "invoice": None,
                "last_payment_error": None,
                "latest_charge": _stripe_id("ch_3", rng),
                "livemode": False,
                "metadata": {"org_id": org_id, "invoice_id": invoice_id, "purpose": "invoice"},
                "next_action": None,
                "on_behalf_of": None,
                "payment_method": _stripe_id("pm_1", rng),
                "payment_method_configuration_details": None,
                "payment_method_options": {
                    "card": {
                        "installments": None,
                        "mandate_options": None,
                        "network": None,
                        "request_three_d_secure": "automatic",
                    }
                },
                "payment_method_types": ["card"],
                "processing": None,
                "receipt_email": None,
                "review": None,
                "setup_future_usage": None,
                "shipping": None,
                "source": None,
                "statement_descriptor": None,
                "statement_descriptor_suffix": None,
                "status": "succeeded",
                "transfer_data": None,
                "transfer_group": None,
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "payment_intent.succeeded",
    }


@dataclass(frozen=True)
class WebhookRequests:
    requests: list[dict[str, Any]]
    event_ids: list[str]  # of each request, in order
    originals: int
    repeats: int


def webhook_requests(
    org_id: str, invoices: list[tuple[str, str, int]], secret: str, count: int, repeat_every: int, lag: int
) -> WebhookRequests:
    """`count` signed requests in sending order: each `repeat_every`-th one (after the first `lag`)
    redelivers an event from at least `lag` places earlier, byte for byte with a fresh signature."""
    rng = random.Random(11)
    now = int(time.time())
    requests: list[dict[str, Any]] = []
    event_ids: list[str] = []
    bodies: list[tuple[str, str]] = []  # (event id, body) of the originals, in order
    placed: list[int] = []  # the request index of each original
    repeats = 0
    for i in range(count):
        repeat = repeat_every > 0 and i % repeat_every == repeat_every - 1 and placed and placed[0] <= i - lag
        if repeat:
            # An original sent between 500 and `lag` places ago.
            lo, hi = bisect.bisect_left(placed, i - 500), bisect.bisect_right(placed, i - lag)
            event_id, body = bodies[rng.randrange(lo, hi) if hi > lo else 0]
            repeats += 1
        else:
            event = payment_succeeded_event(rng, org_id, rng.choice(invoices), now)
            event_id, body = event["id"], json.dumps(event, separators=(",", ":"))
            bodies.append((event_id, body))
            placed.append(i)
        signature = sign(body.encode(), secret, now)
        requests.append(
            {
                "method": "POST",
                "path": WEBHOOK_PATH,
                "raw_body": body,
                "headers": {"stripe-signature": signature},
            }
        )
        event_ids.append(event_id)
    return WebhookRequests(requests, event_ids, len(bodies), repeats)


def event_counts(admin_url: str, org_id: str) -> dict[str, int]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT processed_status, count(*) FROM billing.stripe_events WHERE org_id = %s "
            "GROUP BY processed_status",
            (org_id,),
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


def event_times(admin_url: str, org_id: str) -> tuple[float, float, float]:
    """(first received, last received, last processed) as epoch seconds."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(received_at)), extract(epoch FROM max(received_at)), "
            "extract(epoch FROM max(processed_at)) FROM billing.stripe_events WHERE org_id = %s",
            (org_id,),
        ).fetchone()
    assert row is not None
    return tuple(float(v) if v is not None else math.nan for v in row)  # type: ignore[return-value]


def probe(url: str, headers: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
    try:
        response = httpx.get(url, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        return None, f"not available ({type(exc).__name__})"
    if response.status_code != 200:
        return None, f"not available (HTTP {response.status_code}: {response.text[:200]})"
    body: dict[str, Any] = response.json()
    return body, "ok"


@dataclass
class BillingBench:
    stack: bench_stack.Stack
    org_id: str
    gateway_url: str
    baseline_url: str
    token: str
    seeded: InvoiceSeed | None
    measure: Measure
    spec: Callable[..., dict[str, Any]]
    meter: CpuMeter
    concurrency: int
    seconds: float
    warmup: float
    config: BillingConfig = field(default_factory=BillingConfig.from_env)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

    def run(self) -> None:
        """Both scenarios; whatever goes wrong becomes a row saying so, not an exception."""
        c = self.concurrency
        n = self.seeded.invoices if self.seeded else self.config.invoices
        failed = "failed (see stderr)"
        queue_suite = queue_base = None
        about = failed
        try:
            queue_suite, queue_base, about = self.measure_queue()
        except Exception as exc:
            log(f"billing queue scenarios failed: {exc!r}")
            self.failed = True
            self.results["billing queue error"] = repr(exc)
        ratio = (
            queue_suite["rps"] / queue_base["rps"]
            if queue_suite and queue_base and queue_base["rps"]
            else None
        )
        name = f"invoices queue (status=all, limit=50, {n:,} invoices)"
        note = about if about.startswith("not available") else failed
        self.rows.append(
            Row(
                f"{name}, suite (c={c})",
                queue_suite,
                ratio=f"{ratio:.2f}" if ratio is not None else "—",
                target="— (reported)",
                note=note,
            )
        )
        self.rows.append(Row(f"{name}, baseline (c={c})", queue_base, ratio="1.00", note=failed))

        webhooks = None
        try:
            webhooks = self.measure_webhooks()
        except Exception as exc:
            log(f"billing webhook scenario failed: {exc!r}")
            self.failed = True
            self.results["billing webhooks error"] = repr(exc)
        share = (
            f"1 in {self.config.repeat_every} a redelivery" if self.config.repeat_every else "no redeliveries"
        )
        target = f"≥ {WEBHOOKS_TARGET_PER_SECOND:g}/s"
        if webhooks:
            target += f": {verdict(webhooks['rps'] >= WEBHOOKS_TARGET_PER_SECOND)}"
        self.rows.append(
            Row(
                f"billing: Stripe webhooks accepted/s, payment_intent.succeeded, {share} (c={c})",
                webhooks,
                target=target,
                note=failed,
            )
        )
        self.rows.append(self.accounting_csv_row())
        if "accounting csv" in self.results:  # the ZIP reads the same seeded year
            self.rows.append(self.gst_zip_row())

    def accounting_csv_row(self) -> Row:
        count = max(1, int(os.environ.get("BENCH_ACCOUNTING_INVOICES", "100000")))
        name = f"billing: accounting CSV, {count:,} invoices of one year, time to last byte and billing's RSS"
        try:
            result, note = accounting_csv_result(self.stack, self.org_id, self.gateway_url, self.token, count)
        except Exception as exc:
            log(f"accounting CSV scenario failed: {exc!r}")
            self.failed = True
            self.results["accounting csv error"] = repr(exc)
            return Row(name, None, note="failed (see stderr)")
        self.results["accounting csv"] = result
        self.notes.append(note)
        numbers, target = accounting_csv_cell(result)
        return Row(name, None, target=target, note=numbers)

    def gst_zip_row(self) -> Row:
        name = f"billing: GST export ZIP of Q1 {ACCOUNTING_YEAR} (the CSV row's invoices), time and billing's RSS"
        try:
            result, note = gst_zip_result(self.stack, self.org_id, self.gateway_url, self.token)
        except Exception as exc:
            log(f"GST ZIP scenario failed: {exc!r}")
            self.failed = True
            self.results["gst zip error"] = repr(exc)
            return Row(name, None, note="failed (see stderr)")
        self.results["gst zip"] = result
        self.notes.append(note)
        numbers = (
            f"{result['seconds']:.2f} s, {result['bytes'] / 1e6:.1f} MB, billing "
            f"+{result['billing_rss_growth_mb']:.0f} MB RSS, {result['payments']:,} payment rows"
        )
        return Row(name, None, target="— (reported)", note=numbers)

    def measure_queue(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        suite_body, about = probe(f"{self.gateway_url}{QUEUE_PATH}", headers)
        if suite_body is None:
            log(f"invoices queue at the gateway: {about}")
            return None, None, about
        base_body, base_about = probe(f"{self.baseline_url}{QUEUE_PATH}", headers)
        same = "baseline " + base_about
        if base_body is not None:
            same = compare(suite_body, base_body)
        log(f"invoices queue: {suite_body.get('total')} owed invoices; suite and baseline answers: {same}")
        requests = [{"method": "GET", "path": QUEUE_PATH}]
        suite = self.measure("billing queue suite", self.spec(self.gateway_url, self.token, requests))
        base = self.measure("billing queue baseline", self.spec(self.baseline_url, self.token, requests))
        self.notes.append(
            f"Invoices queue: GET {QUEUE_PATH} ({suite_body.get('total', '?'):,} owed invoices of "
            f"{self.seeded.summary() if self.seeded else '?'}), the same request every time, "
            f"closed loop at c={self.concurrency}; the baseline runs billing's four statements (set_config, "
            f"the page, its count, the page's money) itself. Answers of suite and baseline: {same}; "
            f"{(suite or {}).get('mean_body_bytes', 0):,.0f} bytes each."
        )
        return suite, base, about

    def measure_webhooks(self) -> dict[str, Any] | None:
        stack = self.stack
        invoices = owed_invoices(stack.admin_url, self.org_id)
        if not invoices:
            raise RuntimeError("no owed invoice to pay")
        count = max(4000, math.ceil(POOL_RATE * (self.warmup + self.seconds)))
        lag = 4 * self.concurrency
        built = time.perf_counter()
        made = webhook_requests(
            self.org_id, invoices, stack.stripe_webhook_secret, count, self.config.repeat_every, lag
        )
        log(
            f"webhooks: {count:,} signed requests ({made.originals:,} events, {made.repeats:,} redeliveries) "
            f"built in {time.perf_counter() - built:.1f} s"
        )
        before = event_counts(stack.admin_url, self.org_id)
        spec = self.spec(self.gateway_url, self.token, made.requests, shuffle=False)
        spec["headers"] = {}  # Stripe sends no bearer token
        result = self.measure("billing webhooks", spec)
        load_end, cpu_at_end = time.time(), self.meter.snapshot()
        if result is None:
            return None
        after_load = event_counts(stack.admin_url, self.org_id)
        sent = int(result["sent"])
        distinct = len(set(made.event_ids[: min(sent, count)]))
        wrapped = max(0, sent - count)
        stored = sum(after_load.values()) - sum(before.values())
        backlog = after_load.get("pending", 0) + after_load.get("failed", 0)
        log(
            f"webhooks: {sent:,} sent ({wrapped:,} past the built ones), {stored:,} events stored, "
            f"{after_load.get('processed', 0):,} processed by the end of the load, {backlog:,} to go"
        )
        drain = self.wait_processed(load_end, stored)
        # The backlog's processing alone: billing's and Postgres' CPU from the load's end until the
        # last event was processed, per event processed meanwhile (the polling here is in it too).
        usage = self.meter.usage(cpu_at_end, self.meter.snapshot(), 0.0)
        drained = max(1, drain["processed"] - after_load.get("processed", 0))
        drain["processing_cpu_ms_per_event"] = {
            name: usage.by_name.get(name, 0.0) / drained * 1000 for name in ("billing", "postgres")
        }
        result.update(
            {
                "requests_built": count,
                "events_built": made.originals,
                "redeliveries_built": made.repeats,
                "requests_past_built": wrapped,
                "distinct_events_sent": distinct,
                "events_stored": stored,
                "events_by_status_after_load": after_load,
                **drain,
            }
        )
        self.results["billing webhooks"] = result
        cpu = result.get("cpu_ms_per_request", {})
        proc = drain["processing_cpu_ms_per_event"]
        self.notes.append(
            f"Webhooks: POST {WEBHOOK_PATH} with payment_intent.succeeded events (~"
            f"{len(made.requests[0]['raw_body']):,} bytes, Stripe's shape, metadata org_id, invoice_id, "
            f"purpose invoice) for {len(invoices):,} owed invoices, each signed with billing's webhook "
            f"secret; {sent:,} requests in {self.warmup:g} s warm-up + {self.seconds:g} s, {distinct:,} distinct events"
            + (f" ({wrapped:,} requests repeated the built ones)" if wrapped else "")
            + f"; {stored:,} events stored. A 2xx answers after billing committed the event's row. "
            f"Billing's loop processed {after_load.get('processed', 0):,} of them during the load; "
            f"{drain['backlog_after_load']:,} were left, all processed "
            f"{drain['processed_after_load_s']:.1f} s after the load ended "
            f"({drain['processing_rate']:.0f} events/s from the first stored to the last processed; "
            f"{drain['failed']} failed, {drain['pending']} still pending at the end). Server CPU per "
            f"request (gw, bl = billing, pg) includes the background processing done meanwhile "
            f"(billing {cpu.get('billing', 0.0):.2f} ms); processing alone, after the load, took billing "
            f"{proc.get('billing', 0.0):.2f} ms and Postgres {proc.get('postgres', 0.0):.2f} ms of CPU "
            "per event."
        )
        return result

    def wait_processed(self, load_end: float, stored: int) -> dict[str, Any]:
        """Poll billing.stripe_events until none is pending; the time from the load's end to the last
        processing, and the processing rate."""
        deadline = time.monotonic() + min(600.0, max(60.0, stored / 20))
        counts = event_counts(self.stack.admin_url, self.org_id)
        backlog = counts.get("pending", 0) + counts.get("failed", 0)
        while time.monotonic() < deadline and counts.get("pending", 0) > 0:
            time.sleep(0.25)
            counts = event_counts(self.stack.admin_url, self.org_id)
        first, _, last_processed = event_times(self.stack.admin_url, self.org_id)
        total = sum(counts.values())
        processed = counts.get("processed", 0)
        span = last_processed - first
        result = {
            "backlog_after_load": backlog,
            "processed": processed,
            "failed": counts.get("failed", 0),
            "pending": counts.get("pending", 0),
            "ignored": counts.get("ignored", 0),
            "events_total": total,
            "processed_after_load_s": max(0.0, last_processed - load_end),
            "processing_rate": processed / span if span > 0 else math.nan,
        }
        log(
            f"webhooks: {processed:,}/{total:,} processed, the last {result['processed_after_load_s']:.1f} s "
            f"after the load; {result['processing_rate']:.0f} events/s; {result['failed']} failed, "
            f"{result['pending']} pending"
        )
        return result


def compare(suite: dict[str, Any], baseline: dict[str, Any]) -> str:
    if suite == baseline:
        return "identical"
    if suite.get("total") != baseline.get("total"):
        return f"totals differ ({suite.get('total')} against {baseline.get('total')})"
    a, b = suite.get("items", []), baseline.get("items", [])
    if [i.get("id") for i in a] != [i.get("id") for i in b]:
        return "different invoices or order"
    keys = sorted({k for x, y in zip(a, b, strict=False) for k in set(x) | set(y) if x.get(k) != y.get(k)})
    return "differ in " + ", ".join(keys)


def run(
    stack: bench_stack.Stack,
    org_id: str,
    gateway_url: str,
    baseline_url: str,
    token: str,
    seeded: InvoiceSeed | None,
    *,
    measure: Measure,
    spec: Callable[..., dict[str, Any]],
    meter: CpuMeter,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> BillingBench:
    bench = BillingBench(
        stack,
        org_id,
        gateway_url,
        baseline_url,
        token,
        seeded,
        measure,
        spec,
        meter,
        concurrency,
        seconds,
        warmup,
    )
    bench.run()
    return bench


# --- the accounting CSV row ----------------------------------------------------------------------------


def seed_accounting_invoices(admin_url: str, org_id: str, count: int, year: int) -> float:
    """`count` issued invoices of the org spread over `year` (UTC), numbered after the org's counter,
    a third of them PAID by a succeeded manual payment: one INSERT ... SELECT each, as the superuser.
    Returns the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(admin_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(max(last_number), 0) FROM billing.invoice_number_counters WHERE org_id = %s",
            (org_id,),
        )
        row = cur.fetchone()
        first = int(row[0]) + 1 if row else 1
        cur.execute(
            """
            CREATE TEMP TABLE bench_accounting ON COMMIT DROP AS
            SELECT gen_random_uuid() AS id, g, CASE WHEN g %% 3 = 0 THEN 'PAID' ELSE 'SENT' END AS status,
                   5000 + (g * 7919) %% 45000 AS subtotal,
                   make_timestamptz(%(year)s, 1, 1, 0, 0, 0, 'UTC')
                       + (g - 1) * (interval '364 days' / %(count)s::int) AS issued
              FROM generate_series(1, %(count)s::int) AS g
            """,  # type: ignore[arg-type]
            {"count": count, "year": year},
        )
        cur.execute(
            """
            INSERT INTO billing.invoices (id, org_id, number, status, currency, client_name, client_email,
                issued_at, due_date, subtotal_cents, taxable_subtotal_cents, tax_cents, tax_rate_basis,
                total_cents, created_at, updated_at)
            SELECT b.id, %(org)s, 'INV-' || lpad((b.g + %(first)s - 1)::text, 6, '0'), b.status, 'CAD',
                   'Accounting Client ' || b.g, 'acct-' || b.g || '@example.com', b.issued,
                   (b.issued + interval '14 days')::date, b.subtotal, b.subtotal, x.tax,
                   round(x.tax * 100.0 / b.subtotal, 4), b.subtotal + x.tax, b.issued, b.issued
              FROM bench_accounting AS b, LATERAL (SELECT (b.subtotal * 5 + 50) / 100 AS tax) AS x
            """,
            {"org": org_id, "first": first},
        )
        cur.execute(
            """
            INSERT INTO billing.invoice_payments (id, org_id, invoice_id, provider, method, amount_cents,
                currency, status, reference, received_at, recorded_by)
            SELECT gen_random_uuid(), %(org)s, i.id, 'manual', 'cheque', i.total_cents, 'CAD', 'succeeded',
                   'cheque ' || b.g, b.issued + interval '5 days', 'user:bench'
              FROM bench_accounting AS b JOIN billing.invoices AS i ON i.id = b.id
             WHERE b.status = 'PAID'
            """,
            {"org": org_id},
        )
        cur.execute(
            """
            INSERT INTO billing.invoice_number_counters (org_id, last_number) VALUES (%(org)s, %(last)s)
            ON CONFLICT (org_id) DO UPDATE SET last_number = greatest(
                billing.invoice_number_counters.last_number, EXCLUDED.last_number)
            """,
            {"org": org_id, "last": first + count - 1},
        )
        conn.commit()
        conn.autocommit = True
        for table in ("invoices", "invoice_payments"):
            conn.execute(f"VACUUM (ANALYZE) billing.{table}")  # type: ignore[arg-type]
    return time.perf_counter() - started


def rss_mb(pid: int) -> float:
    """The process's resident set now, in MB (from /proc; NaN when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class RssSampler:
    """The highest RSS of some processes while it runs, sampled every 10 ms in a thread (VmHWM would
    also count whatever the process reached before the scenario)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before = {name: rss_mb(pid) for name, pid in pids.items()}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_mb(pid))

    def growth(self, name: str) -> float:
        return self.peak[name] - self.before[name]


def export_accounting_csv(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """One export read to its last byte, as an accountant's client would: the times to the first and
    the last byte, the bytes and the data rows."""
    started = time.perf_counter()
    first_byte = math.nan
    size = lines = 0
    with httpx.Client(timeout=120) as client, client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        for chunk in response.iter_bytes():
            if math.isnan(first_byte):
                first_byte = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\r\n")
    return {
        "last_byte_s": time.perf_counter() - started,
        "first_byte_s": first_byte,
        "bytes": size,
        "rows": lines - 1,  # the header row
    }


def accounting_csv_result(
    stack: bench_stack.Stack,
    org_id: str,
    gateway_url: str,
    token: str,
    count: int,
    year: int = ACCOUNTING_YEAR,
) -> tuple[dict[str, Any], str]:
    """Seed, then export the year once to warm up (connections, plans) and once measured."""
    assert stack.billing and stack.billing.process and stack.gateway and stack.gateway.process
    seeded_s = seed_accounting_invoices(stack.admin_url, org_id, count, year)
    log(f"accounting CSV: {count:,} invoices issued in {year} seeded in {seeded_s:.1f} s")
    url = f"{gateway_url}{ACCOUNTING_PATH}?from={year}-01-01&to={year}-12-31"
    headers = {"Authorization": f"Bearer {token}"}
    pids = {"billing": stack.billing.process.pid, "gateway": stack.gateway.process.pid}
    # Sampled from before the warm-up: the RSS the processes had idle, before any export.
    with RssSampler(pids) as rss:
        warm = export_accounting_csv(
            f"{gateway_url}{ACCOUNTING_PATH}?from={year}-01-01&to={year}-01-31", headers
        )
        result = export_accounting_csv(url, headers)
    result.update(
        {
            "invoices": count,
            "seed_s": seeded_s,
            "warm_up_rows": warm["rows"],
            "billing_rss_before_mb": rss.before["billing"],
            "billing_rss_growth_mb": rss.growth("billing"),
            "gateway_rss_before_mb": rss.before["gateway"],
            "gateway_rss_growth_mb": rss.growth("gateway"),
        }
    )
    log(
        f"accounting CSV: {result['rows']:,} rows, {result['bytes'] / 1e6:.1f} MB, first byte "
        f"{result['first_byte_s'] * 1000:.0f} ms, last byte {result['last_byte_s']:.2f} s; billing RSS "
        f"+{result['billing_rss_growth_mb']:.1f} MB over {result['billing_rss_before_mb']:.0f} MB, gateway "
        f"+{result['gateway_rss_growth_mb']:.1f} MB"
    )
    note = (
        f"Accounting CSV: GET {ACCOUNTING_PATH}?from={year}-01-01&to={year}-12-31, {count:,} issued invoices "
        f"of the bench org in that year (seeded with SQL in {seeded_s:.1f} s; a third PAID with a manual "
        f"payment), pages of the default ACCOUNTING_EXPORT_PAGE_SIZE, one client reading to the end after a "
        f"warm-up export of January: {result['rows']:,} rows, {result['bytes'] / 1e6:.1f} MB, first byte after "
        f"{result['first_byte_s'] * 1000:.0f} ms, last byte after {result['last_byte_s']:.2f} s. Peak RSS "
        f"during both exports (sampled every 10 ms) over the idle RSS before the warm-up: billing "
        f"+{result['billing_rss_growth_mb']:.1f} MB (from {result['billing_rss_before_mb']:.0f} MB), gateway "
        f"+{result['gateway_rss_growth_mb']:.1f} MB (from {result['gateway_rss_before_mb']:.0f} MB)."
    )
    return result, note


def seed_quarter_expenses(admin_url: str, org_id: str, count: int, year: int) -> None:
    """`count` expenses spread over Q1 of `year`, as the superuser."""
    with psycopg.connect(admin_url) as conn:
        conn.execute(
            """
            INSERT INTO billing.expenses (id, org_id, spent_on, category, vendor, amount_cents, gst_cents,
                currency)
            SELECT gen_random_uuid(), %(org)s, make_date(%(year)s, 1, 1) + (g %% 90),
                   (ARRAY['supplies', 'fuel', 'equipment', 'insurance'])[1 + g %% 4], 'Vendor ' || g,
                   1000 + g %% 20000, (1000 + g %% 20000) * 5 / 105, 'CAD'
              FROM generate_series(1, %(count)s::int) AS g
            """,
            {"org": org_id, "year": year, "count": count},
        )


def gst_zip_result(
    stack: bench_stack.Stack, org_id: str, gateway_url: str, token: str, year: int = ACCOUNTING_YEAR
) -> tuple[dict[str, Any], str]:
    """The GST ZIP of the first quarter of the accounting CSV's year, once to warm up and once measured."""
    assert stack.billing and stack.billing.process and stack.gateway and stack.gateway.process
    seed_quarter_expenses(stack.admin_url, org_id, GST_EXPORT_EXPENSES, year)
    url = f"{gateway_url}{GST_EXPORT_PATH}?from={year}-01-01&to={year}-03-31"
    headers = {"Authorization": f"Bearer {token}"}
    pids = {"billing": stack.billing.process.pid, "gateway": stack.gateway.process.pid}
    with httpx.Client(timeout=120) as client, RssSampler(pids) as rss:
        client.get(f"{gateway_url}{GST_EXPORT_PATH}?from={year}-01-01&to={year}-01-07", headers=headers)
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        payments = bundle.read("payments.csv").count(b"\r\n") - 1
    result = {
        "seconds": seconds,
        "bytes": len(response.content),
        "payments": payments,
        "billing_rss_growth_mb": rss.growth("billing"),
        "gateway_rss_growth_mb": rss.growth("gateway"),
    }
    log(
        f"GST ZIP: Q1 {year} in {seconds:.2f} s, {len(response.content) / 1e6:.1f} MB, {payments:,} payment "
        f"rows; billing RSS +{result['billing_rss_growth_mb']:.1f} MB"
    )
    note = (
        f"GST export: GET {GST_EXPORT_PATH}?from={year}-01-01&to={year}-03-31 over the accounting CSV's "
        f"invoices (a quarter of them, with their payments) and {GST_EXPORT_EXPENSES:,} expenses of the "
        f"quarter, after a warm-up week: {seconds:.2f} s, a {len(response.content) / 1e6:.1f} MB ZIP, "
        f"{payments:,} payment rows; peak RSS over idle: billing +{result['billing_rss_growth_mb']:.1f} MB, "
        f"gateway +{result['gateway_rss_growth_mb']:.1f} MB (the ZIP is built in memory, whole, by design: "
        f"a period is at most 366 days)."
    )
    return result, note


def accounting_csv_cell(result: dict[str, Any]) -> tuple[str, str]:
    """(the row's numbers, its target cell with the verdict)."""
    met = (
        result["rows"] == result["invoices"]
        and result["last_byte_s"] < ACCOUNTING_SECONDS_TARGET
        and result["billing_rss_growth_mb"] < ACCOUNTING_RSS_TARGET_MB
    )
    numbers = (
        f"last byte {result['last_byte_s']:.2f} s, billing +{result['billing_rss_growth_mb']:.0f} MB RSS, "
        f"{result['rows']:,} rows"
    )
    target = f"< {ACCOUNTING_SECONDS_TARGET:g} s, < {ACCOUNTING_RSS_TARGET_MB:g} MB: {verdict(met)}"
    return numbers, target
