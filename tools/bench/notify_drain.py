"""A small driver for notify's backlog drain alone: a private database, the SMTP sink in its own
process, N pending email rows of one org written with one INSERT (notify_bench.insert_backlog), then
notify's own delivery loop (Delivery.deliver_due) in this process until the sink has every email.

    python -m tools.bench.notify_drain [--emails 10000] [--concurrency 16] [--runs 3] [--profile FILE]

Prints emails/s from the sink's first acceptance to its last (as the bench row counts them) and the
CPU per email of this process (notify's delivery) and of the Postgres backends of the private
database over the whole drain. Not part of `make bench`: a quick before/after check of the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("APP_ENV", "test")

from libs.common.db import Database
from libs.common.migrate import migrate
from services.notify.delivery.loop import Delivery
from services.notify.models import SCHEMA, event_tables
from services.notify.settings import NotifySettings
from tools.bench.cpu import CpuMeter, Snapshot
from tools.bench.notify_bench import AcceptLog, insert_backlog
from tools.devstack import (
    drop_database,
    ensure_database,
    free_port,
    port_open,
    system_postgres_admin_url,
    with_user,
)
from tools.processes import DEV_KEYRING, DEV_SECRETS


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.05)


async def drain(
    app_url: str, settings: NotifySettings, profile: cProfile.Profile | None, meter: CpuMeter
) -> tuple[float, float, Snapshot, Snapshot]:
    """Own CPU seconds, wall seconds, and the Postgres snapshots (taken while the pool is open)."""
    db = Database(app_url, schema=SCHEMA, tables=event_tables, pool_size=8)
    delivery = Delivery(db, settings)
    try:
        before = meter.snapshot()
        started, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        counts = await delivery.deliver_due()
        if profile:
            profile.disable()
        spent, wall = time.process_time() - started, time.perf_counter() - wall
        after = meter.snapshot()
        print(f"  delivered: {counts}", file=sys.stderr)
        return spent, wall, before, after
    finally:
        await delivery.router.close()
        await db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=0, help="OUTBOX_BATCH_SIZE (0: the default)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", default="", help="write a cProfile of the last run here")
    args = parser.parse_args()

    server = os.environ.get("TEST_DATABASE_ADMIN_URL") or system_postgres_admin_url()
    if not server:
        raise SystemExit("needs a Postgres (TEST_DATABASE_ADMIN_URL or 127.0.0.1:5432)")
    name = f"cws_drain_{secrets.token_hex(4)}"
    admin_url = ensure_database(server, name)
    work = Path(tempfile.mkdtemp(prefix="cws-drain-"))
    sink = None
    try:
        migrate(admin_url, "cws_app", None)
        app_url = with_user(admin_url, "cws_app")
        port = free_port()
        record = work / "accepted"
        sink = subprocess.Popen(
            [sys.executable, "-m", "tools.smtp_sink", "--port", str(port), "--record", str(record)],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "sink.log", "w"),  # noqa: SIM115
        )
        _wait_port(port)
        os.environ.update(DEV_SECRETS)
        if args.batch:
            os.environ["OUTBOX_BATCH_SIZE"] = str(args.batch)
        settings = NotifySettings(  # type: ignore[call-arg]
            _env_file=None,
            internal_signing_key=DEV_KEYRING.private["notify"],
            email_mode="smtp",
            smtp_host="127.0.0.1",
            smtp_port=port,
            email_from="bookings@cws.test",
            outbox_concurrency=args.concurrency,
        )
        accepted = AcceptLog(record)
        meter = CpuMeter({}, server, name)
        org = str(uuid.uuid4())
        for index in range(args.runs):
            run = secrets.token_hex(3)
            insert_backlog(admin_url, org, run, args.emails)
            with_profile = cProfile.Profile() if args.profile and index == args.runs - 1 else None
            own_cpu, wall, before, after = asyncio.run(drain(app_url, settings, with_profile, meter))
            prefix = f"bench-backlog-{run}-"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                accepted.read()
                if sum(1 for r in accepted.first if r.startswith(prefix)) >= args.emails:
                    break
                time.sleep(0.05)
            times = sorted(at for r, at in accepted.first.items() if r.startswith(prefix))
            copies = sum(n for r, n in accepted.copies.items() if r.startswith(prefix))
            window = times[-1] - times[0] if len(times) > 1 else float("nan")
            pg = sum(after.backends.get(pid, 0.0) - before.backends.get(pid, 0.0) for pid in after.backends)
            pg += sum(cpu for pid, cpu in after.backends.items() if pid not in before.backends)
            n = max(1, len(times))
            print(
                f"run {index + 1}: {len(times)}/{args.emails} accepted, {(len(times) - 1) / window:.0f} emails/s "
                f"first to last ({window:.2f} s; drain call {wall:.2f} s), {copies - len(times)} duplicates; "
                f"CPU ms/email: notify {own_cpu / n * 1000:.2f} + pg {pg / n * 1000:.2f} = "
                f"{(own_cpu + pg) / n * 1000:.2f}; machine busy {(after.machine - before.machine) / wall:.2f} cores",
                flush=True,
            )
            if with_profile:
                with_profile.dump_stats(args.profile)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        drop_database(server, name)


if __name__ == "__main__":
    main()
