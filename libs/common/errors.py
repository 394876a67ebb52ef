"""One error root for every service. Each error has a machine-readable `code`, and is mapped once
per protocol: to a gRPC status here (libs/common/grpc_server.py) and to Problem+JSON in the gateway."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_code = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        violations: list[FieldViolation] | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.violations = violations or []
        self.retry_after_seconds = retry_after_seconds


class NotFound(ServiceError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    default_code = "not_found"


class Conflict(ServiceError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    default_code = "conflict"


class InvalidArgument(ServiceError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    default_code = "invalid_argument"

    @classmethod
    def of(cls, problems: list[FieldViolation], *, code: str | None = None) -> InvalidArgument:
        """One error for every field problem found: the detail lists them all, `errors[]` names each."""
        detail = "; ".join(f"{p.field} {p.description}" for p in problems)
        return cls(detail, code=code, violations=list(problems))


class Unauthenticated(ServiceError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    default_code = "unauthenticated"


class PermissionDenied(ServiceError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    default_code = "permission_denied"


class FailedPrecondition(ServiceError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    default_code = "failed_precondition"


class ResourceExhausted(ServiceError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_code = "too_many_requests"


class PayloadTooLarge(ServiceError):
    """A body past its size limit (the gateway answers 413 by its code). OUT_OF_RANGE, not
    RESOURCE_EXHAUSTED: that one means "too many requests, retry later" here, while sending the same
    body again can never succeed."""

    grpc_code = grpc.StatusCode.OUT_OF_RANGE
    default_code = "payload_too_large"


class Unavailable(ServiceError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    default_code = "unavailable"


def invalid(field: str, description: str, detail: str | None = None) -> InvalidArgument:
    return InvalidArgument(
        detail or f"{field}: {description}", violations=[FieldViolation(field, description)]
    )
