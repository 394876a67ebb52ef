"""python -m services.jobs: the status API always, and with JOBS_ENABLED the scheduler beside it.

A bad JOB_SCHEDULE or JOB_NAMES refuses to start, naming the setting and the known jobs. The command
line that runs jobs once or on their own loop, without the API, is run.py."""

from __future__ import annotations

import libs.common.lean_start  # noqa: F401  (first: see its docstring)

# isort: split
import asyncio
from pathlib import Path

import grpc
from cws.jobs.v1 import jobs_pb2, jobs_pb2_grpc

from libs.common.grpc_server import ServiceApp, main
from services.jobs import events
from services.jobs.config import RefusedToStart, load_config
from services.jobs.execution import JobRunner
from services.jobs.grpc_api import JobsServicer
from services.jobs.locks import AdvisoryLocks
from services.jobs.metrics import JobMetrics, install
from services.jobs.models import SCHEMA, event_tables
from services.jobs.peers import Peers, open_peers
from services.jobs.scheduler import Scheduler


def build() -> ServiceApp:
    try:
        config = load_config()
    except RefusedToStart as refused:
        raise SystemExit(f"jobs: {refused}") from None
    settings = config.settings
    metrics: JobMetrics = install()

    opened: list[Peers] = []
    # One lock connection for the process: the API's runs for an org and the scheduler's share it.
    shared_locks: list[AdvisoryLocks] = []

    def register(server: grpc.aio.Server, app: ServiceApp) -> None:
        # One set of channels, opened inside the running loop, for the servicer (an org's retention
        # cleanup run on request) and the scheduler alike.
        peers = open_peers(settings)
        opened.append(peers)
        shared_locks.append(AdvisoryLocks(app.db.url))
        runner = JobRunner(app.db, peers, settings, shared_locks[0])
        jobs_pb2_grpc.add_JobsServiceServicer_to_server(
            JobsServicer(app.db, config.registered, runner), server
        )

    async def job_metrics(app: ServiceApp) -> None:
        await metrics.refresh_loop(app.db, settings.job_metrics_refresh_seconds)

    async def scheduler(app: ServiceApp) -> None:
        """With JOBS_ENABLED the scheduler; either way, the peers are closed when the process stops,
        after the scheduler's running jobs had their grace (the server drained its calls before)."""
        [peers], [locks] = opened, shared_locks
        try:
            if settings.jobs_enabled:
                runner = JobRunner(app.db, peers, settings, locks)
                await Scheduler(app.db, runner, settings, config.scheduled).run()
            else:
                await asyncio.Event().wait()  # until the process stops
        finally:
            await locks.close()
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
        background=[job_metrics, scheduler],
        consumers=events.CONSUMERS,
        service_names=(jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name,),
    )


if __name__ == "__main__":
    main(build())
