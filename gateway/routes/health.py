"""/healthz, /readyz (seed 002's legacy keys plus checks[], one check per service) and metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from cws.jobs.v1 import jobs_pb2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import ORJSONResponse, Response
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.access import OPS
from gateway.clients import Backends
from gateway.problems import ProblemError
from gateway.resources import Bus, Revocations, Settings
from gateway.settings import GatewaySettings, constant_time_equals
from gateway.stubs import Jobs, JobsStub, backends_of

router = APIRouter(tags=["health"], dependencies=[OPS])

# /readyz answers within its own budget even when the jobs service hangs.
JOBS_CHECK_TIMEOUT = 2.0
# Readiness probes every service itself (health and ops, no context), not only its stub.
AllBackends = Annotated[Backends, Depends(backends_of)]


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _merge(name: str, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One of the services' checks (db, migrations) folded across every service."""
    per_service = {}
    for service, report in reports.items():
        found = next((c for c in report["checks"] if c.get("name") == name), None)
        per_service[service] = found or {"ok": False, "detail": {"message": "service unreachable"}}
    ok = all(check.get("ok", False) for check in per_service.values())
    return {"ok": ok, "per_service": per_service}


@router.get("/readyz", summary="Readiness: every service's database, migrations and health; job heartbeat")
async def readyz(
    all_backends: AllBackends, jobs_stub: Jobs, settings: Settings, bus: Bus, revoked: Revocations
) -> Response:
    started = time.perf_counter()
    backends = all_backends.all()
    # The heartbeat is asked beside the services' own checks, not after them.
    results, jobs = await asyncio.gather(
        asyncio.gather(*(b.readiness() for b in backends)), _jobs_check(jobs_stub, settings)
    )
    reports = dict(zip((b.name for b in backends), results, strict=True))
    elapsed = round((time.perf_counter() - started) * 1000, 2)

    db = _merge("db", reports)
    migrations = _merge("migrations", reports)
    versions = {s: c.get("detail", {}) for s, c in migrations["per_service"].items()}
    migrations_detail = {
        "message": "migrations in sync" if migrations["ok"] else "migrations pending or unknown",
        "migrations_current": migrations["ok"],
        "current_version": ",".join(f"{s}:{v.get('current_version', '')}" for s, v in versions.items()),
        "expected_head": ",".join(f"{s}:{v.get('expected_head', '')}" for s, v in versions.items()),
        "services": versions,
    }
    nats_ok = bus.is_connected
    feed_ok = revoked.live
    events_ok = nats_ok and feed_ok
    checks: list[dict[str, Any]] = [
        {
            "name": "db",
            "ok": db["ok"],
            "ms": elapsed,
            "detail": {
                "message": "database reachable" if db["ok"] else "database unreachable",
                "services": {s: c.get("ok", False) for s, c in db["per_service"].items()},
            },
        },
        {"name": "migrations", "ok": migrations["ok"], "ms": elapsed, "detail": migrations_detail},
        {"name": "jobs", "ok": jobs["ok"], "ms": 0.0, "detail": jobs},
        {
            "name": "events",
            "ok": events_ok,
            "ms": 0.0,
            "detail": {
                "message": "revocation feed live"
                if events_ok
                else "revocations checked with IAM per request",
                "nats_connected": nats_ok,
                "revocation_feed": feed_ok,
            },
        },
    ]
    for service, report in reports.items():
        serving = report["reachable"] and report["serving"]
        checks.append(
            {
                "name": f"service:{service}",
                "ok": serving,
                "ms": report["ms"],
                "detail": {
                    "reachable": report["reachable"],
                    "serving": report["serving"],
                    **({"error": report["error"]} if "error" in report else {}),
                },
            }
        )
    ok = all(check["ok"] for check in checks)
    body = {
        "ok": ok,
        "status": "ok" if ok else "error",
        "database": {
            "ok": db["ok"] and migrations["ok"],
            "reachable": db["ok"],
            "migrations_current": migrations["ok"],
            "current_version": migrations_detail["current_version"],
            "expected_head": migrations_detail["expected_head"],
        },
        "jobs": jobs,
        "checks": checks,
    }
    return ORJSONResponse(body, status_code=200 if ok else 503)


async def _jobs_check(jobs: JobsStub, settings: GatewaySettings) -> dict[str, Any]:
    """Seed 002: with JOBS_ENABLED or JOB_HEARTBEAT_REQUIRED, ready only while the freshest runner
    heartbeat (asked of the jobs service, aged by the database clock) is younger than the TTL."""
    enabled = settings.jobs_enabled or settings.job_heartbeat_required
    if not enabled:
        return {"ok": True, "enabled": False, "message": "job heartbeat check disabled"}
    ttl = settings.job_heartbeat_ttl_seconds
    report: dict[str, Any] = {
        "ok": False,
        "enabled": True,
        "runner_id": None,
        "last_heartbeat": None,
        "age_seconds": None,
        "ttl_seconds": ttl,
    }
    try:
        response = await jobs.GetHeartbeat(jobs_pb2.GetHeartbeatRequest(), timeout=JOBS_CHECK_TIMEOUT)
    except ProblemError as error:
        code = error.grpc_code.name if error.grpc_code else "UNKNOWN"
        return {**report, "message": f"jobs service unreachable: {code}"}
    if not response.found:
        return {**report, "message": "no job runner heartbeat recorded"}
    beat = response.heartbeat
    age = round(beat.age_seconds, 3)
    fresh = age < ttl
    return {
        **report,
        "ok": fresh,
        "runner_id": beat.runner_id,
        # Whole seconds, as seed 002 shows it: "2026-01-06T12:34:56Z".
        "last_heartbeat": Timestamp(seconds=beat.last_heartbeat.seconds).ToJsonString(),
        "age_seconds": age,
        "message": "job runner heartbeat fresh"
        if fresh
        else f"job runner heartbeat stale: {age:.0f}s old, TTL {ttl}s",
    }


def _metrics(request: Request, settings: GatewaySettings) -> Response:
    if not settings.metrics_enabled:
        raise ProblemError(404, "not_found", "metrics are disabled (METRICS_ENABLED=false)")
    if settings.metrics_token:
        header = request.headers.get("authorization", "")
        if not constant_time_equals(header, f"Bearer {settings.metrics_token}"):
            raise ProblemError(
                401,
                "unauthenticated",
                "metrics need Authorization: Bearer <METRICS_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics", summary="Prometheus metrics (METRICS_TOKEN bearer)", include_in_schema=True)
async def metrics(request: Request, settings: Settings) -> Response:
    return _metrics(request, settings)


@router.get("/v1/metrics", summary="Prometheus metrics (METRICS_TOKEN bearer)")
async def v1_metrics(request: Request, settings: Settings) -> Response:
    return _metrics(request, settings)
