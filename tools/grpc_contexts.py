"""Signed request contexts for tests that call a service over gRPC directly, as the gateway (a staff
member's JWT) or a suite service (the scheduler) would."""

from __future__ import annotations

import uuid
from typing import Any

from libs.common import context as request_context
from tools.processes import DEV_SECRETS

SECRET = DEV_SECRETS["INTERNAL_CONTEXT_SECRET"]
JWT = request_context.AuthMethod.Value("AUTH_METHOD_JWT")
Metadata = tuple[tuple[str, Any], ...]


def as_role(org_id: str, role: str) -> Metadata:
    """A signed-in staff member of `org_id` with `role`, a fresh principal and session each call."""
    ctx = request_context.RequestContext(
        org_id=org_id,
        principal_id=str(uuid.uuid4()),
        role=role,
        auth_method=JWT,  # type: ignore[arg-type]
        request_id=f"test-{uuid.uuid4().hex[:12]}",
        session_id=str(uuid.uuid4()),
    )
    return request_context.signed_metadata(ctx, SECRET)


def as_service(org_id: str, service: str = "jobs") -> Metadata:
    """A suite service acting on its own in `org_id` (AUTH_METHOD_SERVICE)."""
    return request_context.signed_metadata(request_context.service_context(service, org_id), SECRET)
