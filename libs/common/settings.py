"""Settings shared by every process, read from the environment with the seed documents' names.

Each process extends `CommonSettings` with its own fields, and holds only the secrets it uses: the
JWT and portal secrets live in the settings of the gateway and iam, and internal calls are signed with
a per-process key (INTERNAL_SIGNING_KEY) and checked against the callers' public keys
(INTERNAL_TRUSTED_KEYS). In APP_ENV=prod a process refuses to start on placeholder or missing secrets,
so a forgotten `.env` line fails the deploy instead of weakening it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from libs.common.internal_keys import CallSigner, load_private_key, load_trusted_keys

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
        "dev-web-session-secret",
        "dev-metrics-token",
    }
)

CsvList = Annotated[list[str], NoDecode]

# Written by `make dev` (tools/dev.py) while it runs, owner-only: the settings its processes share, and
# .run/keys/<process>.env each process's own. In the checkout only (.run/ is git-ignored).
DEV_RUN_DIR = Path(__file__).resolve().parents[2] / ".run"
DEV_ENV_FILE = DEV_RUN_DIR / "dev.env"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as tools/dev.py writes them: a value in single quotes is shell-quoted (so that
    `set -a; . .run/dev.env` reads the same values), anything else is taken as it is (the call keys'
    JSON); blank and # lines are skipped."""
    pairs = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            pairs[key.strip()] = "".join(shlex.split(value)) if value.startswith("'") else value
    return pairs


def may_read_dev_env() -> bool:
    """True where a command may fill its settings from `make dev`'s files: APP_ENV unset or dev."""
    return os.environ.get("APP_ENV", "").strip().lower() in {"", "dev", "development"}


def use_dev_env(process: str = "", run_dir: Path = DEV_RUN_DIR) -> bool:
    """For a command run in a second shell beside `make dev` (python -m services.jobs.run, python -m
    services.iam.manage): fill the settings the environment lacks from .run/dev.env and, for
    `process`, .run/keys/<process>.env. Only when APP_ENV is unset or dev, so a production process
    never reads a dev file; whatever the environment sets wins. Says so on stderr; True if it did."""
    shared = run_dir / DEV_ENV_FILE.name
    if not may_read_dev_env() or not shared.is_file():
        return False
    files = [shared]
    own = run_dir / "keys" / f"{process}.env"
    if process and own.is_file():
        files.append(own)
    for path in reversed(files):  # the process's own file before the shared one
        for key, value in read_env_file(path).items():
            os.environ.setdefault(key, value)
    names = " and ".join(str(path.relative_to(run_dir.parent)) for path in files)
    print(f"using {names} from make dev (the environment's own settings win)", file=sys.stderr)
    return True


def explain(error: ValidationError) -> str:
    """A settings error as one line an operator can act on: each refused setting as "NAME: why"
    (the values are never repeated: they may be secrets)."""
    problems = []
    for item in error.errors():
        setting = "_".join(str(part) for part in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(message if message.startswith(setting) else f"{setting}: {message}")
    return "; ".join(problems)


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
    # hide_input_in_errors: a refused setting's error would otherwise print the tail of every value
    # given (secrets and private keys included) into the start-up log.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )
    # The settings of this service that /v1/admin/feature-flags reports (booleans and modes, never
    # secrets); each service names its own, so the answer comes from the service that acts on it.
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ()
    # Whether this process calls other services (needs INTERNAL_SIGNING_KEY in prod) and whether it
    # serves internal calls (needs INTERNAL_TRUSTED_KEYS in prod). Each process's settings say so.
    CALLS_SERVICES: ClassVar[bool] = False
    SERVES_CALLS: ClassVar[bool] = False

    # No default: a deployment that forgets APP_ENV must not start as dev (a public dev secret, Basic
    # Auth on, X-Test-Org honoured). `make dev`, `make test` and the bench set it.
    app_env: str = Field(default="", description="dev, test or prod", validate_default=True)
    service_name: str = "cws"
    log_level: str = "INFO"

    database_url: str = "postgresql://cws_app@127.0.0.1:5432/cws"
    migrations_database_url: str = ""
    database_app_role: str = "cws_app"
    # The connection budget (docs/operations.md "Connection budget"): a service process holds at most
    # DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW pooled connections, plus its LISTEN connections. A
    # small steady pool suits a process on one or two cores (Postgres runs as many queries at once as
    # it has cores); raise it with the cores, and the replicas' sum with max_connections. No overflow
    # by default: an overflow connection is opened and closed again per burst, a Postgres backend
    # started (a fork, ~2 ms of CPU) for a few requests, which under a steady load costs more than
    # waiting a moment for a pooled one.
    database_pool_size: int = Field(default=7, ge=1, le=100)
    database_max_overflow: int = Field(default=0, ge=0, le=100)
    # How long a unit of work waits for a pooled connection before it is refused (503, try again).
    database_pool_timeout_seconds: float = Field(default=5, gt=0, le=60)
    database_statement_timeout_ms: int = 5000

    nats_url: str = "nats://127.0.0.1:4222"
    # This process's own NATS user and its password (deploy/nats/nats.conf): each user may publish only
    # its service's subjects and read only what it consumes. The server has no anonymous access.
    nats_user: str = ""
    nats_password: str = Field(default="", repr=False)
    redis_url: str = ""

    # This process's own Ed25519 private key (base64 of the raw 32 bytes); it signs every call this
    # process makes, as `service_name`. Empty: the process cannot call other services.
    internal_signing_key: str = Field(default="", repr=False)
    # The callers this service accepts, `caller:base64publickey` (comma-separated; a caller may be
    # listed twice while its key is rotated). Empty: every signed call is refused.
    internal_trusted_keys: CsvList = []
    # How old a signed call may be when a service receives it; its nonce is remembered that long.
    # Short, since a call is signed the moment it is sent: 30 s covers queueing and clock drift.
    internal_context_max_age_seconds: int = Field(default=30, ge=1, le=300)

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
        """The shared secrets this process uses, by setting name (the gateway and iam add theirs)."""
        return {}

    @cached_property
    def call_signer(self) -> CallSigner | None:
        """Who this process is on the calls it makes (libs/common/grpc_client.py)."""
        if not self.internal_signing_key:
            return None
        return CallSigner(self.service_name, load_private_key(self.internal_signing_key))

    @cached_property
    def trusted_callers(self) -> dict[str, tuple[Ed25519PublicKey, ...]]:
        """The callers this service accepts and their keys (libs/common/call_signing.py)."""
        return load_trusted_keys(self.internal_trusted_keys)

    def prod_problems(self) -> list[str]:
        problems = []
        for name, value in self.secrets_to_check().items():
            if value.strip().lower() in PLACEHOLDER_SECRETS or len(value) < 32:
                problems.append(f"{name} is a placeholder or shorter than 32 characters")
        if self.CALLS_SERVICES and not self.internal_signing_key:
            problems.append(
                f"INTERNAL_SIGNING_KEY is required: {self.service_name} signs the calls it makes with it "
                f"(python -m libs.common.internal_keys new {self.service_name})"
            )
        if self.SERVES_CALLS and not self.internal_trusted_keys:
            problems.append(
                "INTERNAL_TRUSTED_KEYS is empty: this service would refuse every call; list its callers' "
                "public keys as caller:base64publickey"
            )
        if self.metrics_enabled and not self.metrics_token:
            problems.append("METRICS_ENABLED requires METRICS_TOKEN")
        # Only a process given a NATS user connects to NATS (the migrations do not); without one it
        # would connect anonymously, which the server refuses (deploy/nats/nats.conf).
        if self.nats_user and (
            self.nats_password.strip().lower() in PLACEHOLDER_SECRETS or len(self.nats_password) < 32
        ):
            problems.append(
                f"NATS_PASSWORD (of NATS user {self.nats_user}) is a placeholder or shorter than 32 characters"
            )
        return problems

    @field_validator("internal_trusted_keys", mode="before")
    @classmethod
    def _trusted_csv(cls, value: object) -> list[str]:
        return split_csv(value)

    @model_validator(mode="after")
    def _check_internal_keys(self) -> CommonSettings:
        # Refused in every environment: a mistyped key must not leave a service open or mute. The
        # messages never repeat a key (load_private_key says what is wrong, not what was given).
        if self.internal_signing_key:
            load_private_key(self.internal_signing_key)
        load_trusted_keys(self.internal_trusted_keys)
        return self

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


class AuthSecretSettings(CommonSettings):
    """Settings of the two processes holding AUTH_SECRET_KEY: iam signs access and sign-up tokens and
    encrypts TOTP secrets and waiting temporary passwords with keys derived from it; the gateway
    verifies the access tokens. AUTH_SECRET_KEY_PREVIOUS lists the keys it replaced: they still verify
    and decrypt, never sign or encrypt, so the key is rotated without signing anyone out or locking
    out MFA users (docs/auth.md, "Rotating AUTH_SECRET_KEY")."""

    auth_secret_key: str = Field(default="dev-auth-secret", repr=False)
    # Comma-separated (or a JSON list); empty outside a rotation.
    auth_secret_key_previous: CsvList = Field(default=[], repr=False)

    @property
    def auth_secret_keys(self) -> tuple[str, ...]:
        """What verifies and decrypts: the current key first (the common case costs one try), then
        each earlier one, without repeats."""
        return tuple(dict.fromkeys([self.auth_secret_key, *self.auth_secret_key_previous]))

    def secrets_to_check(self) -> dict[str, str]:
        # Each earlier key is named by its position, never by its value: a weak one still opens
        # whatever it signed or encrypted, so prod refuses it as it refuses a weak current key.
        previous = {
            f"AUTH_SECRET_KEY_PREVIOUS[{position}]": key
            for position, key in enumerate(self.auth_secret_key_previous, start=1)
        }
        return {**super().secrets_to_check(), "AUTH_SECRET_KEY": self.auth_secret_key, **previous}

    @field_validator("auth_secret_key_previous", mode="before")
    @classmethod
    def _previous_csv(cls, value: object) -> list[str]:
        return split_csv(value)


def sqlalchemy_url(url: str) -> str:
    """postgresql://... as operators write it, with the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def where(url: str) -> str:
    """user@host:port/database of a Postgres URL for a message: never its password."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(libpq_url(url))
    except Error:
        return "a URL that is not a Postgres URL"
    return f"{info.get('user', '')}@{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def libpq_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url
