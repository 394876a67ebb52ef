from __future__ import annotations

from typing import ClassVar

from libs.common.settings import CommonSettings


class IamSettings(CommonSettings):
    # Reported by /v1/admin/feature-flags (libs/common OpsService.GetFeatureFlags).
    FEATURE_FLAGS: ClassVar[tuple[str, ...]] = ("signup_enabled",)
    service_name: str = "iam"
    iam_grpc_port: int = 50051
    iam_http_port: int = 8101
    signup_enabled: bool = False
    # Consecutive failures before logins to an account are slowed, and the hard stop NIST SP 800-63B
    # sets (no more than 100 consecutive failures on one account).
    login_throttle_after_failures: int = 5
    login_throttle_max_seconds: int = 900
    login_lockout_failures: int = 100
    break_glass_max_ttl_minutes: int = 240
    totp_issuer: str = "CleanWithSnapshot"
    # Dev/test only: RequestClientLogin also returns the magic-link token, so a developer or a test
    # can follow the link without an inbox. Refused in APP_ENV=prod.
    client_magic_link_in_response: bool = False
    # Seed 000: with EMAIL_TEMP_PASSWORDS=true reset and onboarding emails carry the temporary
    # password (it then travels in user.created / user.password_reset for notify); off, they only notify.
    email_temp_passwords: bool = False

    def prod_problems(self) -> list[str]:
        problems = super().prod_problems()
        if self.client_magic_link_in_response:
            problems.append("CLIENT_MAGIC_LINK_IN_RESPONSE must be off in prod")
        return problems
