"""A real SMTP server (aiosmtpd) that keeps what it accepts: the tests', the fault tests' and the
benchmark's stand-in for a mail provider, at its network boundary.

It runs in a thread of the test process (`SmtpSink().start()`) or as its own process
(`python -m tools.smtp_sink --port N [--record FILE]`), the benchmark's, so its CPU is neither the
test process's nor notify's. With --record it appends one line per accepted recipient to FILE,
"<accept time, epoch seconds> <recipient> <Message-ID>", written at once, and parses nothing more
than that header. It can refuse mail for a while (`refuse_with = "451 ..."`), be stopped and started
again on the same port to play a provider that is down, or hold its "250 OK" for `accept_delay`
seconds after it has kept a message: the window in which a sender killed mid-send has delivered a
message it never heard was accepted (the one duplicate a crash may cause)."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tools.devstack import free_port

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", ""))

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


def _raw(envelope: Envelope) -> bytes:
    raw = envelope.original_content or envelope.content or b""
    return raw if isinstance(raw, bytes) else raw.encode()


@dataclass
class _Handler:
    sink: SmtpSink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.refuse_with:
            return self.sink.refuse_with
        raw = _raw(envelope)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        with self.sink.lock:
            self.sink.messages.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed, time.monotonic())  # type: ignore[arg-type]
            )
            number = len(self.sink.messages)
        if self.sink.save_dir is not None:
            self.sink.save_dir.mkdir(parents=True, exist_ok=True)
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{number:05d}.eml"
            (self.sink.save_dir / name).write_bytes(raw)
        if self.sink.accept_delay:
            await asyncio.sleep(self.sink.accept_delay)
        return "250 OK"


@dataclass
class SmtpSink:
    port: int = 0
    host: str = "127.0.0.1"
    refuse_with: str = ""
    # Seconds the "250 OK" waits after the message is kept (see the module docstring).
    accept_delay: float = 0.0
    # `make dev` keeps each message as an .eml file here.
    save_dir: Path | None = None
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    def start(self) -> SmtpSink:
        self.port = self.port or free_port()
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def wait_for(self, address: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """Block until `count` messages to `address` are in: for sync tests. Async tests await
        `delivered`, which lets the event loop run meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s) to {address}, got {len(self.to(address))}")

    async def delivered(self, address: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """The messages to `address` once there are at least `count` of them (`wait_for` for async tests)."""
        from tools.testkit import eventually  # test support; the sink's own process never needs it

        def enough() -> list[Received]:
            found = self.to(address)
            assert len(found) >= count, f"{len(found)} so far"
            return found

        return await eventually(enough, timeout=timeout, message=f"{count} message(s) to {address}")


@dataclass
class _Recorder:
    """The process mode's handler: one line per recipient, nothing parsed but the Message-ID."""

    out: BinaryIO

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.time()
        raw = _raw(envelope)
        found = _MESSAGE_ID.search(raw, 0, 8192)  # in the headers; no need to read the body
        message_id = found.group(1) if found else b"-"
        self.out.write(
            b"".join(f"{at:.6f} {rcpt} ".encode() + message_id + b"\n" for rcpt in envelope.rcpt_tos)
        )
        self.out.flush()
        return "250 OK"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local SMTP sink (aiosmtpd)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, help="append '<epoch> <recipient> <Message-ID>' lines here")
    args = parser.parse_args(argv)
    # SIGTERM stops it like Ctrl-C, so the benchmark's stop() is a clean exit.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out = open(args.record, "ab") if args.record else None  # noqa: SIM115
    controller: Controller | None = None
    try:
        if out is not None:
            controller = Controller(_Recorder(out), hostname="127.0.0.1", port=args.port)
            controller.start()
        else:
            controller = SmtpSink(port=args.port).start()._controller
        print(f"smtp sink listening on 127.0.0.1:{args.port}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            assert controller is not None
            controller.stop()
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
