"""The suite and the baseline for one bench run, started the way the test fixtures start them
(conftest.py): Postgres from TEST_DATABASE_ADMIN_URL, else the machine's on 127.0.0.1:5432, else an
embedded one; a fresh database `cws_bench_<random>` migrated with libs.common.migrate; a private
nats-server; iam, booking, billing and gateway as real processes (billing with a Stripe key and
webhook secret of its own and STRIPE_API_BASE on a dead local port: the webhook path never calls
Stripe, and nothing else the bench does asks for Stripe), media with the local backend under the
run's work dir (ORDER_UPLOAD_ROOT) and the gateway in front of them. Everything is registered on an ExitStack,
so it is stopped and the database dropped on any exit: success, failure or Ctrl-C. Notify and the
SMTP sink it delivers to (its own process, recording each acceptance) start later, when the notify
scenarios need them (tools/bench/notify_bench.py)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Self

from libs.common.migrate import migrate
from tools.devstack import (
    ROOT,
    EmbeddedPostgres,
    NatsServer,
    drop_database,
    ensure_database,
    free_port,
    port_open,
    system_postgres_admin_url,
    wait_for,
    with_user,
)
from tools.processes import DEV_SECRETS, GatewayProc, Proc, ServiceProc, gateway_proc, service_proc

APP_ROLE = "cws_app"
BENCH_DIR = ROOT / ".run" / "bench"


@dataclass
class Stack:
    server_admin_url: str
    db_name: str
    admin_url: str  # superuser, this run's database
    app_url: str  # the runtime role cws_app, this run's database
    nats: NatsServer
    log_dir: Path
    work_dir: Path = Path()
    iam: ServiceProc | None = None
    booking: ServiceProc | None = None
    gateway: GatewayProc | None = None
    billing: ServiceProc | None = None
    baseline: BaselineProc | None = None
    notify: ServiceProc | None = None
    sink: SinkProc | None = None
    media: ServiceProc | None = None
    # Billing's STRIPE_WEBHOOK_SECRET, for signing the bench's webhooks; notify's gRPC port, chosen
    # before billing starts (billing calls notify), notify itself starting later.
    stripe_webhook_secret: str = ""
    notify_grpc_port: int = 0

    def env(self) -> dict[str, str]:
        return {
            **DEV_SECRETS,
            "APP_ENV": "test",
            "DATABASE_URL": self.app_url,
            "MIGRATIONS_DATABASE_URL": self.admin_url,
            "NATS_URL": self.nats.url,
            **self.nats.password_env(),  # service_proc and gateway_proc give each process its own
            "REDIS_URL": "",
            "LOG_LEVEL": "INFO",
            # The tests poll readiness every 0.5 s to notice faults fast; the default is enough here.
            "READINESS_INTERVAL_SECONDS": "2",
            "AUTH_ACCESS_TOKEN_TTL_MINUTES": "60",
        }


@dataclass
class BaselineProc(Proc):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def probe_url(self) -> str:
        return f"{self.url}/healthz"


@dataclass
class SinkProc(Proc):
    """tools.smtp_sink as its own process, appending one line per accepted recipient to `record`."""

    port: int = 0
    record: Path = Path()

    def wait_ready(self, timeout: float = 30) -> Self:
        def up() -> bool:
            if not self.alive:
                raise RuntimeError(f"smtp sink exited:\n{self.tail()}")
            return port_open("127.0.0.1", self.port)

        wait_for(up, "smtp sink", timeout)
        return self


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so the ExitStack stops everything and drops the DB."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


def _stop(proc: Proc) -> None:
    proc.stop(timeout=10)


def start_infrastructure(exits: contextlib.ExitStack) -> Stack:
    """Postgres (database created and migrated) and NATS; the processes come after."""
    work_dir = Path(tempfile.mkdtemp(prefix="cws-bench-"))
    exits.callback(shutil.rmtree, work_dir, ignore_errors=True)
    log_dir = BENCH_DIR / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)

    server_url = os.environ.get("TEST_DATABASE_ADMIN_URL") or system_postgres_admin_url()
    if not server_url:
        embedded = EmbeddedPostgres(work_dir / "pg" / "data").start()
        exits.callback(embedded.stop)
        server_url = embedded.admin_url
    name = f"cws_bench_{secrets.token_hex(4)}"
    exits.callback(drop_database, server_url, name)  # registered first, so it runs after the processes stop
    admin_url = ensure_database(server_url, name)
    migrate(admin_url, APP_ROLE, None)

    nats = NatsServer(work_dir / "nats" / "js").start()
    exits.callback(nats.stop)
    nats.provision_streams()
    return Stack(
        server_admin_url=server_url,
        db_name=name,
        admin_url=admin_url,
        app_url=with_user(admin_url, APP_ROLE),
        nats=nats,
        log_dir=log_dir,
        work_dir=work_dir,
    )


# The bench's photo link secret (services/media/links.py signs with it).
PHOTO_TOKEN_BENCH_SECRET = "bench-photo-token-secret-" + secrets.token_hex(16)


def media_proc(stack: Stack, label: str = "media", **overrides: str) -> ServiceProc:
    """Media beside booking, the local backend under the run's work dir unless `overrides` say
    otherwise (ORDER_STORAGE_BACKEND=r2 and R2_*: tools/bench/media_bench.py); not started."""
    assert stack.booking
    env = {
        **stack.env(),
        "BOOKING_GRPC_TARGET": stack.booking.target,
        "NOTIFY_GRPC_TARGET": f"127.0.0.1:{stack.notify_grpc_port}",
        "ORDER_STORAGE_BACKEND": "local",
        "ORDER_UPLOAD_ROOT": str(stack.work_dir / label),
        "PHOTO_TOKEN_SECRET": PHOTO_TOKEN_BENCH_SECRET,
        # As docker-compose.yml and deploy/k8s/media.yaml run it: glibc returns freed image buffers
        # (docs/media.md, "What an upload must be"), so the RSS row measures the deployed process.
        "MALLOC_MMAP_THRESHOLD_": "131072",
        **overrides,
    }
    return service_proc("media", env, stack.log_dir, label=label)


def gateway_env(stack: Stack, media: ServiceProc) -> dict[str, str]:
    assert stack.iam and stack.booking and stack.billing
    return {
        **stack.env(),
        "IAM_GRPC_TARGET": stack.iam.target,
        "BOOKING_GRPC_TARGET": stack.booking.target,
        "BILLING_GRPC_TARGET": stack.billing.target,
        "MEDIA_GRPC_TARGET": media.target,
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "LOGIN_RATE_LIMIT_PER_MINUTE": "100000",
        "GRPC_DEADLINE_SECONDS": "5",
        "GATEWAY_WORKERS": "1",
    }


def start_extra(exits: contextlib.ExitStack, proc: Proc) -> Proc:
    """A process a scenario adds (a second media and its gateway), stopped with the rest."""
    proc.start()
    exits.callback(_stop, proc)
    return proc


def start_processes(exits: contextlib.ExitStack, stack: Stack) -> None:
    """iam, booking, billing and media, then the gateway in front of them, and the baseline; returns
    once started (call wait_processes for readiness), so slow start-ups overlap with other preparation."""
    env = stack.env()
    iam = service_proc("iam", env, stack.log_dir)
    booking = service_proc("booking", env, stack.log_dir)
    stack.iam, stack.booking = iam, booking
    stack.notify_grpc_port = free_port()
    stack.stripe_webhook_secret = "whsec_bench_" + secrets.token_hex(16)
    billing = service_proc(
        "billing",
        {
            **env,
            "IAM_GRPC_TARGET": iam.target,
            "BOOKING_GRPC_TARGET": booking.target,
            "NOTIFY_GRPC_TARGET": f"127.0.0.1:{stack.notify_grpc_port}",
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": stack.stripe_webhook_secret,
            "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}",  # nobody listens there
        },
        stack.log_dir,
    )
    stack.billing = billing
    media = media_proc(stack)
    gateway = gateway_proc(gateway_env(stack, media), stack.log_dir)
    port = free_port()
    baseline = BaselineProc(
        name="baseline",
        args=["-m", "tools.bench.baseline"],
        env={
            "DATABASE_URL": stack.app_url,
            "AUTH_SECRET_KEY": env["AUTH_SECRET_KEY"],
            "BASELINE_PORT": str(port),
            "LOG_LEVEL": "WARNING",
        },
        log_path=stack.log_dir / "baseline.log",
        port=port,
    )
    for proc in (iam, booking, billing, media, gateway, baseline):
        proc.start()
        exits.callback(_stop, proc)
    stack.gateway, stack.baseline, stack.media = gateway, baseline, media


def start_sink(exits: contextlib.ExitStack, stack: Stack) -> SinkProc:
    port = free_port()
    record = stack.log_dir / "smtp-sink.accepted"
    record.unlink(missing_ok=True)
    sink = SinkProc(
        name="smtp-sink",
        args=["-m", "tools.smtp_sink", "--port", str(port), "--record", str(record)],
        env={},
        log_path=stack.log_dir / "smtp-sink.log",
        port=port,
        record=record,
    )
    sink.start()
    exits.callback(_stop, sink)
    stack.sink = sink
    return sink.wait_ready()


def start_notify(exits: contextlib.ExitStack, stack: Stack, smtp_port: int) -> ServiceProc:
    """Notify beside iam and booking, delivering email over SMTP to the sink; returns once started
    (it delivers from then on, before it reports ready)."""
    assert stack.iam and stack.booking
    notify = service_proc(
        "notify",
        {
            **stack.env(),
            "IAM_GRPC_TARGET": stack.iam.target,
            "BOOKING_GRPC_TARGET": stack.booking.target,
            "EMAIL_MODE": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "EMAIL_FROM": "bookings@cws.test",
        },
        stack.log_dir,
        grpc_port=stack.notify_grpc_port,
    )
    notify.start()
    exits.callback(_stop, notify)
    stack.notify = notify
    return notify


def wait_processes(stack: Stack, timeout: float = 90) -> float:
    started = time.monotonic()
    assert stack.iam and stack.booking and stack.billing and stack.gateway and stack.baseline and stack.media
    stack.iam.wait_ready(timeout)
    stack.booking.wait_ready(timeout)
    stack.billing.wait_ready(timeout)
    stack.media.wait_ready(timeout)
    stack.gateway.wait_ready(timeout)
    stack.baseline.wait_ready(timeout)
    return time.monotonic() - started


def pids(stack: Stack) -> dict[str, int]:
    found = {}
    for proc in (
        stack.iam,
        stack.booking,
        stack.billing,
        stack.media,
        stack.gateway,
        stack.baseline,
        stack.notify,
        stack.sink,
    ):
        if proc is not None and proc.process is not None:
            found[proc.name] = proc.process.pid
    return found
