"""What a jobs process starts with (the service and the command line alike): its settings and the
jobs they select, or the one-line reason it refuses to start."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from libs.common.settings import explain
from services.jobs.registry import Job, ScheduleError, all_jobs, scheduled_jobs
from services.jobs.settings import JobsSettings


class RefusedToStart(Exception):
    """Settings, JOB_SCHEDULE, JOB_NAMES or --job that cannot run; the message says which and why."""


@dataclass(frozen=True)
class Config:
    settings: JobsSettings
    # Every registered job with its effective interval (the status view lists even those not run).
    registered: list[Job]
    # The jobs this process runs: `names` (the CLI's --job), else JOB_NAMES, else every job.
    scheduled: list[Job]


def load_config(names: Sequence[str] = ()) -> Config:
    try:
        settings = JobsSettings()
        return Config(settings, all_jobs(settings), scheduled_jobs(settings, names))
    except ValidationError as error:
        raise RefusedToStart(f"refusing to start: {explain(error)}") from None
    except ScheduleError as error:
        raise RefusedToStart(f"refusing to start: {error}") from None
