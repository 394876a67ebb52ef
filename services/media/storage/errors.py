"""What the storage backends raise. The service maps them; the janitor retries only `StorageUnavailable`."""

from __future__ import annotations


class StorageError(Exception):
    """A backend refused the call for good (bad credentials, no such bucket, a rejected upload)."""


class StorageUnavailable(StorageError):
    """Transient: the backend is down, timed out, answered 5xx or throttled (429). Try again later."""


class StorageNotFound(StorageError):
    """No object under that key."""


class InvalidStorageKey(StorageError, ValueError):
    """A key (or a part of one) that is not a storage key: path-like, absolute, unknown extension."""


class StorageConfigError(ValueError):
    """The configured backend lacks settings it needs (or names no known backend)."""
