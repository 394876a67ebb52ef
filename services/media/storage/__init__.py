"""Where photos live: the local file system, R2 (S3 API) or Cloudflare Images, behind one interface.

The service builds its backend once (`build_storage(settings)`) and stores under `canonical_key(...)`.
"""

from services.media.storage.base import CHUNK_SIZE, Storage, StorageConfig
from services.media.storage.cf_images import CloudflareImagesStorage, signed_delivery_url
from services.media.storage.config import StorageSettings
from services.media.storage.errors import (
    InvalidStorageKey,
    StorageConfigError,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from services.media.storage.factory import BACKENDS, backend_name, build_storage, config_problems
from services.media.storage.keys import (
    ALLOWED_EXTENSIONS,
    canonical_key,
    check_key,
    legacy_candidates,
    resolve_legacy,
)
from services.media.storage.local import LocalStorage
from services.media.storage.r2 import R2Storage

__all__ = [
    "ALLOWED_EXTENSIONS",
    "BACKENDS",
    "CHUNK_SIZE",
    "CloudflareImagesStorage",
    "InvalidStorageKey",
    "LocalStorage",
    "R2Storage",
    "Storage",
    "StorageConfig",
    "StorageConfigError",
    "StorageError",
    "StorageNotFound",
    "StorageSettings",
    "StorageUnavailable",
    "backend_name",
    "build_storage",
    "canonical_key",
    "check_key",
    "config_problems",
    "legacy_candidates",
    "resolve_legacy",
    "signed_delivery_url",
]
