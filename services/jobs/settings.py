from __future__ import annotations

import socket
from typing import ClassVar

from pydantic import Field, field_validator

from libs.common.settings import CommonSettings, CsvList, split_csv


class JobsSettings(CommonSettings):
    # Reported by /v1/admin/feature-flags (libs/common OpsService.GetFeatureFlags).
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ("jobs_enabled",)
    # jobs calls iam, booking, billing, media, notify and integrations (its own key) and serves the gateway (its public key).
    CALLS_SERVICES: ClassVar[bool] = True
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "jobs"
    jobs_grpc_port: int = 50056
    jobs_http_port: int = 8106
    iam_grpc_target: str = "127.0.0.1:50051"
    booking_grpc_target: str = "127.0.0.1:50052"
    billing_grpc_target: str = "127.0.0.1:50053"
    media_grpc_target: str = "127.0.0.1:50054"
    notify_grpc_target: str = "127.0.0.1:50055"
    # Empty: integrations is not deployed here (gcal-sync and qbo-sync are skipped, saying so).
    integrations_grpc_target: str = "127.0.0.1:50057"

    # Seed 002: the scheduler runs only with JOBS_ENABLED; JOB_RUNNER_ID names this runner.
    jobs_enabled: bool = False
    job_runner_id: str = Field(default_factory=socket.gethostname)
    # How often the scheduler loop wakes (heartbeat, due jobs, Better Stack ping).
    job_loop_seconds: float = Field(default=15.0, gt=0)
    # Per-job intervals overriding the registry's: "email-scan=300,cleanup=3600".
    job_schedule: CsvList = []
    # Which jobs the scheduler runs; empty = every registered job.
    job_names: CsvList = []
    job_timeout_seconds: float = Field(default=300.0, gt=0)
    # A slot whose run failed is run again after this long (by any runner), until the next slot.
    job_retry_seconds: float = Field(default=60.0, gt=0)
    # On SIGTERM, running jobs get this long to finish before they are interrupted (and say so).
    job_stop_grace_seconds: float = Field(default=10.0, ge=0)
    better_stack_heartbeat_url: str = ""
    better_stack_timeout_seconds: float = Field(default=5.0, gt=0)
    # Calls to a service for one org; a job over many orgs makes one per org.
    job_call_deadline_seconds: float = Field(default=60.0, gt=0)
    # Orgs a per-org job works on at once (each is one call to the owning service).
    job_org_concurrency: int = Field(default=4, ge=1, le=64)
    # job_runs rows (one per job per slot) and heartbeats of runners gone this long are pruned.
    job_runs_retention_days: int = Field(default=14, ge=1)
    job_heartbeat_retention_days: int = Field(default=7, ge=1)
    # How often /metrics' heartbeat and per-job figures are re-read from the database.
    job_metrics_refresh_seconds: float = Field(default=5.0, gt=0)

    @field_validator("job_schedule", "job_names", mode="before")
    @classmethod
    def _csv(cls, value: object) -> list[str]:
        return split_csv(value)

    @field_validator("job_schedule")
    @classmethod
    def _schedule_format(cls, items: list[str]) -> list[str]:
        # Names are checked against the registry at start-up (config.load_config); here the shape.
        for item in items:
            name, sep, seconds = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"JOB_SCHEDULE: {item!r} is not name=seconds")
            if not seconds.strip().isdigit() or int(seconds) <= 0:
                raise ValueError(f"JOB_SCHEDULE: {item!r}: seconds must be a positive integer")
        return items

    def intervals(self) -> dict[str, int]:
        """JOB_SCHEDULE parsed: job name -> seconds."""
        result: dict[str, int] = {}
        for item in self.job_schedule:
            name, _, seconds = item.partition("=")
            result[name.strip()] = int(seconds)
        return result
