"""Seed 002's job metrics on the jobs process's /metrics.

The heartbeat and per-job figures come from the database, so they describe every runner (the
scheduler here, another replica, a `--once` run) and not only this process; a background task
re-reads them every JOB_METRICS_REFRESH_SECONDS and the heartbeat's age is computed at scrape time
(by the database clock, through the offset noted at the last refresh). job_runner_up is this
process's own scheduler: 1 while its loop is healthy (heartbeat recorded, no job failed in the last
loop), 0 otherwise and when the scheduler is off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from libs.common.db import Database
from libs.common.logs import get_logger
from services.jobs.status import JobFigures, job_figures

log = get_logger(__name__)

RUNNER_UP = Gauge("job_runner_up", "1 while this process's scheduler loop is healthy, else 0")


@dataclass(eq=False)  # the registry keys collectors by identity
class JobMetrics:
    last_heartbeat: float | None = None
    clock_offset: float = 0.0  # database clock minus this machine's clock
    figures: list[JobFigures] = field(default_factory=list)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        beat = GaugeMetricFamily(
            "job_last_heartbeat_timestamp", "Unix time of the freshest job runner heartbeat"
        )
        age = GaugeMetricFamily("job_heartbeat_age_seconds", "Seconds since the freshest runner heartbeat")
        if self.last_heartbeat is not None:
            beat.add_metric([], self.last_heartbeat)
            age.add_metric([], max(time.time() + self.clock_offset - self.last_heartbeat, 0.0))
        success = GaugeMetricFamily(
            "job_last_success_timestamp", "Unix time of each job's last successful run", labels=["job"]
        )
        errors = CounterMetricFamily("job_errors", "Failed runs of each job", labels=["job"])
        for figure in self.figures:
            if figure.last_success_epoch is not None:
                success.add_metric([figure.name], figure.last_success_epoch)
            errors.add_metric([figure.name], figure.failures_total)
        yield from (beat, age, success, errors)

    async def refresh(self, db: Database) -> None:
        beat, db_now, figures = await job_figures(db)
        self.last_heartbeat, self.clock_offset, self.figures = beat, db_now - time.time(), figures

    async def refresh_loop(self, db: Database, interval: float) -> None:
        while True:
            try:
                await self.refresh(db)
            except Exception as error:  # database away: keep the last figures, the age keeps growing
                log.warning("job_metrics_refresh_failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(interval)


def install() -> JobMetrics:
    """Register the collector with the default registry the /metrics endpoint serves (once)."""
    metrics = JobMetrics()
    REGISTRY.register(metrics)
    RUNNER_UP.set(0)
    return metrics
