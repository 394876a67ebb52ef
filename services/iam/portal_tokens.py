"""Client magic-link and worker portal tokens: HMAC-signed (HS256 JWTs) with CLIENT_PORTAL_SECRET
or WORKER_PORTAL_SECRET, the org embedded, and a TTL. The portal endpoints arrive with booking."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from libs.common.errors import Unauthenticated, invalid

CLIENT = "client_portal"
WORKER = "worker_portal"


@dataclass(frozen=True)
class PortalClaims:
    org_id: str
    subject: str
    email: str
    expires_at: int


def issue(
    kind: str, secret: str, *, org_id: str, subject: str, email: str, ttl_minutes: int
) -> tuple[str, int]:
    if ttl_minutes <= 0 or ttl_minutes > 60 * 24 * 30:
        raise invalid("ttl_minutes", "must be between 1 and 43200")
    expires_at = int(time.time()) + ttl_minutes * 60
    payload = {
        "typ": kind,
        "org": org_id,
        "sub": subject,
        "email": email,
        "iat": int(time.time()),
        "exp": expires_at,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm="HS256"), expires_at


def verify(kind: str, secret: str, token: str) -> PortalClaims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "org", "sub", "typ"]}
        )
        if payload["typ"] != kind:
            raise jwt.InvalidTokenError("wrong token type")
        uuid.UUID(payload["org"])
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise Unauthenticated("portal token is invalid or expired", code="invalid_portal_token") from exc
    return PortalClaims(
        org_id=payload["org"],
        subject=payload["sub"],
        email=payload.get("email", ""),
        expires_at=int(payload["exp"]),
    )
