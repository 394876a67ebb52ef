"""A plain settings object with the backends' defaults, for tools and tests that build a storage
without the media service's MediaSettings (which carries the same fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.media.storage.cf_images import DEFAULT_API_BASE, DEFAULT_DELIVERY_BASE


@dataclass(frozen=True)
class StorageSettings:
    order_storage_backend: str = "local"
    order_upload_root: str | Path = "tmp"
    r2_bucket: str = ""
    r2_access_key: str = ""
    r2_secret_key: str = ""
    r2_endpoint: str = ""
    r2_region: str = "auto"
    cf_images_account_id: str = ""
    cf_images_account_hash: str = ""
    cf_images_api_token: str = ""
    cf_images_signing_key: str = ""
    cf_images_default_variant: str = "public"
    cf_images_thumbnail_variant: str = "thumbnail"
    cf_images_api_base: str = DEFAULT_API_BASE
    cf_images_delivery_base: str = DEFAULT_DELIVERY_BASE
    storage_timeout_seconds: float = 10.0
    storage_max_attempts: int = 3
