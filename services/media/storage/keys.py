"""Storage keys: the canonical form, the check every backend runs, and legacy aliases for reads.

Keys are built from ids only (`canonical_key`), so nothing a client sends (a file name, a path) ever
becomes part of a key. Backends still run `check_key` on every call, so a key that got past the service
some other way cannot climb out of the upload root or reach another prefix.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from services.media.storage.errors import InvalidStorageKey

if TYPE_CHECKING:
    from services.media.storage.base import Storage

# Extensions a stored photo may carry: the service decides the type from the content and picks the
# extension from this set, never from the uploaded file's name.
ALLOWED_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp", "heic", "heif", "gif"})
# Spellings a legacy object may carry for the same type (reads only).
_EXTENSION_ALIASES: dict[str, tuple[str, ...]] = {"jpg": ("jpeg",), "jpeg": ("jpg",), "heic": ("heif",)}

KEY_PREFIX = "orders"
MAX_KEY_LENGTH = 512
# One path segment: letters, digits, dot, dash, underscore, and not "." or ".." (checked below). No
# slash, backslash, percent, colon, NUL or whitespace, so a segment is never a path or an escape.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _uuid_part(name: str, value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidStorageKey(f"{name} is not a UUID") from None
    # The canonical spelling, so one photo has one key whatever case or braces the caller used.
    return str(parsed)


def canonical_key(org_id: str, booking_id: str, photo_id: str, ext: str) -> str:
    """`orders/{org_id}/{booking_id}/{photo_id}.{ext}`; each id a UUID, `ext` from ALLOWED_EXTENSIONS."""
    extension = str(ext).lower().lstrip(".")
    if extension not in ALLOWED_EXTENSIONS:
        raise InvalidStorageKey(f"extension {ext!r} is not allowed")
    org = _uuid_part("org_id", org_id)
    booking = _uuid_part("booking_id", booking_id)
    photo = _uuid_part("photo_id", photo_id)
    return f"{KEY_PREFIX}/{org}/{booking}/{photo}.{extension}"


def check_key(key: str) -> str:
    """Refuse anything that is not a relative `orders/...` path of plain segments; return the key.

    Looser than `canonical_key` on purpose: legacy objects (`orders/{org_id}/{order_id}/...`, no
    extension) must stay readable and deletable."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidStorageKey("storage key is empty or too long")
    segments = key.split("/")
    if segments[0] != KEY_PREFIX or len(segments) < 2:
        raise InvalidStorageKey(f"storage key must start with {KEY_PREFIX}/")
    for segment in segments[1:]:
        if segment in {".", ".."} or not _SEGMENT.fullmatch(segment) or ".." in segment:
            raise InvalidStorageKey("storage key has a path-like segment")
    return key


def legacy_candidates(key: str) -> list[str]:
    """The keys an object stored as `key` may live under, canonical first: the key itself, the same
    name with an alias extension (`.jpeg` for `.jpg`), and the name without extension (older uploads)."""
    check_key(key)
    candidates = [key]
    stem, dot, extension = key.rpartition(".")
    if dot and "/" not in extension:
        candidates += [f"{stem}.{alias}" for alias in _EXTENSION_ALIASES.get(extension.lower(), ())]
        candidates.append(stem)
    return candidates


async def resolve_legacy(storage: Storage, key: str) -> str | None:
    """The first of `legacy_candidates(key)` the backend holds, or None. One `exists` call per
    candidate until found, so canonical objects cost one call."""
    for candidate in legacy_candidates(key):
        if await storage.exists(candidate):
            return candidate
    return None
