"""The floor under every read the gateway forwards: one bare gRPC hop, and the signed call context.

The read by id's ratio to the baseline is bounded by the work the suite does and the monolith does
not. This measures the two parts of it that are the architecture itself rather than our code:

- the CPU of one bare unary call between two processes with the suite's stack (grpc.aio on uvloop on
  both sides, a generic bytes handler: no interceptors, no protobuf, no database), a request and an
  answer the size of a read by id's (60 B and 700 B), 16 calls in flight as the bench's load keeps;
- the CPU of signing a call context in the gateway and checking it in the service
  (libs/common/call_signing: Ed25519 sign + verify, the body digest, the replay guard), in-process.

`ceiling(baseline_ms)` turns them into the best read ratio the suite could reach if everything else it
does per read were free: the baseline's own CPU per read (HTTP, JWT, SQL, JSON) over that plus the hop
and the signing.

    python -m tools.bench.hop_floor [--calls 20000]

The server side runs as `python -m tools.bench.hop_floor --serve PORT`, the client side as
`--client PORT --calls N`, so that each side's CPU is its own process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.bench.cpu import process_cpu
from tools.devstack import free_port

ROOT = Path(__file__).resolve().parents[2]
METHOD = "/cws.bench.v1.Hop/Echo"
REQUEST = os.urandom(60)  # a booking id and the call's framing, about a GetBooking request
ANSWER = os.urandom(700)  # about a booking's protobuf with its workers
IN_FLIGHT = 16


@dataclass(frozen=True)
class HopFloor:
    calls: int
    seconds: float
    client_ms: float  # CPU per call, the calling process
    server_ms: float  # CPU per call, the answering process
    signing_ms: float  # sign_call + CallVerifier.verify per call

    @property
    def hop_ms(self) -> float:
        return self.client_ms + self.server_ms

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else float("nan")

    def ceiling(self, baseline_ms: float) -> float:
        """The best suite/baseline read ratio on a CPU-bound machine: the baseline's CPU per read over
        the same plus one hop and one signed context, everything else the suite does taken as free."""
        return baseline_ms / (baseline_ms + self.hop_ms + self.signing_ms)

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "calls_per_second": self.calls_per_second,
            "client_ms": self.client_ms,
            "server_ms": self.server_ms,
            "hop_ms": self.hop_ms,
            "signing_ms": self.signing_ms,
        }


async def _serve(port: int) -> None:
    import grpc

    def echo(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return ANSWER

    handler = grpc.method_handlers_generic_handler(
        "cws.bench.v1.Hop",
        {"Echo": grpc.unary_unary_rpc_method_handler(echo)},  # bytes in, bytes out: no (de)serializer
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _client(port: int, calls: int) -> dict[str, float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        for _ in range(200):  # warm-up: the connection, the first streams, the event loop's caches
            await echo(REQUEST)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                answer = await echo(REQUEST)
                if len(answer) != len(ANSWER):
                    raise RuntimeError(f"the hop answered {len(answer)} bytes, not {len(ANSWER)}")

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools.bench.hop_floor", *args]


def hop_cost(calls: int = 20_000) -> tuple[float, float, float]:
    """(seconds, client CPU seconds, server CPU seconds) of `calls` bare calls, 16 in flight."""
    port = free_port()
    server = subprocess.Popen(_python("--serve", str(port)), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the hop floor's server did not start")
        before = process_cpu(server.pid) or 0.0
        done = subprocess.run(
            _python("--client", str(port), "--calls", str(calls)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        spent = (process_cpu(server.pid) or 0.0) - before
    finally:
        server.terminate()
        server.wait(10)
    client = json.loads(done.stdout)
    # The server's share includes the client's 200 warm-up calls: counted against the measured calls it
    # overstates the server by 1 % at most.
    return client["seconds"], client["cpu_s"], spent


def signing_cost_ms(calls: int = 5_000) -> float:
    """CPU ms of signing one call's context (gateway) and verifying it (service), as every call does."""
    from libs.common.call_signing import CallVerifier, body_digest, sign_call
    from libs.common.context import RequestContext
    from libs.common.internal_keys import GATEWAY, CallSigner

    signer = CallSigner.new(GATEWAY)
    verifier = CallVerifier({GATEWAY: (signer.key.public_key(),)}, max_age_seconds=60)
    ctx = RequestContext(
        org_id="7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c3a5f",
        principal_id="user:3b9d6f1a-8c2e-4a7b-9d5f-1e3c6a8b2d4f",
        role="ADMIN",
        mfa_verified=True,
        request_id="bench-hop-floor",
        client_ip="127.0.0.1",
    )
    method = "/cws.booking.v1.BookingService/GetBooking"
    started = time.process_time()
    for _ in range(calls):
        metadata = sign_call(ctx, signer, method, REQUEST)
        verifier.verify(metadata, method, body_digest(REQUEST))
    return (time.process_time() - started) / calls * 1000


def measure(calls: int | None = None) -> HopFloor:
    calls = calls or int(os.environ.get("BENCH_HOP_CALLS", "20000"))
    seconds, client_cpu, server_cpu = hop_cost(calls)
    return HopFloor(
        calls=calls,
        seconds=seconds,
        client_ms=client_cpu / calls * 1000,
        server_ms=server_cpu / calls * 1000,
        signing_ms=signing_cost_ms(),
    )


def describe(floor: HopFloor) -> str:
    return (
        f"{floor.calls:,} bare calls in {floor.seconds:.2f} s ({floor.calls_per_second:,.0f}/s): "
        f"{floor.hop_ms:.3f} ms CPU per call (client {floor.client_ms:.3f}, server {floor.server_ms:.3f}); "
        f"signed context {floor.signing_ms:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int, metavar="PORT")
    parser.add_argument("--client", type=int, metavar="PORT")
    parser.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_HOP_CALLS", "20000")))
    parser.add_argument("--baseline-ms", type=float, help="the baseline's CPU per read, for the ceiling")
    args = parser.parse_args()
    import uvloop  # as the services run

    if args.serve:
        uvloop.run(_serve(args.serve))
        return
    if args.client:
        print(json.dumps(uvloop.run(_client(args.client, args.calls))), flush=True)
        return
    floor = measure(args.calls)
    print(describe(floor), flush=True)
    if args.baseline_ms:
        print(
            f"read ratio ceiling at {args.baseline_ms} ms per baseline read: {floor.ceiling(args.baseline_ms):.2f}"
        )


if __name__ == "__main__":
    main()
