"""RFC 9457 Problem+JSON for every error the gateway returns, and the one place gRPC status codes
become HTTP status codes. No stack trace, SQL or upstream message beyond `detail` reaches a client."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import orjson
from starlette.responses import Response

from libs.common import status as rich_status

PROBLEM_BASE = "https://docs.cleanwithsnapshot.com/problems/"
MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    request_id: str = "",
    instance: str = "",
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }
    if errors:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


class ProblemError(Exception):
    """Raised anywhere in the gateway to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        grpc_code: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers
        # The status a service answered with, when this error stands for a failed call.
        self.grpc_code = grpc_code


def uuid_param(value: str, field: str) -> str:
    """A path parameter that must be a UUID, normalised; else 422 naming the field."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ProblemError(
            422,
            "invalid_argument",
            f"{field} must be a UUID",
            errors=[{"field": field, "message": "must be a UUID"}],
        ) from None


GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
    grpc.StatusCode.CANCELLED: 503,
}
# Reasons whose HTTP status differs from their gRPC code's usual mapping.
# Refusals whose HTTP status is not the gRPC code's usual one: a webhook Stripe did not sign (or not
# lately, or not as JSON) is a 400, the status webhook senders expect for a request they must not retry as is.
REASON_STATUS = {
    "signup_disabled": 403,
    "webhook_rejected": 400,
    # media (services/media/intake.py): past ORDER_PHOTO_MAX_BYTES, and content that is no allowed image.
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    # media (services/media/links.py): a genuine photo link past its expiry, or one-time and used.
    "photo_link_expired": 410,
    "photo_link_used": 410,
}


def from_grpc(error: grpc.aio.AioRpcError, service: str) -> ProblemError:
    problem = _problem_of(error, service)
    problem.grpc_code = error.code()
    return problem


def _problem_of(error: grpc.aio.AioRpcError, service: str) -> ProblemError:
    decoded = rich_status.decode(error)
    if decoded.reason.startswith("context_"):
        # The service refused the gateway's own signature: a deployment fault, not the caller's.
        return ProblemError(503, "service_unavailable", f"the {service} service refused the gateway")
    status = REASON_STATUS.get(decoded.reason) or GRPC_TO_HTTP.get(decoded.code)
    if status is None:
        return ProblemError(502, "upstream_error", f"the {service} service failed to answer")
    if status == 503 and decoded.reason:
        # The service answered and says what is away (billing: stripe_unavailable while its breaker is
        # open) and for how long: both reach the caller.
        return ProblemError(
            503,
            decoded.reason,
            decoded.detail,
            headers={"Retry-After": str(decoded.retry_after_seconds or 5)},
        )
    if status == 503:
        return ProblemError(
            503,
            "service_unavailable",
            f"the {service} service is unavailable; try again shortly",
            headers={"Retry-After": "5"},
        )
    headers = None
    if status == 429 and decoded.retry_after_seconds:
        headers = {"Retry-After": str(decoded.retry_after_seconds)}
    errors = [{"field": v.field, "message": v.description} for v in decoded.violations] or None
    return ProblemError(status, decoded.reason or "error", decoded.detail, errors=errors, headers=headers)
