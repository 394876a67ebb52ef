"""Starting the suite's own processes (services, gateway) as real OS processes, for `make dev`,
the tests and the benchmark alike."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from libs.common.internal_keys import Keyring
from tools.devstack import ROOT, free_port, nats_password_variable, wait_for

# Dev and test secrets: long enough to pass the length rules, and refused by APP_ENV=prod.
DEV_SECRETS = {
    "AUTH_SECRET_KEY": "dev-auth-secret-key-0123456789abcdef0123456789",
    "CLIENT_PORTAL_SECRET": "dev-client-portal-secret-0123456789abcdef",
    "WORKER_PORTAL_SECRET": "dev-worker-portal-secret-0123456789abcdef",
}
# Internal call keys, made afresh by every `make dev`, test session and bench run (so no private key
# is ever committed). service_proc and gateway_proc give each process its own private key and the
# public keys of its callers; tools/testkit.py signs with the same keyring.
DEV_KEYRING = Keyring.generate()


# The per-user passwords deploy/nats/nats.conf reads (NATS_IAM_PASSWORD, ...): the server's, not a process's.
NATS_USER_PASSWORDS = re.compile(r"NATS_[A-Z_]+_PASSWORD")


def own_nats_user(user: str, env: dict[str, str]) -> dict[str, str]:
    """`env` for a process of NATS user `user`: NATS_USER and NATS_PASSWORD from `user`'s entry among
    the per-user passwords, none of which the process keeps (each holds only its own)."""
    own = env.get(nats_password_variable(user))
    kept = {key: value for key, value in env.items() if not NATS_USER_PASSWORDS.fullmatch(key)}
    return kept if own is None else {**kept, "NATS_USER": user, "NATS_PASSWORD": own}


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, *self.args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    @property
    def probe_url(self) -> str:
        """What answers 200 once the process serves (`wait_ready` waits for it)."""
        raise NotImplementedError(f"{type(self).__name__} names no probe; override wait_ready")

    def wait_ready(self, timeout: float = 60) -> Self:
        """Block until `probe_url` answers 200; fail at once, with the log's tail, if the process exits.
        For sync fixtures and `make dev`; async tests await `wait_ready_async`."""

        def up() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                return httpx.get(self.probe_url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, f"{self.name} at {self.probe_url}", timeout)
        return self

    async def wait_ready_async(self, timeout: float = 60) -> Self:
        """`wait_ready` in a worker thread: the event loop, and the test's own tasks, keep running."""
        return await asyncio.to_thread(self.wait_ready, timeout)


@dataclass
class ServiceProc(Proc):
    grpc_port: int = 0
    http_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def readyz_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/readyz"

    @property
    def probe_url(self) -> str:
        return self.readyz_url


def service_proc(
    name: str,
    env: dict[str, str],
    log_dir: Path,
    grpc_port: int = 0,
    http_port: int = 0,
    label: str = "",
    keyring: Keyring = DEV_KEYRING,
) -> ServiceProc:
    """`label` names the log file when one test run starts several processes of one service. The
    service gets its own internal keys from `keyring`; `env` may override them."""
    grpc_port = grpc_port or free_port()
    http_port = http_port or free_port()
    upper = name.upper()
    full_env = {
        **keyring.env_for(name),
        **own_nats_user(name, env),
        f"{upper}_GRPC_PORT": str(grpc_port),
        f"{upper}_HTTP_PORT": str(http_port),
    }
    return ServiceProc(
        name=label or name,
        args=["-m", f"services.{name}"],
        env=full_env,
        log_path=log_dir / f"{label or name}.log",
        grpc_port=grpc_port,
        http_port=http_port,
    )


@dataclass
class GatewayProc(Proc):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def readyz_url(self) -> str:
        return f"{self.url}/readyz"

    @property
    def probe_url(self) -> str:
        # Up, not ready: a gateway may be unready by design (a stale jobs heartbeat) and still serve.
        return f"{self.url}/healthz"


def gateway_proc(
    env: dict[str, str], log_dir: Path, port: int = 0, label: str = "gateway", keyring: Keyring = DEV_KEYRING
) -> GatewayProc:
    port = port or free_port()
    return GatewayProc(
        name=label,
        args=["-m", "gateway"],
        env={**keyring.env_for("gateway"), **own_nats_user("gateway", env), "GATEWAY_PORT": str(port)},
        log_path=log_dir / f"{label}.log",
        port=port,
    )


class WebProc(GatewayProc):
    """The web console (python -m web): a client of one gateway."""


def web_proc(
    env: dict[str, str], log_dir: Path, gateway_url: str, port: int = 0, label: str = "web"
) -> WebProc:
    port = port or free_port()
    return WebProc(
        name=label,
        args=["-m", "web"],
        env={**env, "GATEWAY_URL": gateway_url, "WEB_PORT": str(port), "WEB_HOST": "127.0.0.1"},
        log_path=log_dir / f"{label}.log",
        port=port,
    )


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Block until `predicate()` is truthy: for sync tests and fixtures only. An async test waits with
    `tools.testkit.eventually`, which lets the event loop (and the test's own tasks) run meanwhile."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
