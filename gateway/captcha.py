"""Cloudflare Turnstile verification for public forms (CAPTCHA_MODE=turnstile). The verify endpoint
is a setting so tests point it at a local server. Fails closed: no verification, no lead."""

from __future__ import annotations

import httpx

from gateway.problems import ProblemError
from gateway.settings import GatewaySettings
from libs.common.logs import get_logger

log = get_logger(__name__)


class Captcha:
    def __init__(self, settings: GatewaySettings, client: httpx.AsyncClient) -> None:
        self.mode = settings.captcha_mode.lower()
        self.secret = settings.turnstile_secret_key
        self.url = settings.turnstile_verify_url
        self.client = client

    @property
    def enabled(self) -> bool:
        return self.mode not in ("", "off", "disabled")

    async def verify(self, token: str | None, client_ip: str) -> None:
        if not self.enabled:
            return
        if not token:
            raise ProblemError(
                400,
                "captcha_required",
                "a captcha token is required (captcha_token)",
                errors=[{"field": "captcha_token", "message": "is required"}],
            )
        try:
            response = await self.client.post(
                self.url, data={"secret": self.secret, "response": token, "remoteip": client_ip}, timeout=5
            )
            result = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("captcha_unavailable", error=str(exc))
            raise ProblemError(
                503,
                "captcha_unavailable",
                "captcha verification is unavailable; try again",
                headers={"Retry-After": "5"},
            ) from None
        if not result.get("success"):
            raise ProblemError(
                400,
                "captcha_failed",
                "captcha verification failed",
                errors=[{"field": "captcha_token", "message": "was not accepted"}],
            )
