"""The browser's session: one cookie, sealed with AES-GCM, that carries the staff tokens and the portal
session tokens. The console keeps no server-side store (it has no database); the gateway stays the
judge of every token, so a stolen-and-replayed cookie is worth what its tokens are, until they expire
or are revoked (sign-out revokes them at the gateway).

The cookie is HttpOnly and SameSite=Lax; every form also carries a per-session CSRF token, checked
with the fetch-metadata headers (web/security.py)."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE_NAME = "cws_web"
# A pending TOTP step keeps the typed password sealed this long, no longer.
MFA_PENDING_SECONDS = 300
_VERSION = 1


def _key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cws-web-session-v1").derive(
        secret.encode()
    )


class SessionCodec:
    """Seals and opens the cookie's value. The cookie's name is the associated data, so a value cut from
    another cookie does not open as this one."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._aead = AESGCM(_key(secret))
        self.ttl_seconds = ttl_seconds

    def seal(self, data: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        body = orjson.dumps({"v": _VERSION, "iat": int(time.time()), "d": data})
        sealed = self._aead.encrypt(nonce, body, COOKIE_NAME.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, value: str) -> dict[str, Any] | None:
        """The data, or None for anything tampered with, foreign, too old or malformed."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            body = orjson.loads(self._aead.decrypt(raw[:12], raw[12:], COOKIE_NAME.encode()))
        except (binascii.Error, ValueError, InvalidTag, orjson.JSONDecodeError):
            return None
        if not isinstance(body, dict) or body.get("v") != _VERSION or not isinstance(body.get("d"), dict):
            return None
        issued = body.get("iat")
        if not isinstance(issued, int) or time.time() - issued > self.ttl_seconds:
            return None
        return body["d"]


@dataclass
class Session:
    """What one browser holds. `staff`: the gateway's tokens and who they are for; `client`/`worker`:
    a portal session token each; `mfa`: the sign-in waiting for its TOTP code; `flash`: one message
    for the next page."""

    data: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False

    @property
    def csrf(self) -> str:
        token = self.data.get("csrf")
        if not isinstance(token, str) or len(token) < 20:
            token = secrets.token_urlsafe(24)
            self.data["csrf"] = token
            self.dirty = True
        return token

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty = True

    def drop(self, *keys: str) -> None:
        for key in keys:
            if key in self.data:
                del self.data[key]
                self.dirty = True

    def flash(self, message: str) -> None:
        self.set("flash", message)

    def pop_flash(self) -> str:
        message = self.data.get("flash") or ""
        self.drop("flash")
        return str(message)

    @property
    def staff(self) -> dict[str, Any] | None:
        staff = self.data.get("staff")
        return staff if isinstance(staff, dict) and staff.get("access_token") else None

    def pending_mfa(self) -> dict[str, Any] | None:
        pending = self.data.get("mfa")
        if not isinstance(pending, dict) or time.time() > float(pending.get("until", 0)):
            return None
        return pending
