"""/v1/admin/*: profile, config viewer, feature flags, break-glass and the audit log."""

from __future__ import annotations

import asyncio
from typing import Any

from cws.common.v1 import ops_pb2
from cws.iam.v1 import iam_pb2
from fastapi import APIRouter, Depends, Query
from google.protobuf.json_format import MessageToDict

from gateway.access import ADMIN, OPEN_BEFORE_PASSWORD_CHANGE, OPEN_IN_READ_ONLY
from gateway.deps import require_roles
from gateway.principal import BASIC, Principal
from gateway.problems import ProblemError
from gateway.resources import Settings
from gateway.routes import convert
from gateway.schemas import BreakGlassIn, BreakGlassOut, ProfileOut
from gateway.stubs import AllBackends, Iam
from libs.common.roles import MANAGERS, STAFF

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[ADMIN])

REDACTED = "<redacted>"
# Only these keys are ever shown; secrets among them are replaced, never echoed.
CONFIG_KEYS = (
    "app_env",
    "strict_cors",
    "cors_origins",
    "trust_proxy_headers",
    "trusted_proxy_ips",
    "trusted_proxy_cidrs",
    "rate_limit_per_minute",
    "login_rate_limit_per_minute",
    "admin_ip_allowlist_cidrs",
    "admin_read_only",
    "admin_mfa_required",
    "legacy_basic_auth_enabled",
    "auth_access_token_ttl_minutes",
    "auth_session_ttl_minutes",
    "auth_refresh_token_ttl_minutes",
    "client_portal_token_ttl_minutes",
    "metrics_enabled",
    "jobs_enabled",
    "job_heartbeat_required",
    "job_heartbeat_ttl_seconds",
    "deposits_enabled",
    "export_mode",
    "strict_policy_mode",
    "captcha_mode",
    "email_mode",
    "order_storage_backend",
    "signup_enabled",
    "default_org_id",
    "auth_secret_key",
    "auth_secret_key_previous",
    "internal_signing_key",
    "metrics_token",
    "stripe_secret_key",
    "stripe_webhook_secret",
    "turnstile_secret_key",
    "sendgrid_api_key",
    "smtp_password",
    "database_url",
    "redis_url",
    "nats_url",
)
SECRET_KEYS = frozenset(
    {
        "auth_secret_key",
        "auth_secret_key_previous",
        "internal_signing_key",
        "metrics_token",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "turnstile_secret_key",
        "sendgrid_api_key",
        "smtp_password",
        "database_url",
        "redis_url",
        "nats_url",
    }
)


@router.get(
    "/profile",
    response_model=ProfileOut,
    summary="Who you are to the API",
    # Who you are is yours to read before your temporary password is changed, too.
    dependencies=[OPEN_BEFORE_PASSWORD_CHANGE],
)
async def profile(principal: Principal = Depends(require_roles(*STAFF))) -> dict[str, Any]:
    return {
        "username": principal.username or principal.principal_id,
        "role": principal.role,
        "org_id": principal.org_id,
        "auth_method": "basic" if principal.auth_method == BASIC else "bearer",
        "mfa_verified": principal.mfa_verified,
        "principal_id": principal.principal_id,
    }


@router.get("/config", summary="Whitelisted operational settings, secrets redacted")
async def config(
    settings: Settings, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        value = getattr(settings, key, None)
        if key == "legacy_basic_auth_enabled":
            value = settings.basic_auth_enabled
        if key in SECRET_KEYS:
            value = REDACTED if value else None
        snapshot[key] = value
    return {"config": snapshot}


# Flags a service acts on are asked of that service (its FEATURE_FLAGS, over OpsService), so the
# answer is what the service does, not what the gateway's own environment happens to say.
SERVICE_FLAGS = {
    "iam": ("signup_enabled",),
    "booking": ("deposits_enabled",),
    "notify": ("export_mode",),
    "jobs": ("jobs_enabled",),
}


@router.get("/feature-flags", summary="Runtime feature flags")
async def feature_flags(
    settings: Settings, backends: AllBackends, principal: Principal = Depends(require_roles(*STAFF))
) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "strict_policy_mode": settings.strict_policy_mode,
        "captcha_mode": settings.captcha_mode,
        "admin_read_only": settings.admin_read_only,
        "admin_mfa_required": settings.admin_mfa_required,
        "legacy_basic_auth_enabled": settings.basic_auth_enabled,
    }
    owners = [b for b in backends.all() if b.name in SERVICE_FLAGS]
    answers = await asyncio.gather(
        *(b.signed_ops.GetFeatureFlags(ops_pb2.GetFeatureFlagsRequest(), timeout=2) for b in owners),
        return_exceptions=True,
    )
    unavailable = []
    for backend, answer in zip(owners, answers, strict=True):
        if isinstance(answer, ProblemError):  # that service is down or slow: say so, answer the rest
            unavailable.append(backend.name)
            flags.update(dict.fromkeys(SERVICE_FLAGS[backend.name]))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            flags.update(MessageToDict(answer.flags))
    flags["unavailable"] = unavailable
    return flags


@router.post(
    "/break-glass/start",
    response_model=BreakGlassOut,
    status_code=201,
    summary="Mint a one-time, org-scoped token that allows writes during ADMIN_READ_ONLY",
    dependencies=[OPEN_IN_READ_ONLY],
)
async def start_break_glass(
    body: BreakGlassIn, iam: Iam, principal: Principal = Depends(require_roles(*MANAGERS))
) -> dict[str, Any]:
    response = await iam.StartBreakGlass(
        iam_pb2.StartBreakGlassRequest(reason=body.reason, ttl_minutes=body.ttl_minutes)
    )
    return {
        "token": response.token,
        "expires_at": response.expires_at.ToJsonString(),
        "session_id": response.session_id,
    }


@router.get("/audit-logs", summary="The org's admin audit log, newest first")
async def audit_logs(
    iam: Iam,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    action: str = Query("", max_length=100),
    principal: Principal = Depends(require_roles(*MANAGERS)),
) -> list[dict[str, Any]]:
    response = await iam.ListAuditLogs(
        iam_pb2.ListAuditLogsRequest(limit=limit, offset=offset, action=action)
    )
    return [convert.audit(entry) for entry in response.entries]
