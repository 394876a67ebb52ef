"""Password hashing (argon2id) and policy. Hashing runs in a thread so the event loop never blocks."""

from __future__ import annotations

import asyncio
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from libs.common.errors import invalid
from libs.common.settings import PLACEHOLDER_SECRETS

_hasher = PasswordHasher()
MIN_LENGTH = 12
MAX_LENGTH = 256
# Verified against when an email is unknown, so a miss costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def check_policy(password: str, field: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise invalid(field, f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise invalid(field, f"must be at most {MAX_LENGTH} characters")
    if password.strip().lower() in PLACEHOLDER_SECRETS:
        raise invalid(field, "is a well-known placeholder password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def temporary_password() -> str:
    """Shown once to the admin who created or reset the account."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))
