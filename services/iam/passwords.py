"""Password hashing (argon2id) and policy. Hashing runs in a thread so the event loop never blocks.

The cost comes from PASSWORD_HASH_TIME_COST, PASSWORD_HASH_MEMORY_KIB and PASSWORD_HASH_PARALLELISM
(defaults: argon2-cffi's, RFC 9106's low-memory profile; prod refuses less than OWASP's minimum). Each
hash records its own parameters, so a stored hash keeps verifying after the cost changes, and a
successful login re-hashes it at the current cost (`needs_rehash`). The process configures its hasher
once at start-up (`configure`), before it serves."""

from __future__ import annotations

import asyncio
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from libs.common.errors import invalid
from libs.common.settings import PLACEHOLDER_SECRETS

MIN_LENGTH = 12
MAX_LENGTH = 256


class _Hashing:
    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        # Verified against when an email is unknown, so a miss costs the same time as a wrong password.
        self.dummy_hash = hasher.hash(secrets.token_urlsafe(16))


_hashing = _Hashing(PasswordHasher())


def configure(*, time_cost: int, memory_kib: int, parallelism: int) -> None:
    """The cost of new hashes (and of the dummy one), for this process."""
    global _hashing
    _hashing = _Hashing(PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism))


def check_policy(password: str, field: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise invalid(field, f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise invalid(field, f"must be at most {MAX_LENGTH} characters")
    if password.strip().lower() in PLACEHOLDER_SECRETS:
        raise invalid(field, "is a well-known placeholder password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hashing.hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    hashing = _hashing

    def verify() -> bool:
        try:
            return (
                hashing.hasher.verify(password_hash or hashing.dummy_hash, password)
                and password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def needs_rehash(password_hash: str) -> bool:
    """True when `password_hash` was made with other parameters than the current ones."""
    try:
        return _hashing.hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def temporary_password() -> str:
    """Shown once to the admin who created or reset the account."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))
