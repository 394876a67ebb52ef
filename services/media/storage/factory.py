"""`build_storage`: the backend ORDER_STORAGE_BACKEND names, from the service's settings."""

from __future__ import annotations

from pathlib import Path

from services.media.storage.base import Storage, StorageConfig
from services.media.storage.cf_images import CloudflareImagesStorage
from services.media.storage.errors import StorageConfigError
from services.media.storage.local import LocalStorage
from services.media.storage.r2 import R2Storage

# Seed 000/002 names, with the aliases they allow.
BACKENDS: dict[str, str] = {
    "local": "local",
    "r2": "r2",
    "cloudflare_r2": "r2",
    "cloudflare_images": "cloudflare_images",
    "cf_images": "cloudflare_images",
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "local": ("order_upload_root",),
    # R2_ENDPOINT is optional: without it boto3 talks to AWS S3 itself.
    "r2": ("r2_bucket", "r2_access_key", "r2_secret_key"),
    "cloudflare_images": (
        "cf_images_account_id",
        "cf_images_account_hash",
        "cf_images_api_token",
        "cf_images_signing_key",
    ),
}


def backend_name(settings: StorageConfig) -> str:
    """The canonical backend name (`local`, `r2`, `cloudflare_images`) for ORDER_STORAGE_BACKEND."""
    raw = (settings.order_storage_backend or "local").strip().lower()
    try:
        return BACKENDS[raw]
    except KeyError:
        raise StorageConfigError(
            f"ORDER_STORAGE_BACKEND={raw!r} is not one of {', '.join(sorted(BACKENDS))}"
        ) from None


def config_problems(settings: StorageConfig) -> list[str]:
    """What keeps the configured backend from working: an unknown name or missing settings. The service
    adds these to its prod checks, so production refuses to start with a half-configured backend."""
    try:
        backend = backend_name(settings)
    except StorageConfigError as error:
        return [str(error)]
    return [
        f"{field.upper()} is required for ORDER_STORAGE_BACKEND={settings.order_storage_backend}"
        for field in REQUIRED[backend]
        if not str(getattr(settings, field) or "").strip()
    ]


def build_storage(settings: StorageConfig) -> Storage:
    problems = config_problems(settings)
    if problems:
        raise StorageConfigError("; ".join(problems))
    backend = backend_name(settings)
    if backend == "r2":
        return R2Storage(
            bucket=settings.r2_bucket,
            access_key=settings.r2_access_key,
            secret_key=settings.r2_secret_key,
            endpoint=settings.r2_endpoint,
            region=settings.r2_region or "auto",
            timeout_seconds=settings.storage_timeout_seconds,
            max_attempts=settings.storage_max_attempts,
        )
    if backend == "cloudflare_images":
        return CloudflareImagesStorage(
            account_id=settings.cf_images_account_id,
            account_hash=settings.cf_images_account_hash,
            api_token=settings.cf_images_api_token,
            signing_key=settings.cf_images_signing_key,
            default_variant=settings.cf_images_default_variant or "public",
            thumbnail_variant=settings.cf_images_thumbnail_variant or "thumbnail",
            api_base=settings.cf_images_api_base,
            delivery_base=settings.cf_images_delivery_base,
            timeout_seconds=settings.storage_timeout_seconds,
            max_attempts=settings.storage_max_attempts,
        )
    return LocalStorage(Path(settings.order_upload_root))
