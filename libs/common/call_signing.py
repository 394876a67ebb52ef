"""Signed internal calls: every gRPC call between suite processes says who makes it, for whom, to which
method, with which request, and when, under the calling process's own Ed25519 key.

The caller sends, as metadata:
  cws-context-bin   the serialized RequestContext (with issued_at_unix_ms and a random nonce)
  cws-caller        its own process name ("gateway", "notify", "jobs")
  cws-method        the full method path, /cws.iam.v1.IamService/CreateUser
  cws-body-sha256   SHA-256 (hex) of the serialized request
  cws-signature     base64 Ed25519 signature over all of the above and a version tag

The receiving service (CallVerifier, run by libs/common/grpc_server.py) checks, in order: the caller is
one it trusts; the signature holds under one of that caller's keys; the signed method is the one being
served; the signed digest is the SHA-256 of the exact request bytes received; the context is at most
INTERNAL_CONTEXT_MAX_AGE_SECONDS old (and at most FUTURE_SKEW_MS ahead); its nonce was not seen before in
that window; and the principal is one the caller may speak for (below). A captured call can therefore
only ever be the identical call again, to the same method with the same body, within the window, and
the nonce refuses even that on the replica that saw it first.

The replay memory is per process: a replica does not see another replica's nonces, so a captured call
could be repeated once per replica within the window. That is acceptable because the signature binds
method and body: such a repeat is the caller's own request once more, never another method or body,
and a shared store would put Redis (or the database) on the path of every internal call.

Principal rule: only the gateway speaks for users (JWT, Basic, portal, anonymous contexts), and it may
never claim a suite service. Any other caller may only act as itself: AUTH_METHOD_SERVICE, principal
`service:<caller>`, role SERVICE_ROLE. A stolen notify key can then do what notify does, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from libs.common.context import SERVICE, SERVICE_ROLE, RequestContext
from libs.common.errors import PermissionDenied, Unauthenticated
from libs.common.internal_keys import CALLEES, GATEWAY, CallSigner

CONTEXT_KEY = "cws-context-bin"
CALLER_KEY = "cws-caller"
METHOD_KEY = "cws-method"
BODY_KEY = "cws-body-sha256"
SIGNATURE_KEY = "cws-signature"
# Bumped whenever what is signed changes, so an old signature can never verify under a new reading.
SCHEME = b"cws-internal-call/v2"
# Clocks of the suite's hosts may disagree a little; a context from further ahead is refused.
FUTURE_SKEW_MS = 5_000
NONCE_BYTES = 16

Metadata = tuple[tuple[str, Any], ...]


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def signing_input(caller: str, method: str, digest: bytes, context: bytes) -> bytes:
    """Length-prefixed fields: no choice of caller, method or context can read as another split."""
    parts = (SCHEME, caller.encode(), method.encode(), digest, context)
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def sign_call(
    ctx: RequestContext,
    signer: CallSigner,
    method: str,
    body: bytes,
    *,
    issued_at_ms: int | None = None,
    nonce: bytes | None = None,
) -> Metadata:
    """The metadata of one call of `method` with the serialized request `body`, acting as `ctx`."""
    stamped = RequestContext()
    stamped.CopyFrom(ctx)
    stamped.issued_at_unix_ms = int(time.time() * 1000) if issued_at_ms is None else issued_at_ms
    stamped.nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    payload = stamped.SerializeToString()
    digest = body_digest(body)
    signature = signer.sign(signing_input(signer.name, method, digest, payload))
    return (
        (CONTEXT_KEY, payload),
        (CALLER_KEY, signer.name),
        (METHOD_KEY, method),
        (BODY_KEY, digest.hex()),
        (SIGNATURE_KEY, base64.b64encode(signature).decode()),
    )


class ReplayGuard:
    """Nonces seen in the last `window_seconds`, in this process. Bounded: past `max_entries` (far more
    calls than a process serves in the window) the oldest are forgotten first."""

    def __init__(self, window_seconds: float, max_entries: int = 500_000) -> None:
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._seen: set[bytes] = set()
        self._order: deque[tuple[float, bytes]] = deque()

    def first_use(self, key: bytes, now: float | None = None) -> bool:
        """True (and remembered) the first time `key` is offered within the window."""
        now = time.monotonic() if now is None else now
        while self._order and (self._order[0][0] <= now or len(self._order) >= self.max_entries):
            self._seen.discard(self._order.popleft()[1])
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append((now + self.window_seconds, key))
        return True

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class _Claim:
    caller: str
    method: str
    digest_hex: str
    context: bytes
    signature: str


def _claim(metadata: Sequence[tuple[str, Any]] | None) -> _Claim:
    found: dict[str, Any] = {}
    for key, value in metadata or ():
        if key in (CONTEXT_KEY, CALLER_KEY, METHOD_KEY, BODY_KEY, SIGNATURE_KEY):
            found[key] = value
    if CONTEXT_KEY not in found or SIGNATURE_KEY not in found or CALLER_KEY not in found:
        raise Unauthenticated("missing request context or its signature", code="context_missing")

    def text(key: str) -> str:
        value = found.get(key, "")
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    context = found[CONTEXT_KEY]
    return _Claim(
        caller=text(CALLER_KEY),
        method=text(METHOD_KEY),
        digest_hex=text(BODY_KEY),
        context=context if isinstance(context, bytes) else str(context).encode(),
        signature=text(SIGNATURE_KEY),
    )


def check_principal(caller: str, ctx: RequestContext) -> None:
    """Only the gateway speaks for users; every other caller acts as itself only."""
    claims_service = ctx.auth_method == SERVICE or ctx.principal_id.startswith("service:")
    if caller == GATEWAY:
        if claims_service:
            raise PermissionDenied("the gateway may not act as a suite service", code="principal_not_allowed")
        return
    if not (
        ctx.auth_method == SERVICE and ctx.principal_id == f"service:{caller}" and ctx.role == SERVICE_ROLE
    ):
        raise PermissionDenied(
            f"{caller} may only act as service:{caller} ({SERVICE_ROLE}, AUTH_METHOD_SERVICE)",
            code="principal_not_allowed",
        )


class CallVerifier:
    """What a service checks on every signed call (the module docstring says why each)."""

    def __init__(
        self,
        trusted: Mapping[str, tuple[Ed25519PublicKey, ...]],
        max_age_seconds: float,
        replay: ReplayGuard | None = None,
    ) -> None:
        self.trusted = trusted
        self.max_age_ms = max_age_seconds * 1000
        # A nonce must be remembered as long as its context could still pass the age check.
        self.replay = replay or ReplayGuard(max_age_seconds + FUTURE_SKEW_MS / 1000)

    def verify(
        self,
        metadata: Sequence[tuple[str, Any]] | None,
        method: str,
        digest: bytes,
        now_ms: float | None = None,
    ) -> RequestContext:
        """The verified context of a call of `method` whose request bytes hash to `digest`."""
        claim = _claim(metadata)
        keys = self.trusted.get(claim.caller, ())
        if not keys:
            if claim.caller in CALLEES:
                raise PermissionDenied(
                    f"this service does not accept calls from {claim.caller}", code="caller_not_allowed"
                )
            raise Unauthenticated("the caller is not known to this service", code="unknown_caller")
        try:
            signature = base64.b64decode(claim.signature, validate=True)
            claimed_digest = bytes.fromhex(claim.digest_hex)
        except (binascii.Error, ValueError):
            raise Unauthenticated("request context signature is invalid", code="context_forged") from None
        message = signing_input(claim.caller, claim.method, claimed_digest, claim.context)
        if not any(_valid(key, signature, message) for key in keys):
            raise Unauthenticated("request context signature is invalid", code="context_forged")
        if claim.method != method:
            raise Unauthenticated("the call was signed for another method", code="wrong_method")
        if claimed_digest != digest:
            raise Unauthenticated("the request is not the one that was signed", code="body_mismatch")
        try:
            ctx = RequestContext.FromString(claim.context)
        except DecodeError:
            raise Unauthenticated("request context is unreadable", code="context_invalid") from None
        now = time.time() * 1000 if now_ms is None else now_ms
        age_ms = now - ctx.issued_at_unix_ms
        if age_ms > self.max_age_ms or age_ms < -FUTURE_SKEW_MS:
            raise Unauthenticated("request context is stale", code="context_stale")
        if len(ctx.nonce) != NONCE_BYTES:
            raise Unauthenticated("request context has no nonce", code="context_invalid")
        if not self.replay.first_use(claim.caller.encode() + b"\0" + ctx.nonce):
            raise Unauthenticated("this call was already received", code="context_replayed")
        check_principal(claim.caller, ctx)
        return ctx


def _valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
