"""proto → JSON-ready dicts for responses."""

from __future__ import annotations

from typing import Any

from cws.iam.v1 import iam_pb2
from google.protobuf.json_format import MessageToDict


def tokens(message: iam_pb2.Tokens) -> dict[str, Any]:
    return {
        "access_token": message.access_token,
        "refresh_token": message.refresh_token,
        "token_type": message.token_type or "bearer",
        "expires_in": message.expires_in,
        "refresh_expires_in": message.refresh_expires_in,
        "mfa_verified": message.mfa_verified,
        "must_change_password": message.must_change_password,
        "org_id": message.org_id,
        "user_id": message.user_id,
        "role": message.role,
    }


def user(message: iam_pb2.User) -> dict[str, Any]:
    return {
        "id": message.id,
        "org_id": message.org_id,
        "email": message.email,
        "full_name": message.full_name,
        "role": message.role,
        "totp_enabled": message.totp_enabled,
        "must_change_password": message.must_change_password,
        "active": message.active,
        "created_at": message.created_at.ToJsonString() if message.created_at.seconds else None,
    }


def audit(entry: iam_pb2.AuditLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "before": MessageToDict(entry.before) if entry.HasField("before") else None,
        "after": MessageToDict(entry.after) if entry.HasField("after") else None,
        "request_id": entry.request_id,
        "break_glass_reason": entry.break_glass_reason or None,
        "break_glass_session_id": entry.break_glass_session_id or None,
        "created_at": entry.created_at.ToJsonString() if entry.created_at.seconds else None,
    }
