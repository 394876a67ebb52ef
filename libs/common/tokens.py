"""Access tokens: issued by iam, verified locally by the gateway (no IAM call per request)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    # The user's password is temporary (an admin set or reset it): the token is good only for
    # changing it, signing out and saying who you are (the gateway's route marks; every service
    # refuses the rest from the signed context too).
    password_change_required: bool = False


def encode_access(claims: AccessClaims, secret: str) -> str:
    payload = {
        "iss": ISSUER,
        "typ": "access",
        "sub": claims.user_id,
        "org": claims.org_id,
        "role": claims.role,
        "sid": claims.session_id,
        "mfa": claims.mfa_verified,
        "pwc": claims.password_change_required,
        "iat": int(time.time()),
        "exp": claims.expires_at,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_signed(token: str, keys: Sequence[str], **options: Any) -> dict[str, Any]:
    """`jwt.decode` under whichever of `keys` signed the token: the current AUTH_SECRET_KEY first, then
    each earlier one (AUTH_SECRET_KEY_PREVIOUS), so tokens issued before a rotation keep working until
    they expire. Only a bad signature moves on to the next key: a token a key did sign but that is
    expired or malformed is refused as it is. Raises jwt.InvalidTokenError."""
    if not keys:
        raise jwt.InvalidSignatureError("no key to verify with")
    for key in keys[:-1]:
        try:
            return jwt.decode(token, key, **options)
        except jwt.InvalidSignatureError:
            continue
    return jwt.decode(token, keys[-1], **options)


def decode_access(token: str, *keys: str) -> AccessClaims:
    """Verified under any of `keys` (current first). Raises jwt.InvalidTokenError (expired, tampered,
    signed by no key given, wrong type) for the caller to map to 401."""
    payload = decode_signed(
        token,
        keys,
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
        password_change_required=bool(payload.get("pwc", False)),
    )
