"""Rich gRPC error details (google.rpc.Status in `grpc-status-details-bin`), encoded by the server
interceptor and decoded by the gateway, so the machine-readable error code and field violations
cross the wire intact."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from libs.common.errors import FieldViolation, ServiceError

DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "cleanwithsnapshot"


def encode(error: ServiceError) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=DOMAIN)
    if error.retry_after_seconds is not None:
        info.metadata["retry_after_seconds"] = str(error.retry_after_seconds)
    details = [info]
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.detail)
    for message in details:
        packed = any_pb2.Any()
        packed.Pack(message)
        status.details.append(packed)
    return ((DETAILS_KEY, status.SerializeToString()),)


@dataclass
class DecodedError:
    code: grpc.StatusCode
    detail: str
    reason: str = ""
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: int | None = None


def decode(error: grpc.aio.AioRpcError) -> DecodedError:
    decoded = DecodedError(code=error.code(), detail=error.details() or "")
    for item in error.trailing_metadata() or ():
        # grpc.aio metadata yields plain (key, value) tuples, not objects with .key/.value
        key, value = cast(tuple[str, str | bytes], item)
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                decoded.reason = info.reason
                if "retry_after_seconds" in info.metadata:
                    decoded.retry_after_seconds = int(info.metadata["retry_after_seconds"])
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                decoded.violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return decoded
