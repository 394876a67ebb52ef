"""TOTP (RFC 6238) with replay protection: a code is accepted only for a time step later than the
last one accepted (RFC 6238 §5.2). Secrets are encrypted at rest with a key derived from
AUTH_SECRET_KEY, and still read under the keys it replaced (sealing.py)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

import pyotp

from services.iam.sealing import Opened, Sealer

STEP_SECONDS = 30
# One step either side, for clock drift between phone and server.
VALID_WINDOW = 1
LABEL = b"cws-totp-v1:"


def new_secret() -> str:
    return pyotp.random_base32()


def encrypt_secret(secret: str, auth_secret: str) -> str:
    """Under the current AUTH_SECRET_KEY."""
    return Sealer(LABEL, [auth_secret]).seal(secret)


def open_secret(token: str, keys: Sequence[str]) -> Opened:
    """Under the current key or an earlier one (`keys`, current first); raises InvalidToken when
    none opens it."""
    return Sealer(LABEL, keys).open(token)


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def matching_step(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step the code belongs to, if it is valid and newer than `last_step`."""
    code = (code or "").strip()
    # isascii: str.isdigit() also accepts other scripts' digits, which hmac.compare_digest rejects.
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int((now if now is not None else time.time()) // STEP_SECONDS)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None
