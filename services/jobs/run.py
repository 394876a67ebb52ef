"""The jobs command line: python -m services.jobs.run --job NAME [--job NAME ...] [--once]

This module is only the command line, a contract operators and seed 004 rely on (its arguments,
log events and exit codes); what it runs is execution.py (one job: lock, claim, calls, record) and,
without --once, scheduler.py. `python -m services.jobs` is the service with the status API.

With --once: record a heartbeat, run each job now (under its lock, no slot claim), log
`job_complete` / `job_skipped` / `job_failed` for each, and exit 0 when every job succeeded or was
skipped, 1 if any failed. Without --once: run those jobs on their schedules, with heartbeats, until
SIGTERM or SIGINT. Needs DATABASE_URL, IAM_GRPC_TARGET, BOOKING_GRPC_TARGET, NOTIFY_GRPC_TARGET and
the jobs process's INTERNAL_SIGNING_KEY (it calls as "jobs"); gcal-sync and qbo-sync call
INTEGRATIONS_GRPC_TARGET (empty: skipped, integrations not deployed). Beside `make dev`, with APP_ENV unset or
dev, what the environment lacks comes from .run/dev.env and .run/keys/jobs.env (use_dev_env), so seed
004's line runs as written in a second shell.
An unknown job name is a usage error (exit 2) listing the known jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import httpx
import uvloop

from libs.common.db import Database
from libs.common.logs import configure_logging, get_logger
from libs.common.settings import use_dev_env
from services.jobs import heartbeats
from services.jobs.config import RefusedToStart, load_config
from services.jobs.execution import FAILED, SKIPPED, JobRunner, RunResult, describe
from services.jobs.models import SCHEMA, event_tables
from services.jobs.peers import open_peers
from services.jobs.registry import JOB_NAMES, Job
from services.jobs.scheduler import Scheduler
from services.jobs.settings import JobsSettings

log = get_logger(__name__)


def parser() -> argparse.ArgumentParser:
    parsed = argparse.ArgumentParser(
        prog="python -m services.jobs.run", description="Run scheduled jobs once, or on their schedules."
    )
    parsed.add_argument(
        "--job",
        action="append",
        required=True,
        choices=JOB_NAMES,
        metavar="NAME",
        help=f"a job to run (repeatable); one of: {', '.join(JOB_NAMES)}",
    )
    parsed.add_argument("--once", action="store_true", help="run each job now and exit")
    return parsed


async def run_once(settings: JobsSettings, jobs: list[Job]) -> int:
    db = Database(
        settings.database_url,
        schema=SCHEMA,
        tables=event_tables,
        # A run's org fan-out (JOB_ORG_CONCURRENCY) holds short units at once: two steady, two more
        # for a burst, as before the pool defaults changed.
        pool_size=2,
        max_overflow=2,
        statement_timeout_ms=settings.database_statement_timeout_ms,
    )
    peers = open_peers(settings)
    runner = JobRunner(db, peers, settings)
    results: list[RunResult] = []
    try:
        try:
            await heartbeats.beat(db, settings.job_runner_id)
        except Exception as error:  # the jobs below will say what is wrong with the database too
            log.error("heartbeat_failed", error=describe(error))
        for job in jobs:
            try:
                results.append(await runner.run_once(job))
            except Exception as error:  # the lock or the record could not be taken: nothing ran
                log.error("job_failed", name=job.name, outcome=FAILED, error=describe(error))
                results.append(RunResult(job.name, FAILED, error=describe(error)))
        failed = [r.name for r in results if r.outcome == FAILED]
        if not failed and settings.better_stack_heartbeat_url:
            async with httpx.AsyncClient(timeout=settings.better_stack_timeout_seconds) as http:
                await heartbeats.ping_better_stack(http, settings.better_stack_heartbeat_url)
        log.info(
            "jobs_run_finished",
            runner_id=settings.job_runner_id,
            ok=[r.name for r in results if r.outcome not in (FAILED, SKIPPED)],
            skipped=[r.name for r in results if r.outcome == SKIPPED],
            failed=failed,
        )
        return 1 if failed else 0
    finally:
        await runner.locks.close()
        await peers.close()
        await db.dispose()


async def run_loop(settings: JobsSettings, jobs: list[Job]) -> int:
    db = Database(
        settings.database_url,
        schema=SCHEMA,
        tables=event_tables,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
        statement_timeout_ms=settings.database_statement_timeout_ms,
    )
    peers = open_peers(settings)
    runner = JobRunner(db, peers, settings)
    task = asyncio.create_task(Scheduler(db, runner, settings, jobs).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0
    finally:
        await runner.locks.close()
        await peers.close()
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    use_dev_env("jobs")
    try:
        config = load_config(args.job)
    except RefusedToStart as refused:
        cli.error(str(refused))  # exits 2, after the usage line
    settings, jobs = config.settings, config.scheduled
    configure_logging("jobs", settings.log_level)
    return uvloop.run(run_once(settings, jobs) if args.once else run_loop(settings, jobs))


if __name__ == "__main__":
    sys.exit(main())
