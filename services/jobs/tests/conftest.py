"""Fixtures for the jobs tests: the environment a runner gets (the session's real iam, booking and
notify, and billing for the jobs that call it), the CLI as a subprocess (run in a thread, so the test's
event loop is never blocked), the job tables as the admin role sees them (tools.testkit.sql), and
runner processes started and always stopped. Job tables are global (not per org), so each test clears
the rows of the jobs it counts and names its runners uniquely; heartbeats a test wrote are removed
after it, so no stale-or-fresh heartbeat leaks into another test's /readyz."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import jobs_env
from tools.devstack import ROOT
from tools.processes import Proc, ServiceProc, service_proc
from tools.testkit import sql


async def reset_jobs(stack: Any, *names: str) -> None:
    """Forget what earlier tests recorded for these jobs, so counts below are this test's own."""
    await sql(stack.admin_url, "DELETE FROM jobs.job_runs WHERE name = ANY(%s)", (list(names),))
    await sql(stack.admin_url, "DELETE FROM jobs.job_status WHERE name = ANY(%s)", (list(names),))


async def status_row(stack: Any, name: str) -> dict[str, Any] | None:
    """The job's jobs.job_status row, by column name."""
    async with await psycopg.AsyncConnection.connect(stack.admin_url, autocommit=True) as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute("SELECT * FROM jobs.job_status WHERE name = %s", (name,))
        return await cursor.fetchone()


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return log_events(self.stdout)

    def event(self, kind: str, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e.get("event") == kind and e.get("name") == name]
        assert len(found) == 1, (kind, name, self.stdout, self.stderr)
        return found[0]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class JobsEnv:
    """What a runner gets; `runner_id(label)` names one runner of this test."""

    base: dict[str, str]
    prefix: str
    stack: Any
    work_dir: Any

    def runner_id(self, label: str = "cli") -> str:
        return f"{self.prefix}-{label}"

    async def cli(self, *args: str, timeout: float = 60, **overrides: str) -> CliRun:
        """`python -m services.jobs.run ARGS` to its end."""
        env = {**self.base, "JOB_RUNNER_ID": self.runner_id(), **overrides}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.jobs.run", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliRun(done.returncode, done.stdout, done.stderr)

    def cli_loop(self, label: str, *jobs: str, **overrides: str) -> Proc:
        """`python -m services.jobs.run --job ...` without --once: the CLI's own scheduler loop."""
        env = {**self.base, "JOB_RUNNER_ID": self.runner_id(label), **overrides}
        args = ["-m", "services.jobs.run", *(arg for job in jobs for arg in ("--job", job))]
        return Proc(
            f"{self.prefix}-{label}", args, env, self.work_dir / "logs" / f"{self.prefix}-{label}.log"
        )

    def runner(self, label: str, **overrides: str) -> ServiceProc:
        """A `python -m services.jobs` process with the scheduler on; stop it (or kill it) yourself."""
        env = {
            **self.base,
            "JOBS_ENABLED": "true",
            "JOB_RUNNER_ID": self.runner_id(label),
            "JOB_METRICS_REFRESH_SECONDS": "0.3",
            **overrides,
        }
        return service_proc("jobs", env, self.work_dir / "logs", label=f"{self.prefix}-{label}")


async def _jobs_env(stack: Any, base: dict[str, str]) -> AsyncIterator[JobsEnv]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield JobsEnv(
        base={**base, "DATABASE_URL": stack.app_url}, prefix=prefix, stack=stack, work_dir=stack.work_dir
    )
    await sql(stack.admin_url, "DELETE FROM jobs.job_heartbeats WHERE runner_id LIKE %s", (prefix + "-%",))


@pytest.fixture
async def jobs_setup(stack: Any, iam: Any, booking: Any, notify: Any, media: Any) -> AsyncIterator[JobsEnv]:
    """Without billing (nor the local Stripe it needs): the jobs that call billing fail here. With
    media (MEDIA_GRPC_TARGET): storage-janitor, the quick job the scheduler tests run, calls it."""
    async for env in _jobs_env(stack, jobs_env(stack, iam, booking, notify, media=media)):
        yield env


@pytest.fixture
async def billing_jobs_setup(
    stack: Any, iam: Any, booking: Any, notify: Any, billing: Any, media: Any
) -> AsyncIterator[JobsEnv]:
    """As jobs_setup, with the session's billing too (BILLING_GRPC_TARGET): for invoices-overdue."""
    async for env in _jobs_env(stack, jobs_env(stack, iam, booking, notify, billing, media)):
        yield env


@pytest.fixture
async def integrations_jobs_setup(
    stack: Any, iam: Any, booking: Any, notify: Any, billing: Any, media: Any, integrations: Any
) -> AsyncIterator[JobsEnv]:
    """As billing_jobs_setup, with the session's integrations too (INTEGRATIONS_GRPC_TARGET, both
    providers configured against the local fakes): for gcal-sync and qbo-sync."""
    async for env in _jobs_env(stack, jobs_env(stack, iam, booking, notify, billing, media, integrations)):
        yield env


@pytest.fixture
def stopping() -> Iterator[list[Proc]]:
    """Processes a test started: stopped after it whatever happened."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.stop()
