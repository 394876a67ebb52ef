"""Integrations' settings: the seed 003 GOOGLE_OAUTH_*, GCAL_SYNC_*, QUICKBOOKS_OAUTH_*, QBO_SYNC_* names,
the providers' endpoints (pointed at local fakes in the tests), the token sealing key and the limits.

A provider is "configured" when its client id, secret and redirect URI are all set; a configured
provider needs INTEGRATIONS_TOKEN_KEY (base64 of 32 bytes), which production refuses to take as the
dev placeholder."""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from libs.common.settings import CommonSettings, CsvList, split_csv

# A dev/test key anyone can read: refused in APP_ENV=prod (tools/dev.py may use it).
DEV_TOKEN_KEY = base64.b64encode(b"cws-dev-integrations-token-key!!").decode()


def decode_key(value: str, setting: str) -> bytes:
    """A base64 (standard or URL-safe) 32-byte AES key; ValueError naming the setting otherwise."""
    text = value.strip()
    try:
        standard = text.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{setting} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{setting} must be base64 of 32 bytes (got {len(raw)})")
    return raw


class IntegrationsSettings(CommonSettings):
    # integrations calls booking, billing, iam and notify (its own key) and serves the gateway and
    # jobs (their public keys).
    CALLS_SERVICES: ClassVar[bool] = True
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "integrations"
    integrations_grpc_port: int = 50057
    integrations_http_port: int = 8107
    booking_grpc_target: str = "127.0.0.1:50052"
    billing_grpc_target: str = "127.0.0.1:50053"
    iam_grpc_target: str = "127.0.0.1:50051"
    notify_grpc_target: str = "127.0.0.1:50055"

    # --- Google Calendar (seed 003) ---------------------------------------------------------------
    google_oauth_client_id: str = ""
    google_oauth_client_secret: str = Field(default="", repr=False)
    google_oauth_redirect_uri: str = ""
    gcal_sync_interval_seconds: int = Field(default=300, ge=1)
    gcal_sync_initial_days: int = Field(default=30, ge=0, le=3650)
    gcal_sync_future_days: int = Field(default=90, ge=1, le=3650)
    gcal_sync_backfill_minutes: int = Field(default=10, ge=0, le=7 * 24 * 60)
    google_oauth_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_oauth_token_url: str = "https://oauth2.googleapis.com/token"
    google_oauth_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    # googleapiclient's api_endpoint root.
    google_calendar_api_url: str = "https://www.googleapis.com/"

    # --- QuickBooks Online (seed 003) -------------------------------------------------------------
    quickbooks_oauth_client_id: str = ""
    quickbooks_oauth_client_secret: str = Field(default="", repr=False)
    quickbooks_oauth_redirect_uri: str = ""
    qbo_sync_interval_seconds: int = Field(default=900, ge=1)
    qbo_sync_initial_days: int = Field(default=30, ge=0, le=3650)
    qbo_sync_backfill_days: int = Field(default=2, ge=0, le=365)
    quickbooks_oauth_auth_url: str = "https://appcenter.intuit.com/connect/oauth2"
    quickbooks_oauth_token_url: str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    quickbooks_oauth_revoke_url: str = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
    # Sandbox companies: https://sandbox-quickbooks.api.intuit.com
    quickbooks_api_url: str = "https://quickbooks.api.intuit.com"

    # --- tokens and limits ------------------------------------------------------------------------
    # base64 of 32 bytes: seals the OAuth tokens (crypto.py). The old keys open rows sealed before a
    # rotation and never seal.
    integrations_token_key: str = Field(default="", repr=False)
    integrations_token_old_keys: CsvList = Field(default=[], repr=False)
    integrations_http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A 429's Retry-After up to this is waited for inside a pass; longer ends the pass, cursor kept.
    integrations_max_retry_after_seconds: float = Field(default=30.0, ge=0, le=600)
    integrations_breaker_failures: int = Field(default=5, ge=1, le=100)
    integrations_breaker_reset_seconds: float = Field(default=60.0, gt=0, le=3600)
    # An OAuth state (the consent round trip) lives this long.
    integrations_state_ttl_seconds: int = Field(default=600, ge=30, le=3600)

    @field_validator("integrations_token_old_keys", mode="before")
    @classmethod
    def _old_keys_csv(cls, value: object) -> list[str]:
        return split_csv(value)

    @model_validator(mode="after")
    def _keys(self) -> IntegrationsSettings:
        if self.integrations_token_key:
            decode_key(self.integrations_token_key, "INTEGRATIONS_TOKEN_KEY")
        for position, key in enumerate(self.integrations_token_old_keys, start=1):
            decode_key(key, f"INTEGRATIONS_TOKEN_OLD_KEYS[{position}]")
        configured = [name for name in ("google_calendar", "quickbooks") if self.configured(name)]
        if configured and not self.integrations_token_key:
            raise ValueError(
                f"INTEGRATIONS_TOKEN_KEY is required when a provider is configured ({', '.join(configured)}): "
                "base64 of 32 random bytes (python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')"
            )
        return self

    def configured(self, provider: str) -> bool:
        """Client id, secret and redirect URI all set for `provider`."""
        if provider == "google_calendar":
            values = (
                self.google_oauth_client_id,
                self.google_oauth_client_secret,
                self.google_oauth_redirect_uri,
            )
        elif provider == "quickbooks":
            values = (
                self.quickbooks_oauth_client_id,
                self.quickbooks_oauth_client_secret,
                self.quickbooks_oauth_redirect_uri,
            )
        else:
            return False
        return all(value.strip() for value in values)

    def interval_seconds(self, provider: str) -> int:
        return (
            self.gcal_sync_interval_seconds
            if provider == "google_calendar"
            else self.qbo_sync_interval_seconds
        )

    @property
    def token_keys(self) -> tuple[bytes, ...]:
        """The current key first (seals and opens), then the old ones (open only)."""
        keys = [self.integrations_token_key, *self.integrations_token_old_keys]
        return tuple(decode_key(key, "INTEGRATIONS_TOKEN_KEY") for key in dict.fromkeys(keys) if key)

    def prod_problems(self) -> list[str]:
        problems = super().prod_problems()
        keys = [self.integrations_token_key, *self.integrations_token_old_keys]
        if DEV_TOKEN_KEY in keys:
            problems.append("INTEGRATIONS_TOKEN_KEY (or an old key) is the dev placeholder: make a new one")
        for provider, secret in (
            ("GOOGLE_OAUTH_CLIENT_SECRET", self.google_oauth_client_secret),
            ("QUICKBOOKS_OAUTH_CLIENT_SECRET", self.quickbooks_oauth_client_secret),
        ):
            if secret and secret.strip().lower() in {"change-me", "changeme", "secret", "fake-client-secret"}:
                problems.append(f"{provider} is a placeholder")
        return problems
