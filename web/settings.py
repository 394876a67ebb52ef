"""The web process's settings (docs/web.md). It holds one secret of its own, the key that seals its
session cookie; everything else it knows it asks the gateway."""

from __future__ import annotations

from pydantic import Field, field_validator

from libs.common.settings import CommonSettings, CsvList, parse_networks, split_csv


class WebSettings(CommonSettings):
    service_name: str = "web"
    web_host: str = "0.0.0.0"
    web_port: int = 8080
    # Where the web process reaches the gateway (server to server; never shown to a browser).
    gateway_url: str = "http://127.0.0.1:8000"
    # The gateway as the browser sees it, for the signed photo links the gateway mints. Empty: the
    # same origin as the console (the deployments put both behind one proxy).
    web_gateway_public_url: str = ""
    # The console's own public address, for the worker links a dispatcher hands out. Empty: the
    # address the request came in on.
    web_public_url: str = ""
    # Seals (AES-GCM) the session cookie that carries the staff and portal tokens. Required in prod.
    web_session_secret: str = Field(default="dev-web-session-secret", repr=False)
    # A staff sign-in lasts at most this long in the console, whatever the refresh token allows.
    web_session_ttl_minutes: int = Field(default=12 * 60, ge=5, le=60 * 24 * 14)
    # None: Secure cookies in prod only (a workstation serves http://127.0.0.1).
    web_cookie_secure: bool | None = None
    web_gateway_timeout_seconds: float = Field(default=10, gt=0, le=120)
    # Which peers may say who the client is (X-Forwarded-For), as in the gateway: the web passes the
    # client's address on, so the gateway's rate limits and admin allowlist see the person, not us.
    trust_proxy_headers: bool = False
    trusted_proxy_cidrs: CsvList = ["127.0.0.1/32", "::1/128"]
    metrics_enabled: bool = False
    # Where the photo storage serves images when the gateway's signed link redirects there (r2,
    # cloudflare_images): the browser follows the redirect, and the CSP's img-src must allow it.
    web_img_sources: CsvList = []

    @field_validator("trusted_proxy_cidrs", "web_img_sources", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> list[str]:
        return split_csv(value)

    @property
    def proxy_networks(self) -> list:  # type: ignore[type-arg]
        return parse_networks(self.trusted_proxy_cidrs, "TRUSTED_PROXY_CIDRS")

    @property
    def cookie_secure(self) -> bool:
        return self.is_prod if self.web_cookie_secure is None else self.web_cookie_secure

    def secrets_to_check(self) -> dict[str, str]:
        return {"WEB_SESSION_SECRET": self.web_session_secret}
