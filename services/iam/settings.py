from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from libs.common.settings import AuthSecretSettings
from services.iam import passwords

# OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1 at least.
OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2


class IamSettings(AuthSecretSettings):
    # Reported by /v1/admin/feature-flags (libs/common OpsService.GetFeatureFlags).
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ("signup_enabled",)
    # iam serves the gateway, notify and jobs, and calls no one: no INTERNAL_SIGNING_KEY.
    SERVES_CALLS: ClassVar[bool] = True
    service_name: str = "iam"
    # iam is the only service holding these: it issues access tokens and encrypts TOTP secrets with
    # AUTH_SECRET_KEY (and reads what earlier keys wrote with AUTH_SECRET_KEY_PREVIOUS, both in
    # AuthSecretSettings; the gateway verifies the tokens), and issues and verifies portal tokens.
    client_portal_secret: str = Field(default="dev-client-portal-secret", repr=False)
    worker_portal_secret: str = Field(default="dev-worker-portal-secret", repr=False)
    iam_grpc_port: int = 50051
    iam_http_port: int = 8101
    signup_enabled: bool = False
    # Consecutive failures before logins to an account are slowed, and the hard stop NIST SP 800-63B
    # sets (no more than 100 consecutive failures on one account).
    # Bounded: 0 would throttle or lock every account at once (the checks are `failures >= setting`).
    login_throttle_after_failures: int = Field(default=5, ge=1, le=1000)
    login_throttle_max_seconds: int = Field(default=900, ge=1, le=86400)
    login_lockout_failures: int = Field(default=100, ge=1, le=100_000)
    # The gateway accepts ttl_minutes up to 1440; iam refuses more than this with a 422 naming it.
    break_glass_max_ttl_minutes: int = Field(default=240, ge=1, le=1440)
    totp_issuer: str = "CleanWithSnapshot"
    # Dev/test only: RequestClientLogin also returns the magic-link token, so a developer or a test
    # can follow the link without an inbox. Refused in APP_ENV=prod.
    client_magic_link_in_response: bool = False
    # How long a portal session lasts once a link is followed (issue 9, hole 8). The links themselves
    # live CLIENT_PORTAL_TOKEN_TTL_MINUTES / WORKER_PORTAL_TOKEN_TTL_MINUTES and are used once; the
    # defaults keep what a portal sign-in lasted when the link itself was the session.
    client_portal_session_ttl_minutes: int = Field(default=60 * 24, ge=1, le=60 * 24 * 30)
    worker_portal_session_ttl_minutes: int = Field(default=60 * 12, ge=1, le=60 * 24 * 30)
    # Seed 000: with EMAIL_TEMP_PASSWORDS=true reset and onboarding emails carry the temporary
    # password: iam holds it (encrypted) until notify claims it once (temp_passwords.py); the events
    # never carry it. Off, the emails only notify.
    email_temp_passwords: bool = False
    # A temporary password (user created, password reset) works this long, then sign-in refuses it as
    # a wrong password and an admin resets again (issue 9). 24 h: an admin hands it over the same
    # working day in any time zone, and a copy left in an inbox or a chat is dead by the next.
    auth_temp_password_ttl_minutes: int = Field(default=60 * 24, ge=5, le=60 * 24 * 30)
    # How long a sign-up's confirmation link works (signups.py); unconfirmed requests are then dropped.
    signup_confirm_ttl_minutes: int = Field(default=60 * 24, ge=5, le=60 * 24 * 7)
    # argon2id cost of new password hashes (services/iam/passwords.py). The defaults are argon2-cffi's
    # (RFC 9106 low-memory: t=3, 64 MiB, p=4, about 0.1 s per hash here); prod refuses less than
    # OWASP's minimum (t=2, 19 MiB). Tests use a cheap cost: every sign-in hashes.
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=64, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=16)

    def secrets_to_check(self) -> dict[str, str]:
        return {
            **super().secrets_to_check(),
            "CLIENT_PORTAL_SECRET": self.client_portal_secret,
            "WORKER_PORTAL_SECRET": self.worker_portal_secret,
        }

    def prod_problems(self) -> list[str]:
        problems = super().prod_problems()
        if self.client_magic_link_in_response:
            problems.append("CLIENT_MAGIC_LINK_IN_RESPONSE must be off in prod")
        if (
            self.password_hash_memory_kib < OWASP_MIN_MEMORY_KIB
            or self.password_hash_time_cost < OWASP_MIN_TIME_COST
        ):
            problems.append(
                f"PASSWORD_HASH_MEMORY_KIB must be at least {OWASP_MIN_MEMORY_KIB} and PASSWORD_HASH_TIME_COST "
                f"at least {OWASP_MIN_TIME_COST} in prod (OWASP's argon2id minimum)"
            )
        return problems

    def configure_password_hashing(self) -> None:
        passwords.configure(
            time_cost=self.password_hash_time_cost,
            memory_kib=self.password_hash_memory_kib,
            parallelism=self.password_hash_parallelism,
        )
