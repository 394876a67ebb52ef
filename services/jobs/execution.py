"""Executing one job (for the scheduler and for the CLI's --once): the lock, the slot claim, the calls,
and the record of what happened. (run.py is the command line; this module is what it runs.)

- Two runners never run the same job at once: a run holds a Postgres session-level advisory lock
  (pg_try_advisory_lock) for its whole length, on the process's one lock connection (locks.py). The
  lock goes when the run ends, or when that connection dies with its runner, so a runner killed
  mid-job never blocks the next one.
- Two runners started together run each job once per schedule: the scheduler claims the slot
  (floor(now / interval) * interval, by the database clock) by inserting it into job_runs; only the
  runner whose insert went in runs that slot. A slot whose run failed is retried, by whichever
  runner comes first, once JOB_RETRY_SECONDS have passed (a daily job that failed at start-up does
  not wait for tomorrow); the retry reuses the slot's row, so a slot still has one row.
- A `--once` run claims no slot, but still takes the lock: while another runner is running the
  job, `--once` reports it skipped ("another runner is running this job") and exits 0, since the
  work it asked for is being done; nothing is recorded for it.
- A runner that dies mid-job leaves nothing the next run cannot finish: a job is a series of
  idempotent service calls (one per org), each committed by the service that owns the data. A killed
  run leaves its job_runs row "running" and job_status's last_started_at after last_finished_at;
  the next scheduler to take the job's lock knows that run is dead (it would hold the lock
  otherwise), takes the slot over and runs the whole job again, finishing whatever the dead one did
  not reach.
- A job whose orgs are locked one by one (Job.org_locked: the retention cleanup) also holds a lock
  of the org's while it works in it; a run for one org now (JobRunner.run_for_org, an admin's
  POST /v1/admin/retention/cleanup) takes only that org's lock, so it waits for the scheduled run's
  share of its own org, not for the whole walk, and the scheduled run passes over an org that is
  being cleaned at that moment (counted `orgs_busy`; the run for that org does the same work).
- One org failing does not stop the others; the job then counts as failed, its error naming how
  many orgs failed and with what status codes (never their ids: job status is shown to every org's
  admins), while the log carries each org's id and error.
- A job that cannot run here at all is skipped, saying why: its precondition (Job.precondition, e.g.
  integrations not deployed) is asked before any call, and a per-org job's conclusion
  (Job.conclude) may find, from the run's detail, that every org was skipped for a reason the whole
  installation shares (a provider not configured); the detail is kept with the skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from sqlalchemy import text

from libs.common.context import service_context
from libs.common.db import Database, unit_of_work
from libs.common.grpc_client import acting_as
from libs.common.logs import get_logger
from services.jobs.locks import AdvisoryLocks
from services.jobs.peers import Peers
from services.jobs.registry import Job, JobSkipped
from services.jobs.settings import JobsSettings

log = get_logger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
LOCKED_REASON = "another runner is running this job"


class NotRun(enum.Enum):
    LOCKED = "locked"  # another runner holds the job's lock: try again next loop
    TAKEN = "taken"  # this slot ran already (ok or skipped)
    RETRY_LATER = "retry_later"  # this slot failed less than JOB_RETRY_SECONDS ago


@dataclass
class RunResult:
    name: str
    outcome: str
    duration_seconds: float = 0.0
    detail: dict[str, int] = field(default_factory=dict)
    error: str = ""


class JobFailed(Exception):
    def __init__(self, message: str, detail: dict[str, int]) -> None:
        super().__init__(message)
        self.detail = detail


def lock_key(name: str) -> str:
    """The text whose 64-bit hash (hashtextextended) is the job's advisory lock key."""
    return f"cws.jobs:{name}"


def org_lock_key(name: str, org_id: str) -> str:
    """The advisory lock text of one org's share of an org-locked job."""
    return lock_key(f"{name}:org:{org_id}")


def describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details() or ''}".strip()
    return f"{type(error).__name__}: {error}"


def code_of(error: BaseException) -> str:
    return error.code().name if isinstance(error, grpc.aio.AioRpcError) else type(error).__name__


class JobRunner:
    def __init__(
        self, db: Database, peers: Peers, settings: JobsSettings, locks: AdvisoryLocks | None = None
    ) -> None:
        self.db = db
        self.peers = peers
        self.settings = settings
        self.runner_id = settings.job_runner_id
        # One lock connection per process: the runners of a process share it (services/jobs/locks.py).
        self.locks = locks or AdvisoryLocks(db.url)

    async def run_once(self, job: Job) -> RunResult:
        """`--once`: run now, under the lock, without a slot claim."""
        async with self._lock(job.name) as held:
            if not held:
                log.info("job_skipped", name=job.name, reason=LOCKED_REASON, runner_id=self.runner_id)
                return RunResult(job.name, SKIPPED, error=LOCKED_REASON)
            slot_at = await self._record_once(job.name)
            return await self._execute(job, slot_at, "once")

    async def run_for_org(self, job: Job, org_id: str) -> RunResult:
        """One org's share of an org-locked job, now, under that org's lock only (not the job's):
        recorded as a run of the job. `job` is narrowed to the org by the caller (it acts in it)."""
        async with self._lock_on(org_lock_key(job.name, org_id)) as held:
            if not held:
                log.info("job_skipped", name=job.name, reason=LOCKED_REASON, runner_id=self.runner_id)
                return RunResult(job.name, SKIPPED, error=LOCKED_REASON)
            slot_at = await self._record_once(job.name)
            return await self._execute(job, slot_at, "once")

    async def run_slot(self, job: Job, slot_epoch: int) -> RunResult | NotRun:
        """The scheduler's run of one slot: lock, then claim, then run (or not, if either is taken)."""
        async with self._lock(job.name) as held:
            if not held:
                return NotRun.LOCKED
            claimed = await self._claim(job.name, slot_epoch)
            if isinstance(claimed, NotRun):
                return claimed
            return await self._execute(job, claimed, "schedule")

    def _lock(self, name: str) -> contextlib.AbstractAsyncContextManager[bool]:
        return self._lock_on(lock_key(name))

    def _lock_on(self, key: str) -> contextlib.AbstractAsyncContextManager[bool]:
        # On the process's lock connection, outside the pool: a pooled connection can never carry a
        # forgotten lock into someone else's hands.
        return self.locks.hold(key)

    @contextlib.asynccontextmanager
    async def _org_share(self, job: Job, org_id: str) -> AsyncIterator[bool]:
        """Held (True) when the org's share may run: always for a job that is not org-locked."""
        if not job.org_locked:
            yield True
            return
        async with self._lock_on(org_lock_key(job.name, org_id)) as held:
            yield held

    async def _claim(self, name: str, slot_epoch: int) -> datetime | NotRun:
        """Insert the slot's row, or take over the row of a run of it that failed JOB_RETRY_SECONDS
        ago or more, or that is still "running": we hold the job's lock, so its runner is dead."""
        async with unit_of_work(self.db) as uow:
            claimed = (
                await uow.session.execute(
                    text(
                        "INSERT INTO jobs.job_runs AS r (name, slot_at, runner_id, trigger)"
                        " VALUES (:name, to_timestamp(:slot), :runner, 'schedule')"
                        " ON CONFLICT (name, slot_at) DO UPDATE SET runner_id = EXCLUDED.runner_id,"
                        "   started_at = now(), finished_at = NULL, outcome = 'running', error = NULL,"
                        "   detail = '{}'"
                        " WHERE r.outcome = 'running' OR (r.outcome = 'failed'"
                        "   AND r.finished_at < now() - make_interval(secs => :retry))"
                        " RETURNING slot_at"
                    ),
                    {
                        "name": name,
                        "slot": slot_epoch,
                        "runner": self.runner_id,
                        "retry": self.settings.job_retry_seconds,
                    },
                )
            ).scalar_one_or_none()
            if claimed is not None:
                return claimed  # type: ignore[no-any-return]
            outcome = (
                await uow.session.execute(
                    text(
                        "SELECT outcome FROM jobs.job_runs WHERE name = :name AND slot_at = to_timestamp(:slot)"
                    ),
                    {"name": name, "slot": slot_epoch},
                )
            ).scalar_one_or_none()
        return NotRun.RETRY_LATER if outcome == FAILED else NotRun.TAKEN

    async def _record_once(self, name: str) -> datetime:
        async with unit_of_work(self.db) as uow:
            return (
                await uow.session.execute(
                    text(
                        "INSERT INTO jobs.job_runs (name, slot_at, runner_id, trigger)"
                        " VALUES (:name, clock_timestamp(), :runner, 'once') RETURNING slot_at"
                    ),
                    {"name": name, "runner": self.runner_id},
                )
            ).scalar_one()

    async def _execute(self, job: Job, slot_at: datetime, trigger: str) -> RunResult:
        started = time.perf_counter()
        result = RunResult(job.name, OK)
        try:
            await self._started(job.name)
            async with asyncio.timeout(self.settings.job_timeout_seconds):
                result.detail = await self._work(job)
        except JobSkipped as skipped:
            result.outcome, result.error, result.detail = SKIPPED, skipped.reason, skipped.detail
        except JobFailed as failed:
            result.outcome, result.error, result.detail = FAILED, str(failed), failed.detail
        except TimeoutError:
            result.outcome = FAILED
            result.error = f"timed out after {self.settings.job_timeout_seconds:g}s (JOB_TIMEOUT_SECONDS)"
        except asyncio.CancelledError:
            result.outcome, result.error = FAILED, "interrupted: the runner was stopped mid-job"
            result.duration_seconds = round(time.perf_counter() - started, 3)
            await self._finished(result, slot_at, trigger)
            raise
        except Exception as error:  # a call that failed outright (not per org): the job failed
            result.outcome, result.error = FAILED, describe(error)[:500]
        result.duration_seconds = round(time.perf_counter() - started, 3)
        await self._finished(result, slot_at, trigger)
        return result

    async def _work(self, job: Job) -> dict[str, int]:
        if job.precondition is not None:
            job.precondition(self.peers)
        if not job.per_org:
            with acting_as(service_context("jobs")):
                return await job.run(self.peers)
        totals: Counter[str] = Counter()
        failures: list[str] = []
        orgs = 0
        gate = asyncio.Semaphore(self.settings.job_org_concurrency)

        async def one(org_id: str) -> None:
            try:
                async with self._org_share(job, org_id) as held:
                    if not held:  # a run for this org alone is doing this very work now
                        totals.update({"orgs_busy": 1})
                        return
                    with acting_as(service_context("jobs", org_id)):
                        totals.update(await job.run(self.peers))
            except Exception as error:  # one org failing must not stop the others
                failures.append(code_of(error))
                log.warning("job_org_failed", name=job.name, org_id=org_id, error=describe(error))
            finally:
                gate.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            async for org_id in self.peers.org_ids():
                await gate.acquire()
                orgs += 1
                tasks.append(asyncio.create_task(one(org_id)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        detail = {"orgs": orgs, "orgs_failed": len(failures), **totals}
        if failures:
            codes = ", ".join(f"{code} x{n}" for code, n in Counter(failures).most_common())
            raise JobFailed(f"{len(failures)} of {orgs} orgs failed ({codes})", detail)
        if job.conclude is not None:
            job.conclude(detail)
        return detail

    async def _started(self, name: str) -> None:
        async with unit_of_work(self.db) as uow:
            await uow.session.execute(
                text(
                    "INSERT INTO jobs.job_status (name, last_started_at, last_runner_id)"
                    " VALUES (:name, now(), :runner)"
                    " ON CONFLICT (name) DO UPDATE"
                    " SET last_started_at = now(), last_runner_id = EXCLUDED.last_runner_id"
                ),
                {"name": name, "runner": self.runner_id},
            )

    async def _finished(self, result: RunResult, slot_at: datetime, trigger: str) -> None:
        params = {
            "name": result.name,
            "outcome": result.outcome,
            "error": result.error or None,
            "runner": self.runner_id,
            "slot_at": slot_at,
            "detail": json.dumps(result.detail),
        }
        async with unit_of_work(self.db) as uow:
            # The row normally exists since the start; not if the start itself was interrupted.
            await uow.session.execute(
                text("INSERT INTO jobs.job_status (name) VALUES (:name) ON CONFLICT (name) DO NOTHING"),
                params,
            )
            await uow.session.execute(
                text(
                    "UPDATE jobs.job_status SET"
                    " last_finished_at = now(),"
                    " last_outcome = CAST(:outcome AS text),"
                    " last_runner_id = :runner,"
                    " runs_total = runs_total + 1,"
                    " failures_total = failures_total"
                    "   + CASE WHEN CAST(:outcome AS text) = 'failed' THEN 1 ELSE 0 END,"
                    " consecutive_failures = CASE CAST(:outcome AS text)"
                    "   WHEN 'failed' THEN consecutive_failures + 1"
                    "   WHEN 'ok' THEN 0 ELSE consecutive_failures END,"
                    " last_success_at = CASE WHEN CAST(:outcome AS text) = 'ok'"
                    "   THEN now() ELSE last_success_at END,"
                    " last_error = CASE CAST(:outcome AS text)"
                    "   WHEN 'failed' THEN CAST(:error AS text)"
                    "   WHEN 'ok' THEN NULL ELSE last_error END"
                    " WHERE name = :name"
                ),
                params,
            )
            await uow.session.execute(
                text(
                    "UPDATE jobs.job_runs SET finished_at = now(), outcome = :outcome,"
                    " error = :error, detail = CAST(:detail AS jsonb)"
                    " WHERE name = :name AND slot_at = :slot_at"
                ),
                params,
            )
        fields = {
            "name": result.name,
            "outcome": result.outcome,
            "duration_seconds": result.duration_seconds,
            "detail": result.detail,
            "trigger": trigger,
            "runner_id": self.runner_id,
        }
        if result.outcome == OK:
            log.info("job_complete", **fields)
        elif result.outcome == SKIPPED:
            log.info("job_skipped", reason=result.error, **fields)
        else:
            log.error("job_failed", error=result.error, **fields)
