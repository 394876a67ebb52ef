"""The load generator, run as its own process so its CPU is not the servers':

    python -m tools.bench.load < spec.json > result.json

Two shapes of load, both over HTTP/1.1 keep-alive connections on loopback:
- closed loop: `concurrency` connections, each sending its next request as soon as the last one
  answered, for `warmup` + `duration` seconds (or `warmup_requests` + `requests_total` requests);
- open loop: requests started at a fixed `rate` whatever happens to earlier ones, each on an idle
  connection (a new one when none is idle, up to `max_connections`). Its latency counts from the
  moment a request was due, so a stalled server cannot hide its queue (no coordinated omission).

Each request is `method`, `path` and an optional JSON `body`, or a `raw_body` sent byte for byte (a
signed webhook), and `headers` of its own beside the spec's.

Two clients: `raw`, a minimal HTTP/1.1 client on asyncio streams (requests pre-encoded, responses
framed by Content-Length), and `httpx`. The raw one is the default because it costs the 2-core
machine several times less CPU per request; the result reports the generator's own CPU per request
so that cost is visible either way.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 10.0
# uvicorn closes a keep-alive connection after 5 s idle; the open loop retires its idle ones earlier.
MAX_IDLE_SECONDS = 4.0
MAX_ERRORS = 1000  # a broken server should end the run, not spin it


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # the request's own, beside the spec's


class Connection(Protocol):
    last_used: float

    async def send(self, request: Request) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class ConnectionClosed(Exception):
    pass


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.perf_counter()

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: Request) -> tuple[int, bytes]:
        self.writer.write(request.raw)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ConnectionClosed("server closed the connection") from exc
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            body = await self.reader.readexactly(int(lower[at + 17 : end]))
        elif b"transfer-encoding: chunked" in lower:
            body = await self._chunked()
        else:
            body = b""
        if b"\r\nconnection: close" in lower:
            await self.close()
            raise ConnectionClosed("server asked to close")
        return status, body

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class HttpxConnection:
    """One httpx client per connection, so the closed loop keeps one keep-alive socket per worker."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        import httpx

        self.last_used = time.perf_counter()
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def send(self, request: Request) -> tuple[int, bytes]:
        headers = {**({"content-type": "application/json"} if request.body else {}), **request.headers}
        response = await self.client.request(
            request.method, request.path, content=request.body or None, headers=headers or None
        )
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class Spec:
    base_url: str
    requests: list[Request]
    headers: dict[str, str] = field(default_factory=dict)
    mode: str = "closed"
    concurrency: int = 16
    rate: float = 0.0
    warmup: float = 2.0
    duration: float = 8.0
    warmup_requests: int = 0
    requests_total: int = 0
    max_connections: int = 256
    client: str = "raw"
    shuffle: bool = True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        url = urlsplit(data["base_url"])
        headers = {k.lower(): v for k, v in data.get("headers", {}).items()}
        requests = []
        for item in data["requests"]:
            body = item.get("body")
            payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
            if "raw_body" in item:  # sent byte for byte (a signed webhook's body)
                payload = item["raw_body"].encode()
            own = {k.lower(): v for k, v in item.get("headers", {}).items()}
            lines = [f"{item['method']} {item['path']} HTTP/1.1", f"host: {url.netloc}"]
            lines += [f"{k}: {v}" for k, v in {**headers, **own}.items()]
            if payload:
                lines += ["content-type: application/json", f"content-length: {len(payload)}"]
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
            requests.append(Request(item["method"], item["path"], payload, raw, own))
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "requests": requests, "headers": headers})


class Recorder:
    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors = 0
        self.first_error = ""
        self.warmup_statuses: Counter[str] = Counter()
        self.body_bytes = 0

    def record(self, due: float, done: float, status: int, body: bytes) -> None:
        if due < self.measure_from:
            self.warmup_statuses[str(status)] += 1
            return
        self.statuses[str(status)] += 1
        if 200 <= status < 300:
            self.latencies.append(done - due)
            self.body_bytes += len(body)
        else:
            self.errors += 1
            if not self.first_error:
                self.first_error = f"HTTP {status}: {body[:300].decode(errors='replace')}"

    def failure(self, due: float, error: BaseException) -> None:
        self.errors += 1
        key = type(error).__name__
        self.statuses[key] += 1
        if not self.first_error:
            self.first_error = f"{key}: {error}"


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Load:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        url = urlsplit(spec.base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        order = list(range(len(spec.requests)))
        if spec.shuffle:
            random.Random(1).shuffle(order)
        self.order = order
        self.next_index = 0

    def next_request(self) -> Request:
        request = self.spec.requests[self.order[self.next_index % len(self.order)]]
        self.next_index += 1
        return request

    async def connect(self) -> Connection:
        if self.spec.client == "httpx":
            return HttpxConnection(self.spec.base_url, self.spec.headers)
        return await RawConnection.open(self.host, self.port)

    async def closed_loop(self) -> tuple[Recorder, float]:
        spec = self.spec
        counted = spec.requests_total > 0
        start = time.perf_counter()
        recorder = Recorder(math.inf if counted else start + spec.warmup)
        end = math.inf if counted else start + spec.warmup + spec.duration
        remaining_warmup, remaining = spec.warmup_requests, spec.requests_total
        measured_from = [start]

        async def worker() -> None:
            nonlocal remaining_warmup, remaining
            conn = await self.connect()
            try:
                while time.perf_counter() < end and recorder.errors < MAX_ERRORS:
                    if counted:
                        if remaining_warmup > 0:
                            remaining_warmup -= 1
                            warm = True
                        elif remaining > 0:
                            remaining -= 1
                            warm = False
                            if recorder.measure_from == math.inf:
                                recorder.measure_from = 0.0
                                measured_from[0] = time.perf_counter()
                        else:
                            return
                    request = self.next_request()
                    due = time.perf_counter()
                    try:
                        async with asyncio.timeout(REQUEST_TIMEOUT):  # no task per request, unlike wait_for
                            status, body = await conn.send(request)
                    except (TimeoutError, OSError, ConnectionClosed, asyncio.IncompleteReadError) as exc:
                        recorder.failure(due, exc)
                        await conn.close()
                        conn = await self.connect()
                        continue
                    done = time.perf_counter()
                    if counted and warm:
                        recorder.warmup_statuses[str(status)] += 1
                        continue
                    if done <= end:
                        recorder.record(due, done, status, body)
            finally:
                await conn.close()

        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
        window = (time.perf_counter() - measured_from[0]) if counted else spec.duration
        return recorder, window

    async def open_loop(self) -> tuple[Recorder, float]:
        spec = self.spec
        interval = 1.0 / spec.rate
        total = int(spec.rate * (spec.warmup + spec.duration))
        idle: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        opened = 0
        for _ in range(min(spec.concurrency, spec.max_connections)):
            await idle.put(await self.connect())
            opened += 1
        start = time.perf_counter() + 0.05
        recorder = Recorder(start + spec.warmup)
        tasks: set[asyncio.Task[None]] = set()

        async def acquire() -> Connection:
            nonlocal opened
            while True:
                try:
                    conn = idle.get_nowait()
                except asyncio.QueueEmpty:
                    if opened < spec.max_connections:
                        opened += 1
                        return await self.connect()
                    conn = await idle.get()
                if time.perf_counter() - conn.last_used < MAX_IDLE_SECONDS:
                    return conn
                opened -= 1  # the server may be closing it right now: retire it, as clients do
                await conn.close()

        async def one(due: float, request: Request) -> None:
            nonlocal opened
            conn = await acquire()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, body = await conn.send(request)
            except (TimeoutError, OSError, ConnectionClosed, asyncio.IncompleteReadError) as exc:
                recorder.failure(due, exc)
                opened -= 1
                await conn.close()
                return
            done = time.perf_counter()
            conn.last_used = done
            recorder.record(due, done, status, body)
            await idle.put(conn)

        sent = 0
        while sent < total and recorder.errors < MAX_ERRORS:
            now = time.perf_counter()
            while sent < total and start + sent * interval <= now:
                task = asyncio.create_task(one(start + sent * interval, self.next_request()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
        while not idle.empty():
            await idle.get_nowait().close()
        return recorder, spec.duration

    async def run(self) -> dict[str, Any]:
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter()
        if self.spec.mode == "open":
            recorder, window = await self.open_loop()
        else:
            recorder, window = await self.closed_loop()
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        ordered = sorted(recorder.latencies)
        sent = self.next_index
        ms = 1000.0
        return {
            "mode": self.spec.mode,
            "client": self.spec.client,
            "ok": len(ordered),
            "errors": recorder.errors,
            "statuses": dict(recorder.statuses),
            "warmup_statuses": dict(recorder.warmup_statuses),
            "first_error": recorder.first_error,
            "window_s": window,
            "rps": len(ordered) / window if window > 0 else 0.0,
            "p50_ms": percentile(ordered, 0.50) * ms,
            "p90_ms": percentile(ordered, 0.90) * ms,
            "p99_ms": percentile(ordered, 0.99) * ms,
            "max_ms": (ordered[-1] * ms) if ordered else math.nan,
            "mean_ms": (sum(ordered) / len(ordered) * ms) if ordered else math.nan,
            "mean_body_bytes": recorder.body_bytes / len(ordered) if ordered else 0,
            "sent": sent,
            "wall_s": time.perf_counter() - wall,
            "client_cpu_s": cpu,
            "client_cpu_us_per_request": (cpu / sent * 1e6) if sent else math.nan,
        }


def main() -> int:
    spec = Spec.from_json(json.load(sys.stdin))
    try:
        import uvloop  # the servers run on it too (uvicorn[standard])
    except ImportError:
        result = asyncio.run(Load(spec).run())
    else:
        result = uvloop.run(Load(spec).run())
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
