"""Tables of the jobs schema. None of them is tenant data (no org_id): they describe the scheduler
itself, so they carry no row-level security; the per-org work happens in the services that own it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB

from libs.common.db import service_metadata

SCHEMA = "jobs"
metadata, event_tables = service_metadata(SCHEMA)

# Seed 002: SELECT name, runner_id, last_heartbeat FROM job_heartbeats ORDER BY last_heartbeat DESC.
job_heartbeats = Table(
    "job_heartbeats",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("runner_id", String(200), primary_key=True),
    Column("last_heartbeat", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

job_status = Table(
    "job_status",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("last_started_at", DateTime(timezone=True), nullable=True),
    Column("last_finished_at", DateTime(timezone=True), nullable=True),
    Column("last_success_at", DateTime(timezone=True), nullable=True),
    Column("last_outcome", String(20), nullable=False, server_default=""),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("last_runner_id", String(200), nullable=False, server_default=""),
    Column("runs_total", BigInteger, nullable=False, server_default="0"),
    Column("failures_total", BigInteger, nullable=False, server_default="0"),
)

# One row per job per schedule slot: the first runner to insert it runs that slot, so two runners
# started together run each job once per schedule. A `--once` run is recorded too (trigger "once",
# slot_at = the moment it started), so the history shows what operators ran by hand.
job_runs = Table(
    "job_runs",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("slot_at", DateTime(timezone=True), primary_key=True),
    Column("runner_id", String(200), nullable=False),
    Column("trigger", String(20), nullable=False, server_default="schedule"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("outcome", String(20), nullable=False, server_default="running"),
    Column("error", Text, nullable=True),
    Column("detail", JSONB, nullable=False, server_default="{}"),
    # The scheduler prunes old runs by start time.
    Index("ix_job_runs_started_at", "started_at"),
)
