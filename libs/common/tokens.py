"""Access tokens: issued by iam, verified locally by the gateway (no IAM call per request)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ISSUER = "cws-iam"
ALGORITHM = "HS256"


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    org_id: str
    role: str
    session_id: str
    mfa_verified: bool
    expires_at: int


def encode_access(claims: AccessClaims, secret: str) -> str:
    payload = {
        "iss": ISSUER,
        "typ": "access",
        "sub": claims.user_id,
        "org": claims.org_id,
        "role": claims.role,
        "sid": claims.session_id,
        "mfa": claims.mfa_verified,
        "iat": int(time.time()),
        "exp": claims.expires_at,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_access(token: str, secret: str) -> AccessClaims:
    """Raises jwt.InvalidTokenError (expired, tampered, wrong type) for the caller to map to 401."""
    payload = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        issuer=ISSUER,
        options={"require": ["exp", "iat", "sub", "org", "sid", "role"]},
        leeway=5,
    )
    if payload.get("typ") != "access":
        raise jwt.InvalidTokenError("not an access token")
    try:
        uuid.UUID(str(payload["org"]))
    except ValueError as exc:
        raise jwt.InvalidTokenError("org is not a UUID") from exc
    return AccessClaims(
        user_id=str(payload["sub"]),
        org_id=str(payload["org"]),
        role=str(payload["role"]),
        session_id=str(payload["sid"]),
        mfa_verified=bool(payload.get("mfa", False)),
        expires_at=int(payload["exp"]),
    )
