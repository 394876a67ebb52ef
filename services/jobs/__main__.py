"""python -m services.jobs: the status API always, and with JOBS_ENABLED the scheduler beside it.

A bad JOB_SCHEDULE or JOB_NAMES refuses to start, naming the setting and the known jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from pydantic import ValidationError

from libs.common.grpc_server import ServiceApp, main
from services.jobs.grpc_api import JobsServicer
from services.jobs.metrics import JobMetrics, install
from services.jobs.models import SCHEMA, event_tables
from services.jobs.peers import open_peers
from services.jobs.registry import Job, ScheduleError, all_jobs, scheduled_jobs
from services.jobs.runner import JobRunner
from services.jobs.scheduler import Scheduler
from services.jobs.settings import JobsSettings, explain


@dataclass(frozen=True)
class Config:
    settings: JobsSettings
    registered: list[Job]
    scheduled: list[Job]


def load_config() -> Config:
    try:
        settings = JobsSettings()
        return Config(settings, all_jobs(settings), scheduled_jobs(settings))
    except ValidationError as error:
        raise SystemExit(f"jobs: refusing to start: {explain(error)}") from None
    except ScheduleError as error:
        raise SystemExit(f"jobs: refusing to start: {error}") from None


def build() -> ServiceApp:
    config = load_config()
    settings = config.settings
    metrics: JobMetrics = install()

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        jobs_pb2_grpc.add_JobsServiceServicer_to_server(JobsServicer(app.db, config.registered), server)

    async def job_metrics(app: ServiceApp) -> None:
        await metrics.refresh_loop(app.db, settings.job_metrics_refresh_seconds)

    async def scheduler(app: ServiceApp) -> None:
        peers = open_peers(settings)
        try:
            await Scheduler(app.db, JobRunner(app.db, peers, settings), settings, config.scheduled).run()
        finally:
            await peers.close()

    return ServiceApp(
        name="jobs",
        settings=settings,
        schema=SCHEMA,
        tables=event_tables,
        migrations_dir=Path(__file__).parent / "migrations",
        grpc_port=settings.jobs_grpc_port,
        http_port=settings.jobs_http_port,
        register=register,
        background=[job_metrics, scheduler] if settings.jobs_enabled else [job_metrics],
        service_names=(jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name,),
    )


if __name__ == "__main__":
    main(build())
