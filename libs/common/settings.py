"""Settings shared by every process, read from the environment with the seed documents' names.

Each process extends `CommonSettings` with its own fields. In APP_ENV=prod a process refuses to
start on placeholder secrets, so a forgotten `.env` line fails the deploy instead of weakening it.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "secret",
        "password",
        "admin",
        "123456",
        "qwerty",
        "dev-auth-secret",
        "dev-internal-secret",
        "dev-client-portal-secret",
        "dev-worker-portal-secret",
        "dev-metrics-token",
    }
)

CsvList = Annotated[list[str], NoDecode]


def split_csv(value: Any) -> list[str]:
    """Accept a JSON array or a comma-separated string, as operators write both."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        return [str(v).strip() for v in json.loads(text) if str(v).strip()]
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_networks(values: list[str], setting: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for raw in values:
        try:
            networks.append(ipaddress.ip_network(raw, strict=False))
        except ValueError as exc:
            raise ValueError(f"{setting}: {raw!r} is not an IP address or CIDR") from exc
    return networks


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)
    # The settings of this service that /v1/admin/feature-flags reports (booleans and modes, never
    # secrets); each service names its own, so the answer comes from the service that acts on it.
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ()

    # No default: a deployment that forgets APP_ENV must not start as dev (a public dev secret, Basic
    # Auth on, X-Test-Org honoured). `make dev`, `make test` and the bench set it.
    app_env: str = Field(default="", description="dev, test or prod", validate_default=True)
    service_name: str = "cws"
    log_level: str = "INFO"

    database_url: str = "postgresql://cws_app@127.0.0.1:5432/cws"
    migrations_database_url: str = ""
    database_app_role: str = "cws_app"
    database_pool_size: int = 20
    database_statement_timeout_ms: int = 5000

    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = ""

    internal_context_secret: str = "dev-internal-secret"
    # How old a signed request context may be when a service receives it.
    internal_context_max_age_seconds: int = 120

    auth_secret_key: str = "dev-auth-secret"
    client_portal_secret: str = "dev-client-portal-secret"
    worker_portal_secret: str = "dev-worker-portal-secret"
    auth_access_token_ttl_minutes: int = 15
    auth_session_ttl_minutes: int = 60 * 12
    auth_refresh_token_ttl_minutes: int = 60 * 24 * 14
    client_portal_token_ttl_minutes: int = 60 * 24
    worker_portal_token_ttl_minutes: int = 60 * 12

    metrics_enabled: bool = True
    metrics_token: str = ""

    grpc_deadline_seconds: float = 5.0
    readiness_interval_seconds: float = 2.0
    # Published outbox rows, handled inbox ids and replayed dead letters older than this are deleted by
    # the jobs runner's event-retention job (OpsService.PruneEventTables). At least 8: the streams keep
    # events 7 days, and a redelivered event must still find its id in the inbox.
    event_retention_days: int = Field(default=14, ge=8, le=3650)

    @property
    def is_prod(self) -> bool:
        return self.app_env.lower() in {"prod", "production"}

    @property
    def is_dev_or_test(self) -> bool:
        return self.app_env.lower() in {"dev", "development", "test", "testing"}

    def feature_flags(self) -> dict[str, bool | str | int | float]:
        """FEATURE_FLAGS by name with their values; a name that is no setting is a programming error."""
        return {name: getattr(self, name) for name in self.FEATURE_FLAGS}

    def secrets_to_check(self) -> dict[str, str]:
        return {
            "INTERNAL_CONTEXT_SECRET": self.internal_context_secret,
            "AUTH_SECRET_KEY": self.auth_secret_key,
            "CLIENT_PORTAL_SECRET": self.client_portal_secret,
            "WORKER_PORTAL_SECRET": self.worker_portal_secret,
        }

    def prod_problems(self) -> list[str]:
        problems = []
        for name, value in self.secrets_to_check().items():
            if value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < 32:
                problems.append(f"{name} is a placeholder or shorter than 32 characters")
        if self.metrics_enabled and not self.metrics_token:
            problems.append("METRICS_ENABLED requires METRICS_TOKEN")
        return problems

    @model_validator(mode="after")
    def _fail_fast_in_prod(self) -> CommonSettings:
        if self.is_prod:
            problems = self.prod_problems()
            if problems:
                raise ValueError("refusing to start in APP_ENV=prod: " + "; ".join(problems))
        return self

    @field_validator("app_env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "APP_ENV is not set: give APP_ENV=prod in production (dev or test on a workstation)"
            )
        if value.lower() not in {"dev", "development", "test", "testing", "prod", "production"}:
            raise ValueError("APP_ENV must be dev, test or prod")
        return value.lower()


def sqlalchemy_url(url: str) -> str:
    """postgresql://... as operators write it, with the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url
