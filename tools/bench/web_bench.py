"""The web console's rows of `make bench` (issue 16): the server time of its main pages.

A web process (python -m web) in front of the bench's gateway, signed in as the bench org's owner
through the console's own form; then each page, closed loop at BENCH_WEB_CONCURRENCY (2: the machine
has two cores, so more connections only queue) for BENCH_WEB_SECONDS (4) after a 1 s warm-up, by the
same load generator as the API rows, with the session cookie. The bench org is the big one (1,000
workers in 100 teams, 100,000 bookings): the day board and the bookings list show a busy day. The
time is the whole page as the browser waits for it (the web, the gateway calls it makes, and the
services behind them); the target is p99 < 300 ms, reported, never a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tools.bench import stack as bench_stack
from tools.bench.cpu import CpuMeter
from tools.bench.report import Row, verdict
from tools.processes import web_proc

Measure = Callable[[str, dict[str, Any]], dict[str, Any] | None]
PAGE_P99_MS = 300.0


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class WebRows:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


def sign_in(web_url: str, email: str, password: str) -> str:
    """The session cookie of a sign-in through the console's form, as a browser gets it."""
    with httpx.Client(base_url=web_url, timeout=30) as browser:
        form = browser.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        if not token:
            raise RuntimeError(f"no sign-in form at {web_url}: {form.status_code}")
        signed = browser.post(
            "/console/sign-in",
            data={"csrf": token.group(1), "email": email, "password": password},
            headers={"Sec-Fetch-Site": "same-origin"},
        )
        if signed.status_code != 303:
            raise RuntimeError(
                f"the console refused the bench owner: {signed.status_code} {signed.text[:200]}"
            )
        return str(browser.cookies["cws_web"])


def pages(day: datetime, booking_id: str) -> list[tuple[str, str]]:
    date = day.strftime("%Y-%m-%d")
    return [
        ("today", "/console"),
        ("bookings, day board", f"/console/bookings?view=day&date={date}"),
        ("bookings, week board", f"/console/bookings?view=week&date={date}"),
        ("one booking", f"/console/bookings/{booking_id}"),
        ("leads", "/console/leads"),
        ("invoices", "/console/invoices"),
        ("photo review", "/console/photos"),
        ("operations", "/console/operations"),
    ]


def run(
    exits: contextlib.ExitStack,
    stack: bench_stack.Stack,
    gateway_url: str,
    email: str,
    password: str,
    day: datetime,
    booking_id: str,
    *,
    measure: Measure,
    spec: Callable[..., dict[str, Any]],
    meter: CpuMeter,
) -> WebRows:
    out = WebRows()
    concurrency = int(os.environ.get("BENCH_WEB_CONCURRENCY", "2"))
    seconds = float(os.environ.get("BENCH_WEB_SECONDS", "4"))
    web = web_proc({**stack.env(), "LOG_LEVEL": "WARNING"}, stack.log_dir, gateway_url)
    bench_stack.start_extra(exits, web)
    web.wait_ready(60)
    assert web.process is not None
    meter.pids["web"] = web.process.pid
    try:
        cookie = sign_in(web.url, email, password)
    except (RuntimeError, httpx.HTTPError) as error:
        log(f"web pages: {error}")
        out.failed = True
        out.rows.append(Row("web console pages", None, note=f"failed: {error}"))
        return out
    for name, path in pages(day, booking_id):
        result = measure(
            f"web {name}",
            {
                **spec(
                    web.url,
                    "",
                    [{"method": "GET", "path": path}],
                    concurrency=concurrency,
                    warmup=1.0,
                    duration=seconds,
                ),
                "headers": {"cookie": f"cws_web={cookie}"},
            },
        )
        out.results[f"web {name}"] = result
        target = f"p99 < {PAGE_P99_MS:g} ms"
        if result is None:
            out.failed = True
            out.rows.append(
                Row(
                    f"web page: {name} ({path.split('?')[0]})",
                    None,
                    target=target,
                    note="failed (see stderr)",
                )
            )
            continue
        out.rows.append(
            Row(
                f"web page: {name} (c={concurrency})",
                result,
                target=f"{target}: {verdict(result['p99_ms'] < PAGE_P99_MS)}",
            )
        )
    out.notes.append(
        f"Web pages: the console (python -m web) in front of the bench's gateway, signed in as the bench "
        f"org's owner by its form; each page closed loop at c={concurrency} for {seconds:g} s after 1 s "
        f"of warm-up. Server CPU adds web to the services the page's calls reach. The day and week "
        f"boards show {day:%Y-%m-%d}, a day of the seeded calendar."
    )
    return out
