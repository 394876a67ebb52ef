"""Gateway settings: the seed documents' names. In APP_ENV=prod start-up fails fast on anything
that would quietly weaken the edge (seed 002, "Production config validation")."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from libs.common.roles import Role
from libs.common.settings import PLACEHOLDER_SECRETS, AuthSecretSettings, CsvList, parse_networks, split_csv

# The legacy Basic Auth pairs (<name>_BASIC_USERNAME/PASSWORD) and the role each signs in as.
BASIC_ROLES = (
    ("owner", Role.OWNER),
    ("admin", Role.ADMIN),
    ("dispatcher", Role.DISPATCHER),
    ("accountant", Role.FINANCE),
    ("viewer", Role.VIEWER),
)
MIN_BASIC_PASSWORD = 12


@dataclass(frozen=True)
class BasicCredential:
    username: str
    password: str
    role: str
    name: str


class GatewaySettings(AuthSecretSettings):
    # The gateway calls every service and serves none over gRPC: it holds INTERNAL_SIGNING_KEY and
    # no INTERNAL_TRUSTED_KEYS.
    CALLS_SERVICES: ClassVar[bool] = True
    service_name: str = "gateway"
    # AUTH_SECRET_KEY (and AUTH_SECRET_KEY_PREVIOUS, AuthSecretSettings) verify the access tokens iam
    # issues (HS256). Portal tokens are verified by iam, so the gateway holds neither portal secret.
    gateway_host: str = "0.0.0.0"
    gateway_port: int = 8000
    gateway_workers: int = Field(default=1, ge=1, le=64)
    iam_grpc_target: str = "127.0.0.1:50051"
    booking_grpc_target: str = "127.0.0.1:50052"
    billing_grpc_target: str = "127.0.0.1:50053"
    media_grpc_target: str = "127.0.0.1:50054"
    notify_grpc_target: str = "127.0.0.1:50055"
    jobs_grpc_target: str = "127.0.0.1:50056"
    # Empty: integrations is not deployed here (its routes answer 503 saying so; /readyz leaves it out).
    integrations_grpc_target: str = "127.0.0.1:50057"
    # The same setting media reads (seed 002): the gateway refuses a larger upload with 413 before
    # streaming it on (Content-Length first, then counting), media checks again.
    order_photo_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    # How long a timeline waits for each service's share (issue 13): one slow service leaves its
    # entries out (the answer is marked partial) instead of holding the whole timeline up.
    timeline_source_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    cors_origins: CsvList = []
    strict_cors: bool = False
    # Cross-origin requests may carry cookies and Authorization (the portals' session cookies).
    cors_allow_credentials: bool = True
    trust_proxy_headers: bool = False
    trusted_proxy_ips: CsvList = []
    trusted_proxy_cidrs: CsvList = []

    rate_limit_per_minute: int = 120
    login_rate_limit_per_minute: int = 10
    max_request_body_bytes: int = 1_048_576

    admin_ip_allowlist_cidrs: CsvList = []
    admin_read_only: bool = False
    admin_mfa_required: bool = False

    legacy_basic_auth_enabled: bool | None = None
    owner_basic_username: str = ""
    owner_basic_password: str = ""
    admin_basic_username: str = ""
    admin_basic_password: str = ""
    dispatcher_basic_username: str = ""
    dispatcher_basic_password: str = ""
    accountant_basic_username: str = ""
    accountant_basic_password: str = ""
    viewer_basic_username: str = ""
    viewer_basic_password: str = ""
    default_org_id: str = ""

    signup_enabled: bool = False
    jobs_enabled: bool = False
    job_heartbeat_required: bool = False
    job_heartbeat_ttl_seconds: int = 180
    deposits_enabled: bool = False
    export_mode: str = "off"
    strict_policy_mode: bool = False
    captcha_mode: str = "off"
    turnstile_verify_url: str = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
    # Public endpoints may name their org by a subdomain of this domain (acme.example.com → "acme").
    public_base_domain: str = ""
    email_mode: str = "off"
    order_storage_backend: str = "local"
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    turnstile_secret_key: str = ""
    sendgrid_api_key: str = ""
    smtp_password: str = ""
    testing: bool = False

    @field_validator(
        "cors_origins", "trusted_proxy_ips", "trusted_proxy_cidrs", "admin_ip_allowlist_cidrs", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> list[str]:
        return split_csv(value)

    @model_validator(mode="after")
    def _check_networks(self) -> GatewaySettings:
        # Unparsable CIDRs are refused in every environment: a typo must not open the admin door.
        parse_networks(self.admin_ip_allowlist_cidrs, "ADMIN_IP_ALLOWLIST_CIDRS")
        parse_networks(self.trusted_proxy_cidrs, "TRUSTED_PROXY_CIDRS")
        for ip in self.trusted_proxy_ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXY_IPS: {ip!r} is not an IP address") from exc
        return self

    def prod_problems(self) -> list[str]:
        problems = super().prod_problems()
        if self.strict_cors and (not self.cors_origins or "*" in self.cors_origins):
            problems.append("STRICT_CORS requires explicit CORS_ORIGINS (no '*')")
        if self.cors_allow_credentials and "*" in self.cors_origins:
            # With credentials, Starlette answers a wildcard with the caller's own origin: any site
            # could then call the API as the signed-in user (cookies and all).
            problems.append(
                "CORS_ORIGINS contains '*' while CORS_ALLOW_CREDENTIALS is on: any website could make "
                "credentialed requests as the signed-in user; list the exact origins "
                "(or set CORS_ALLOW_CREDENTIALS=false)"
            )
        if self.testing:
            problems.append("TESTING must be off in prod")
        if self.captcha_mode.lower() not in ("", "off", "disabled") and not self.turnstile_secret_key:
            problems.append("CAPTCHA_MODE requires TURNSTILE_SECRET_KEY")
        if self.basic_auth_enabled:
            for name, _role in BASIC_ROLES:
                user = getattr(self, f"{name}_basic_username")
                password = getattr(self, f"{name}_basic_password")
                if user and not strong_basic_password(password):
                    problems.append(
                        f"{name.upper()}_BASIC_PASSWORD is weak (12+ characters, not a placeholder)"
                    )
        return problems

    @property
    def basic_auth_enabled(self) -> bool:
        if self.legacy_basic_auth_enabled is None:
            return not self.is_prod  # seed 002: defaults to false in prod
        return self.legacy_basic_auth_enabled

    @property
    def test_org_header_allowed(self) -> bool:
        return not self.is_prod and (self.is_dev_or_test or self.testing)

    @cached_property
    def basic_credentials(self) -> tuple[BasicCredential, ...]:
        """Configured pairs with strong passwords only; weak ones are ignored (and refused in prod)."""
        if not self.basic_auth_enabled:
            return ()
        found = []
        for name, role in BASIC_ROLES:
            user = getattr(self, f"{name}_basic_username")
            password = getattr(self, f"{name}_basic_password")
            if user and strong_basic_password(password):
                found.append(BasicCredential(user, password, role, name))
        return tuple(found)

    @cached_property
    def admin_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return parse_networks(self.admin_ip_allowlist_cidrs, "ADMIN_IP_ALLOWLIST_CIDRS")

    @cached_property
    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        nets = parse_networks(self.trusted_proxy_cidrs, "TRUSTED_PROXY_CIDRS")
        nets += parse_networks(self.trusted_proxy_ips, "TRUSTED_PROXY_IPS")
        return nets


def strong_basic_password(password: str) -> bool:
    return len(password) >= MIN_BASIC_PASSWORD and password.strip().lower() not in PLACEHOLDER_SECRETS


def constant_time_equals(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())
