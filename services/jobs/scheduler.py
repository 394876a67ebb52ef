"""The scheduler loop: every JOB_LOOP_SECONDS it records the heartbeat, starts the jobs whose
schedule slot has come (each in its own task, so a long job never holds up the heartbeat), and after
a healthy loop (heartbeat recorded, no job failed in it) pings BETTER_STACK_HEARTBEAT_URL.

A slot is floor(db_now / interval) * interval by the database clock, so every runner computes the
same slots; execution.JobRunner makes sure only one of them runs each."""

from __future__ import annotations

import asyncio
import math
import time

import httpx

from libs.common.db import Database
from libs.common.logs import get_logger
from services.jobs import heartbeats
from services.jobs.execution import FAILED, JobRunner, NotRun, RunResult
from services.jobs.metrics import RUNNER_UP
from services.jobs.registry import Job
from services.jobs.settings import JobsSettings

log = get_logger(__name__)

PRUNE_EVERY_SECONDS = 3600.0


class Scheduler:
    def __init__(self, db: Database, runner: JobRunner, settings: JobsSettings, jobs: list[Job]) -> None:
        self.db = db
        self.runner = runner
        self.settings = settings
        self.jobs = jobs
        # The slot each job was last run (or found taken) for, so a slot is tried once per runner.
        self._done_slot: dict[str, int] = {}
        self._running: dict[str, asyncio.Task[RunResult | NotRun]] = {}
        self._slots: dict[str, int] = {}
        # A job whose slot failed waits (monotonic clock) before that slot is tried again.
        self._retry_at: dict[str, tuple[int, float]] = {}
        self._pruned_at = 0.0

    async def run(self) -> None:
        """Loop until cancelled (SIGTERM stops the process's tasks)."""
        log.info(
            "scheduler_started",
            runner_id=self.runner.runner_id,
            jobs={job.name: job.interval_seconds for job in self.jobs},
            loop_seconds=self.settings.job_loop_seconds,
        )
        starting = True
        async with httpx.AsyncClient(timeout=self.settings.better_stack_timeout_seconds) as http:
            try:
                while True:
                    tick = time.monotonic()
                    try:
                        beat_ok = await self._beat_and_start(starting)
                        starting = starting and not beat_ok
                        failed = await self._collect(until=tick + self.settings.job_loop_seconds)
                    except Exception as error:  # never let one bad loop end the scheduler
                        log.exception("scheduler_loop_failed", error=f"{type(error).__name__}: {error}")
                        RUNNER_UP.set(0)
                        await asyncio.sleep(max(tick + self.settings.job_loop_seconds - time.monotonic(), 0))
                        continue
                    healthy = beat_ok and not failed
                    RUNNER_UP.set(1 if healthy else 0)
                    if healthy and self.settings.better_stack_heartbeat_url:
                        await heartbeats.ping_better_stack(http, self.settings.better_stack_heartbeat_url)
                    await self._prune()
            finally:
                RUNNER_UP.set(0)
                await self._stop_running()
                log.info("scheduler_stopped", runner_id=self.runner.runner_id)

    async def _stop_running(self) -> None:
        """Let running jobs finish within JOB_STOP_GRACE_SECONDS, then interrupt the rest (which
        record the interruption): a deploy's SIGTERM rarely cuts a job in half."""
        running = set(self._running.values())
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=self.settings.job_stop_grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _beat_and_start(self, starting: bool) -> bool:
        try:
            db_now = await heartbeats.beat(self.db, self.runner.runner_id, starting=starting)
        except Exception as error:  # database away: no heartbeat, no jobs; try again next loop
            log.error("heartbeat_failed", error=f"{type(error).__name__}: {error}")
            return False
        for job in self.jobs:
            slot = math.floor(db_now / job.interval_seconds) * job.interval_seconds
            if job.name in self._running or self._done_slot.get(job.name) == slot:
                continue
            failed_slot, retry_at = self._retry_at.get(job.name, (None, 0.0))
            if failed_slot == slot and time.monotonic() < retry_at:
                continue
            self._slots[job.name] = slot
            self._running[job.name] = asyncio.create_task(
                self.runner.run_slot(job, slot), name=f"job-{job.name}"
            )
        return True

    async def _collect(self, until: float) -> bool:
        """Wait out the loop, then take the results of the runs that ended; True if one failed."""
        if self._running:
            await asyncio.wait(set(self._running.values()), timeout=max(until - time.monotonic(), 0))
        await asyncio.sleep(max(until - time.monotonic(), 0))
        failed = False
        for name, task in list(self._running.items()):
            if not task.done():
                continue
            del self._running[name]
            slot = self._slots.pop(name)
            try:
                result = task.result()
            except Exception as error:  # the run could not even start (lock or claim failed)
                failed = True
                log.error("job_run_error", name=name, error=f"{type(error).__name__}: {error}")
                continue
            if result is NotRun.LOCKED:
                continue  # another runner is on it; this slot is tried again next loop
            if result is NotRun.RETRY_LATER or (isinstance(result, RunResult) and result.outcome == FAILED):
                # Not done: the slot is run again after JOB_RETRY_SECONDS (execution.JobRunner._claim).
                failed = failed or isinstance(result, RunResult)
                self._retry_at[name] = (slot, time.monotonic() + self.settings.job_retry_seconds)
                continue
            self._done_slot[name] = slot
            self._retry_at.pop(name, None)
        return failed

    async def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        try:
            runs, beats = await heartbeats.prune(
                self.db,
                runs_days=self.settings.job_runs_retention_days,
                heartbeat_days=self.settings.job_heartbeat_retention_days,
            )
            if runs or beats:
                log.info("jobs_pruned", job_runs=runs, heartbeats=beats)
        except Exception as error:  # pruning is housekeeping: try again in an hour
            log.warning("jobs_prune_failed", error=f"{type(error).__name__}: {error}")
