"""The media rows of `make bench` (issue 12): photo uploads through the gateway into the local backend
and into an S3 server, media's memory while uploads run at once, and the cost of minting a signed link.

Media runs in the bench stack from the start (stack.start_processes: the local backend under the run's
work dir). The rows report absolute numbers against targets; there is no baseline to compare with.

1. Uploads, local backend: POST /v1/admin/bookings/{id}/photos (multipart, field `file`) of one ~2 MB
   JPEG (coarse colour noise at 2400x1800, quality 83: noise compresses about as badly as a detailed
   photo of the same size) into one booking of the bench org, closed loop at BENCH_MEDIA_CONCURRENCY
   (16) for BENCH_MEDIA_SECONDS (5) after a warm-up. The client is an httpx client in the bench
   process (the load generator sends text bodies only); the server CPU per upload is from /proc.
2. The same into moto's S3 server (its own process, `python -m moto.server`), through a second media
   (ORDER_STORAGE_BACKEND=r2, R2_* at the server) and a second gateway in front of it.
3. Media's RSS: 16 uploads at once (three rounds), peak RSS sampled every 10 ms over media's idle RSS
   before any upload, first with the 2 MB file and then with an ~8 MB one of the same pixels (quality
   98, no chroma subsampling): the growth should not follow the file size (media spools the upload
   to disk and decodes at most DECODE_SLOTS at a time).
4. Signed links: consent granted for the booking, then GET /v1/admin/photos/{id}/signed_url at the
   gateway (the load generator, closed loop), and SignPhotoUrl called on media directly (gRPC,
   one call at a time, signed as the gateway signs): the service's own time, target p99 < 10 ms.

A missed target is reported, never a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tools.bench import stack as bench_stack
from tools.bench.billing_bench import RssSampler, rss_mb
from tools.bench.cpu import CpuMeter
from tools.bench.report import Row, verdict
from tools.devstack import free_port, port_open, wait_for
from tools.processes import Proc, gateway_proc

Measure = Callable[[str, dict[str, Any]], dict[str, Any] | None]
# The issue's memory target is "does not grow with file size": the 8 MB files' growth may exceed the
# 2 MB files' by at most this share plus this slack (sampling noise, the bigger spool buffers).
RSS_FLAT_SHARE = 0.5
RSS_FLAT_SLACK_MB = 20.0
RSS_TARGET = "flat in file size"
SIGN_SERVICE_P99_MS = 10.0
SIGN_CALLS = 500
BUCKET = "cws-bench-photos"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class MediaConfig:
    concurrency: int
    seconds: float
    warmup: float
    s3: bool

    @classmethod
    def from_env(cls) -> MediaConfig:
        env = os.environ.get
        return cls(
            concurrency=int(env("BENCH_MEDIA_CONCURRENCY", "16")),
            seconds=float(env("BENCH_MEDIA_SECONDS", "5")),
            warmup=float(env("BENCH_MEDIA_WARMUP", "1")),
            s3=env("BENCH_MEDIA_S3", "1") != "0",
        )


def noise_jpeg(width: int, height: int, quality: int, subsampling: int = 2) -> bytes:
    """A JPEG of coarse colour noise (random pixels at half the size, scaled up: grain like a high-ISO
    phone photo), which compresses about as badly as a detailed photo; one seed, so the same pixels
    whatever the quality."""
    from PIL import Image

    size = (width // 2, height // 2)
    grain = Image.frombytes("RGB", size, random.Random(12).randbytes(size[0] * size[1] * 3))
    image = grain.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, subsampling=subsampling)
    return out.getvalue()


def multipart(photo: bytes, filename: str = "job.jpg") -> tuple[bytes, str]:
    """The request body, built once (the client then only sends bytes), and its content type."""
    boundary = "bench" + secrets.token_hex(12)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + photo + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def _uploads(
    url: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    warmup: float,
    seconds: float,
    count: int,
) -> dict[str, Any]:
    """Closed loop for warmup + seconds (or `count` uploads per connection when seconds is 0)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    first_error = ""
    sent = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, first_error
            done = 0
            while (time.perf_counter() < stop_at) if seconds else (done < count):
                t0 = time.perf_counter()
                sent += 1
                done += 1
                try:
                    response = await client.post(url, content=body, headers=headers)
                    status = str(response.status_code)
                    if response.status_code != 201 and not first_error:
                        first_error = f"HTTP {status}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                    first_error = first_error or repr(exc)
                t1 = time.perf_counter()
                if t0 >= measure_from or not seconds:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "201":
                        latencies.append((t1 - t0) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - (measure_from if seconds else started)
    latencies.sort()
    ok = len(latencies)
    return {
        "rps": ok / wall if wall > 0 else math.nan,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "ok": ok,
        "errors": sum(statuses.values()) - ok,
        "sent": sent,
        "statuses": statuses,
        "first_error": first_error,
    }


def upload_load(
    gateway_url: str,
    token: str,
    booking_id: str,
    photo: bytes,
    concurrency: int,
    warmup: float = 0.0,
    seconds: float = 0.0,
    count: int = 1,
) -> dict[str, Any]:
    body, content_type = multipart(photo)
    headers = {"authorization": f"Bearer {token}", "content-type": content_type}
    url = f"{gateway_url}/v1/admin/bookings/{booking_id}/photos"
    return asyncio.run(_uploads(url, headers, body, concurrency, warmup, seconds, count))


def create_booking(gateway_url: str, headers: dict[str, str]) -> str:
    """One booking of the bench org, through the API, far from the seeded calendar's busy days."""
    # Within the booking horizon the bench's creates use (2-600 days ahead), on a random half hour.
    starts = time.strftime(
        f"%Y-%m-%dT%H:{random.choice(('00', '30'))}:00Z",
        time.gmtime(time.time() + 86400 * random.randint(2, 600) + 3600 * random.randint(0, 23)),
    )
    response = httpx.post(
        f"{gateway_url}/v1/admin/bookings",
        headers=headers,
        json={
            "starts_at": starts,
            "duration_minutes": 120,
            "client_name": "Bench Photo Client",
            "client_email": "bench-photos@example.com",
            "cleaning_type": "standard",
            "beds": 2,
            "baths": 1,
        },
        timeout=10,
    )
    if response.status_code != 201 and response.status_code != 200:
        raise RuntimeError(f"creating a booking: HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    return str(body.get("booking_id") or body.get("id"))


@dataclass
class MotoProc(Proc):
    port: int = 0

    def wait_ready(self, timeout: float = 60) -> MotoProc:
        def up() -> bool:
            if not self.alive:
                raise RuntimeError(f"moto server exited:\n{self.tail()}")
            return port_open("127.0.0.1", self.port)

        wait_for(up, "moto server", timeout)
        return self


def start_s3_media(exits: contextlib.ExitStack, stack: bench_stack.Stack) -> tuple[str, dict[str, int]]:
    """moto's S3 server, a bucket, a media with ORDER_STORAGE_BACKEND=r2 at it and a gateway in front:
    the gateway's URL and the pids (media-s3, moto) for the CPU meter."""
    import boto3

    port = free_port()
    moto = MotoProc(
        name="moto-s3",
        args=["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={},
        log_path=stack.log_dir / "moto-s3.log",
        port=port,
    )
    bench_stack.start_extra(exits, moto)
    moto.wait_ready()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket=BUCKET)
    media = bench_stack.media_proc(
        stack,
        label="media-s3",
        ORDER_STORAGE_BACKEND="r2",
        R2_BUCKET=BUCKET,
        R2_ACCESS_KEY=keys["aws_access_key_id"],
        R2_SECRET_KEY=keys["aws_secret_access_key"],
        R2_ENDPOINT=endpoint,
        R2_REGION="us-east-1",
    )
    bench_stack.start_extra(exits, media)
    gateway = gateway_proc(bench_stack.gateway_env(stack, media), stack.log_dir, label="gateway-s3")
    bench_stack.start_extra(exits, gateway)
    media.wait_ready()
    gateway.wait_ready()
    assert media.process and gateway.process and moto.process
    return gateway.url, {
        "media": media.process.pid,
        "gateway": gateway.process.pid,
        "moto": moto.process.pid,
    }


async def _sign_at_service(target: str, org_id: str, photo_id: str, calls: int) -> list[float]:
    from cws.media.v1 import media_pb2, media_pb2_grpc

    from tools.testkit import as_role, signing_channel

    times: list[float] = []
    async with signing_channel(target) as channel:
        stub = media_pb2_grpc.MediaServiceStub(channel)
        request = media_pb2.SignPhotoUrlRequest(photo_id=photo_id, user_agent="bench")
        for i in range(calls + 20):
            metadata = as_role(org_id, "OWNER")
            started = time.perf_counter()
            await stub.SignPhotoUrl(request, metadata=metadata)
            if i >= 20:  # the first calls warm the channel and the pool
                times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


@dataclass
class MediaBench:
    exits: contextlib.ExitStack
    stack: bench_stack.Stack
    org_id: str
    gateway_url: str
    token: str
    measure: Measure
    spec: Callable[..., dict[str, Any]]
    meter: CpuMeter
    config: MediaConfig = field(default_factory=MediaConfig.from_env)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failed: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def run(self) -> None:
        """Every row; whatever goes wrong becomes a row saying so, not an exception."""
        failed = "failed (see stderr)"
        photo = noise_jpeg(2400, 1800, 83)
        big = noise_jpeg(2400, 1800, 98, subsampling=0)
        self.notes.append(
            f"Media photos: JPEGs of colour noise at 2400x1800 (4.3 MP), {len(photo) / 1e6:.1f} MB (quality "
            f"83, 4:2:0) and {len(big) / 1e6:.1f} MB (quality 98, 4:4:4: the same pixels in a 4x bigger "
            "file, under the 10 MiB ORDER_PHOTO_MAX_BYTES)."
        )
        c = self.config.concurrency
        booking_id = ""
        try:
            booking_id = create_booking(self.gateway_url, self.headers)
        except Exception as exc:
            log(f"media: no booking to upload to: {exc!r}")
            self.failed = True
        rss_row = f"media peak RSS, {c} uploads at once, over idle"
        if booking_id:
            self._rss(booking_id, photo, big, rss_row)
        else:
            self.rows.append(Row(rss_row, None, target=RSS_TARGET, note=failed))
        photo_id = self._uploads("local", self.gateway_url, booking_id, photo, None)
        s3_name = f"upload 2 MB JPEG, S3 server via r2 backend (c={c})"
        if not self.config.s3:
            self.rows.append(Row(s3_name, None, note="skipped (BENCH_MEDIA_S3=0)"))
        elif booking_id:
            try:
                s3_gateway, s3_pids = start_s3_media(self.exits, self.stack)
                self._uploads("s3", s3_gateway, booking_id, photo, s3_pids)
            except Exception as exc:
                log(f"media S3 scenario failed: {exc!r}")
                self.failed = True
                self.rows.append(Row(s3_name, None, note=failed))
        self._signing(booking_id, photo_id)

    def _rss(self, booking_id: str, small: bytes, big: bytes, name: str) -> None:
        assert self.stack.media and self.stack.media.process
        c = self.config.concurrency
        pid = self.stack.media.process.pid
        try:
            idle = rss_mb(pid)
            growth = {}
            for label, photo in (("2 MB", small), ("8 MB", big)):
                with RssSampler({"media": pid}) as rss:
                    burst = upload_load(self.gateway_url, self.token, booking_id, photo, c, count=3)
                if burst["errors"]:
                    raise RuntimeError(f"{burst['errors']} uploads failed: {burst['first_error']}")
                growth[label] = rss.peak["media"] - idle
                self.results[f"media rss {label}"] = {**burst, "peak_mb": rss.peak["media"], "idle_mb": idle}
        except Exception as exc:
            log(f"media RSS scenario failed: {exc!r}")
            self.failed = True
            self.rows.append(Row(name, None, target=RSS_TARGET, note="failed (see stderr)"))
            return
        met = growth["8 MB"] <= growth["2 MB"] * (1 + RSS_FLAT_SHARE) + RSS_FLAT_SLACK_MB
        cell = f"+{growth['2 MB']:.0f} MB (2 MB files), +{growth['8 MB']:.0f} MB (8 MB files) over {idle:.0f} MB idle"
        log(f"media RSS: {cell}")
        self.rows.append(Row(name, None, target=f"{RSS_TARGET}: {verdict(met)}", note=cell))
        self.notes.append(
            f"Media RSS: {c} uploads at once, 3 rounds, with the 2 MB file and then the 8 MB one (the same "
            f"pixels), peak RSS sampled every 10 ms over media's RSS before its first upload ({idle:.0f} MB): "
            f"+{growth['2 MB']:.0f} MB and +{growth['8 MB']:.0f} MB (flat: the second at most "
            f"{1 + RSS_FLAT_SHARE:g} x the first + {RSS_FLAT_SLACK_MB:g} MB)."
        )

    def _uploads(
        self, backend: str, gateway_url: str, booking_id: str, photo: bytes, pids: dict[str, int] | None
    ) -> str:
        """One upload row; the id of a photo it stored (for the signing row), or ''."""
        c = self.config.concurrency
        where = "local backend" if backend == "local" else "S3 server via r2 backend"
        name = f"upload 2 MB JPEG, {where} (c={c})"
        target = "— (reported)"
        if not booking_id:
            self.rows.append(Row(name, None, target=target, note="failed (see stderr)"))
            return ""
        meter = self.meter if pids is None else CpuMeter(pids, self.stack.admin_url, self.stack.db_name)
        try:
            before = meter.snapshot()
            cpu0 = time.process_time()
            result = upload_load(
                gateway_url,
                self.token,
                booking_id,
                photo,
                c,
                warmup=self.config.warmup,
                seconds=self.config.seconds,
            )
            usage = meter.usage(before, meter.snapshot(), time.process_time() - cpu0)
        except Exception as exc:
            log(f"media {backend} uploads failed: {exc!r}")
            self.failed = True
            self.rows.append(Row(name, None, target=target, note="failed (see stderr)"))
            return ""
        if result["ok"] == 0:
            log(f"media {backend} uploads: none succeeded: {result['first_error'] or result['statuses']}")
            self.failed = True
            self.rows.append(Row(name, None, target=target, note="failed (see stderr)"))
            return ""
        result["cpu_ms_per_request"] = usage.per_request_ms(result["sent"])
        result["cpu_s"] = usage.by_name
        self.results[f"media upload {backend}"] = result
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in result["cpu_ms_per_request"].items() if v >= 0.05)
        log(
            f"media {backend} uploads: {result['rps']:.1f}/s, p50 {result['p50_ms']:.0f} ms, "
            f"p99 {result['p99_ms']:.0f} ms, {result['errors']} errors; CPU ms/upload: {cpu}"
        )
        self.rows.append(Row(name, result, target=target))
        if backend == "s3":
            moto_ms = result["cpu_ms_per_request"].get("moto", 0.0)
            self.notes.append(
                f"Media S3 row: moto's S3 server (`python -m moto.server`, its own process) as the bucket, a "
                f"second media (ORDER_STORAGE_BACKEND=r2) and a second gateway in front of it; moto spent "
                f"{moto_ms:.1f} ms CPU per upload (not in the row's CPU cell)."
            )
        photos = httpx.get(
            f"{gateway_url}/v1/admin/bookings/{booking_id}/photos", headers=self.headers, timeout=30
        )
        items = photos.json().get("items", []) if photos.status_code == 200 else []
        return str(items[0]["photo_id"]) if items else ""

    def _signing(self, booking_id: str, photo_id: str) -> None:
        name = "signed photo link, GET /v1/admin/photos/{id}/signed_url (c=1)"
        service = "signed photo link, SignPhotoUrl at media (gRPC, c=1)"
        target = f"p99 < {SIGN_SERVICE_P99_MS:g} ms at the service"
        if not photo_id:
            self.rows.append(Row(name, None, note="failed (see stderr)"))
            self.rows.append(Row(service, None, target=target, note="failed (see stderr)"))
            return
        assert self.stack.media
        try:
            consent = httpx.put(
                f"{self.gateway_url}/v1/admin/bookings/{booking_id}/photo-consent",
                headers=self.headers,
                json={"granted": True},
                timeout=10,
            )
            consent.raise_for_status()
            path = f"/v1/admin/photos/{photo_id}/signed_url"
            at_gateway = self.measure(
                "media signed_url",
                self.spec(
                    self.gateway_url,
                    self.token,
                    [{"method": "GET", "path": path}],
                    concurrency=1,
                    warmup=0,
                    duration=0,
                    warmup_requests=20,
                    requests_total=SIGN_CALLS,
                    shuffle=False,
                ),
            )
            times = asyncio.run(_sign_at_service(self.stack.media.target, self.org_id, photo_id, SIGN_CALLS))
        except Exception as exc:
            log(f"media signing scenario failed: {exc!r}")
            self.failed = True
            self.rows.append(Row(name, None, note="failed (see stderr)"))
            self.rows.append(Row(service, None, target=target, note="failed (see stderr)"))
            return
        self.rows.append(Row(name, at_gateway, target="— (reported)", note="failed (see stderr)"))
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        mean = sum(times) / len(times)
        direct = {
            "rps": 1000 / mean,
            "p50_ms": p50,
            "p99_ms": p99,
            "ok": len(times),
            "errors": 0,
            "sent": len(times),
        }
        self.results["media sign at service"] = direct
        log(f"media SignPhotoUrl at the service: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(times)} calls")
        self.rows.append(Row(service, direct, target=f"{target}: {verdict(p99 < SIGN_SERVICE_P99_MS)}"))
        self.notes.append(
            f"Signed links: consent granted first; {SIGN_CALLS} links minted one at a time at the gateway "
            f"(the load generator) and {len(times)} by calling media's SignPhotoUrl directly over loopback "
            f"gRPC, signed as the gateway signs (the service's time: the photo and consent read under RLS, "
            f"then an HMAC): p50 {p50:.2f} ms, p99 {p99:.2f} ms."
        )


def run(
    exits: contextlib.ExitStack,
    stack: bench_stack.Stack,
    org_id: str,
    gateway_url: str,
    token: str,
    *,
    measure: Measure,
    spec: Callable[..., dict[str, Any]],
    meter: CpuMeter,
) -> MediaBench:
    bench = MediaBench(exits, stack, org_id, gateway_url, token, measure, spec, meter)
    bench.run()
    return bench
