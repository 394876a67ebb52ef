"""The floor under the notify backlog row: the SMTP exchange alone, with nothing of notify's around it.

A bare aiosmtplib client (notify's SMTP library, on uvloop as notify runs) sends to the bench's SMTP sink over as many lanes as
notify's OUTBOX_CONCURRENCY default, each lane one connection kept open, one message after another.
No database, no claim, no outcome row: what is left is the exchange itself, its client CPU in this
process, and the sink's CPU in its own. On a CPU-bound machine the backlog row cannot beat this rate,
and the two CPU figures are part of every email's cost whatever notify does.

    python -m tools.bench.smtp_floor [--mails 3000] [--lanes 16]

Standalone, it starts its own sink process; in `make bench` it runs against the bench's sink.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import uvloop

from tools.bench.cpu import process_cpu
from tools.devstack import free_port

SENDER = "floor@bench.test"
# About the size of the backlog's reminder email with its headers.
BODY = b"Hello,\r\n\r\n" + b"This is a reminder of your cleaning tomorrow. " * 8 + b"\r\n"


@dataclass(frozen=True)
class SmtpFloor:
    mails: int
    lanes: int
    seconds: float
    client_ms: float  # CPU per mail of the sending process (aiosmtplib)
    sink_ms: float  # CPU per mail of the sink's process

    @property
    def rate(self) -> float:
        return self.mails / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "mails": self.mails,
            "lanes": self.lanes,
            "rate": self.rate,
            "client_ms": self.client_ms,
            "sink_ms": self.sink_ms,
        }


def _message(recipient: str, number: int) -> bytes:
    head = (
        f"From: {SENDER}\r\nTo: {recipient}\r\nSubject: Your cleaning tomorrow\r\n"
        f"Message-ID: <floor-{number}@bench.test>\r\n\r\n"
    )
    return head.encode() + BODY


async def _lane(port: int, recipient: str, first: int, count: int) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await smtp.connect()
    try:
        for number in range(first, first + count):
            await smtp.sendmail(SENDER, [recipient], _message(recipient, number))
    finally:
        await smtp.quit()


async def _send(port: int, mails: int, lanes: int, run: str) -> float:
    per_lane = -(-mails // lanes)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _lane(
                port,
                f"floor-{run}-{lane}@bench.test",
                lane * per_lane,
                min(per_lane, mails - lane * per_lane),
            )
            for lane in range(lanes)
            if mails - lane * per_lane > 0
        )
    )
    return time.perf_counter() - started


def measure(port: int, sink_pid: int, mails: int = 3000, lanes: int = 16, run: str = "bench") -> SmtpFloor:
    """`mails` messages over `lanes` kept-open connections to the sink at `port` (process `sink_pid`)."""
    sink_before, own_before = process_cpu(sink_pid) or 0.0, time.process_time()
    seconds = uvloop.run(_send(port, mails, lanes, run))  # as notify runs
    own, sink = time.process_time() - own_before, (process_cpu(sink_pid) or 0.0) - sink_before
    return SmtpFloor(mails, lanes, seconds, own / mails * 1000, sink / mails * 1000)


def describe(floor: SmtpFloor) -> str:
    return (
        f"{floor.mails:,} mails over {floor.lanes} kept-open connections in {floor.seconds:.2f} s "
        f"({floor.rate:,.0f}/s); CPU per mail: client {floor.client_ms:.2f} ms, sink {floor.sink_ms:.2f} ms"
    )


@contextlib.contextmanager
def own_sink() -> Iterator[tuple[int, int, Path]]:
    """A sink process of its own for a standalone run: (port, pid, its record file)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        record = Path(scratch) / "accepted"
        sink = subprocess.Popen(
            [sys.executable, "-m", "tools.smtp_sink", "--port", str(port), "--record", str(record)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sink.stdout is not None
            sink.stdout.readline()  # "smtp sink listening on ...", once it listens
            yield port, sink.pid, record
        finally:
            sink.terminate()
            sink.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mails", type=int, default=3000)
    parser.add_argument("--lanes", type=int, default=16)
    args = parser.parse_args()
    with own_sink() as (port, pid, record):
        floor = measure(port, pid, args.mails, args.lanes)
        accepted = len(record.read_bytes().splitlines())
    print(f"{describe(floor)}; the sink recorded {accepted:,}", flush=True)


if __name__ == "__main__":
    main()
