"""Signed photo links: the tokens behind `/v1/public/photos/{token}`, minted by
`GET /v1/admin/photos/{photo_id}/signed_url` and `/v1/orders/{order_id}/photos/{photo_id}/signed-download`.

Pure functions, no database and no gRPC: the servicer checks org, consent and roles, then calls `mint`;
the public route calls `verify` (and `consume_once` for one-time links) before it redirects to the
backend's own short-lived URL. A token is

    v1.<payload>.<signature>

with `payload` the URL-safe base64 (no padding) of a compact JSON object (org id, photo id, expiry,
a random nonce, the one-time flag and, when the link is bound to a browser, a keyed hash of its
User-Agent: never the User-Agent itself) and `signature` HMAC-SHA256 over `v1.<payload>` (32 bytes,
43 characters). The payload is signed, not encrypted: whoever holds a link can read which org and
photo it opens, which is no more than the link itself already grants.

The HMAC key is derived from each PHOTO_TOKEN_SECRET with a purpose label, so the same secret given
to another feature by mistake never signs anything accepted here. Rotation: minting uses the first
secret, verifying tries every secret given (current first), so links minted before a rotation keep
working for their few minutes of life once the old secret is listed second.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets as random_bytes
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from libs.common.errors import NotFound, Unavailable

VERSION = "v1"
# Refused before any decoding or HMAC: a real token is about 260 characters (UA-bound), so 1 KB leaves
# room for a later version and bounds the work an anonymous caller can ask of the public route.
MAX_TOKEN_CHARS = 1024
# Bounds for PHOTO_URL_TTL_SECONDS (its setting should use them): links are minted per view, so a
# few minutes suffice, and an hour caps how long a leaked link works.
DEFAULT_TTL_SECONDS = 300
MIN_TTL_SECONDS = 10
MAX_TTL_SECONDS = 3600
# One-time marks outlive the token by this much: media replicas whose clocks differ by a little must not
# find the mark gone while they still think the token is alive (and so serve it twice).
CLOCK_SKEW_SECONDS = 60
KEY_PREFIX = "photo-link:"

# Reason codes (libs.common.errors `code`): the gateway maps them to HTTP statuses.
INVALID = "photo_link_invalid"  # 404: forged, tampered, malformed, wrong browser
EXPIRED = "photo_link_expired"  # 410 Gone (gateway REASON_STATUS): was good, is no longer
USED = "photo_link_used"  # 410 Gone: a one-time link already opened
STORE_UNAVAILABLE = "photo_link_store_unavailable"  # 503: Redis away, one-time links refused

_KEY_LABEL = b"cws media photo link v1"
_UA_LABEL = b"user-agent\x00"
_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_NONCE_BYTES = 16
_NONCE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_UA_HASH = re.compile(r"^[A-Za-z0-9_-]{22}$")
_SIGNATURE_CHARS = 43


@dataclass(frozen=True)
class PhotoClaims:
    org_id: str
    photo_id: str
    expires_at: int  # unix seconds; the link is refused from this second on
    nonce: str  # 128 random bits, URL-safe base64; the one-time mark's key
    one_time: bool
    ua_bound: bool
    key_index: int  # which secret verified it (0 = current): >0 means minted before a rotation


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(secret: bytes) -> bytes:
    if not secret:
        raise ValueError("a photo link secret is empty")
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _ua_hash(key: bytes, user_agent: str) -> str:
    # Keyed, so a token does not publish a fingerprint of its browser that anyone could match against
    # a list of common User-Agents. A missing header counts as the empty string: bound to "none".
    digest = hmac.new(key, _UA_LABEL + user_agent.strip().encode("utf-8", "replace"), hashlib.sha256)
    return _b64encode(digest.digest()[:16])


def _canonical_uuid(value: str, name: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{name} must be a UUID") from None


def mint(
    secret: bytes,
    *,
    org_id: str,
    photo_id: str,
    ttl_seconds: int,
    now: int | None = None,
    user_agent: str | None = None,
    one_time: bool = False,
) -> str:
    """A signed link token for one photo of one org, good for `ttl_seconds`. `user_agent` given (even
    empty) binds the token to that User-Agent; None leaves it unbound. Bad arguments are the caller's
    bug, not the user's: ValueError."""
    if isinstance(ttl_seconds, bool) or not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be {MIN_TTL_SECONDS}..{MAX_TTL_SECONDS}")
    key = _signing_key(secret)
    issued = int(time.time()) if now is None else now
    payload: dict[str, Any] = {
        "o": _canonical_uuid(org_id, "org_id"),
        "p": _canonical_uuid(photo_id, "photo_id"),
        "e": issued + ttl_seconds,
        "n": _b64encode(random_bytes.token_bytes(_NONCE_BYTES)),
        "t": bool(one_time),
    }
    if user_agent is not None:
        payload["u"] = _ua_hash(key, user_agent)
    body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{VERSION}.{body}"
    signature = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{_b64encode(signature)}"


def _invalid() -> NotFound:
    # One answer for every way a token can be wrong, so probing learns nothing about which part failed.
    return NotFound("photo not found", code=INVALID)


def verify(
    secrets: Sequence[bytes], token: str, *, user_agent: str | None, now: int | None = None
) -> PhotoClaims:
    """The claims of a token one of `secrets` signed (current first). NotFound `photo_link_invalid`
    for anything forged, tampered, malformed or opened by another browser than it is bound to;
    NotFound `photo_link_expired` for a genuine token past its expiry."""
    if not secrets:
        raise ValueError("no photo link secret to verify with")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise _invalid()
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise _invalid()
    _, body, signature_text = parts
    if (
        len(signature_text) != _SIGNATURE_CHARS
        or not _PART.fullmatch(body)
        or not _PART.fullmatch(signature_text)
    ):
        raise _invalid()
    try:
        signature = _b64decode(signature_text)
    except (binascii.Error, ValueError):
        raise _invalid() from None
    signed = f"{VERSION}.{body}".encode("ascii")
    key_index = -1
    key = b""
    # Every key is tried (no early exit), each compared in constant time.
    for index, secret in enumerate(secrets):
        candidate = _signing_key(secret)
        expected = hmac.new(candidate, signed, hashlib.sha256).digest()
        if hmac.compare_digest(expected, signature) and key_index < 0:
            key_index, key = index, candidate
    if key_index < 0:
        raise _invalid()
    claims, bound = _claims(body, key_index)
    # Bound: the browser must match before anything else is told (not even that the link expired).
    if bound is not None and not hmac.compare_digest(
        bound.encode(), _ua_hash(key, user_agent or "").encode()
    ):
        raise _invalid()
    current = int(time.time()) if now is None else now
    if current >= claims.expires_at:
        raise NotFound("this photo link has expired; ask for a new one", code=EXPIRED)
    return claims


def _payload(body: str) -> dict[str, Any]:
    try:
        payload = json.loads(_b64decode(body))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid() from None
    if not isinstance(payload, dict):
        raise _invalid()
    return payload


def _claims(body: str, key_index: int) -> tuple[PhotoClaims, str | None]:
    """The claims, and the User-Agent hash the token is bound to (None: unbound). Signed by us, so
    well-formed unless a secret leaked or a bug minted it: still checked field by field, since a
    malformed token must never become a 500."""
    payload = _payload(body)
    org_id, photo_id = payload.get("o"), payload.get("p")
    expires_at, nonce = payload.get("e"), payload.get("n")
    one_time, ua = payload.get("t"), payload.get("u")
    if not (
        isinstance(org_id, str)
        and isinstance(photo_id, str)
        and isinstance(expires_at, int)
        and not isinstance(expires_at, bool)
        and isinstance(nonce, str)
        and _NONCE.fullmatch(nonce)
        and isinstance(one_time, bool)
        and (ua is None or (isinstance(ua, str) and _UA_HASH.fullmatch(ua)))
    ):
        raise _invalid()
    try:
        org, photo = str(uuid.UUID(org_id)), str(uuid.UUID(photo_id))
    except ValueError:
        raise _invalid() from None
    claims = PhotoClaims(
        org_id=org,
        photo_id=photo,
        expires_at=expires_at,
        nonce=nonce,
        one_time=one_time,
        ua_bound=ua is not None,
        key_index=key_index,
    )
    return claims, ua


def store_client(redis_url: str, *, timeout_seconds: float = 0.5) -> Redis:
    """The Redis client one-time links want (REDIS_URL): short timeouts and one quick retry. redis-py's
    default retries ten times with growing backoff, so with Redis away each public photo request
    would hang for seconds before its 503; a refusal should be immediate. Connects lazily."""
    return Redis.from_url(
        redis_url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1),
    )


async def consume_once(
    redis: Redis,
    claims: PhotoClaims,
    *,
    now: int | None = None,
    key_prefix: str = KEY_PREFIX,
) -> bool:
    """Marks a one-time token used: True for the first caller only (SET NX is atomic in Redis, so of
    any number of concurrent openings exactly one wins), False once used. A reusable token is always
    True and touches nothing. Redis unreachable or failing: Unavailable `photo_link_store_unavailable`
    (fail closed; a one-time link is never served unless its mark is known to be new). Build the
    client with `store_client`, so a hung or absent Redis refuses at once rather than waits."""
    if not claims.one_time:
        return True
    current = int(time.time()) if now is None else now
    remaining = claims.expires_at - current
    if remaining <= 0:
        raise NotFound("this photo link has expired; ask for a new one", code=EXPIRED)
    try:
        created = await redis.set(
            f"{key_prefix}{claims.nonce}", b"1", nx=True, ex=remaining + CLOCK_SKEW_SECONDS
        )
    except (TimeoutError, RedisError, OSError) as exc:
        raise Unavailable(
            "one-time photo links cannot be checked right now; try again shortly",
            code=STORE_UNAVAILABLE,
            retry_after_seconds=5,
        ) from exc
    return bool(created)


async def redeem(
    redis: Redis,
    claims: PhotoClaims,
    *,
    now: int | None = None,
    key_prefix: str = KEY_PREFIX,
) -> None:
    """`consume_once`, raising NotFound `photo_link_used` (410 at the gateway) for a used link."""
    if not await consume_once(redis, claims, now=now, key_prefix=key_prefix):
        raise NotFound("this photo link has already been used; ask for a new one", code=USED)
