"""Email through SendGrid's v3 Mail Send API (POST /v3/mail/send; 202 means accepted).

4xx answers other than 408/429 refuse this message for good, except 401/403: a wrong or revoked
API key refuses every message, which is our fault, not the message's, so those retry (and open the
breaker) rather than kill the whole queue."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from services.notify.adapters.base import (
    Email,
    Outbound,
    PermanentFailure,
    Send,
    StatelessLane,
    TransientFailure,
    compose_email,
)
from services.notify.settings import NotifySettings

RETRYABLE = {401, 403, 408, 429}


def mail_send_body(email: Email, outbox_id: str) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": email.to}]}],
        "from": {"email": email.from_email, **({"name": email.from_name} if email.from_name else {})},
        "subject": email.subject,
        "content": [{"type": "text/plain", "value": email.text or " "}],
        "headers": {"Message-ID": email.message_id},
        # Comes back on SendGrid's event webhook, tying a bounce report to the outbox row.
        "custom_args": {"outbox_id": outbox_id},
    }


def _error_text(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        detail = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    except ValueError:
        detail = response.text[:200]
    return f"SendGrid {response.status_code}: {detail}".rstrip(": ")


class SendGridAdapter:
    name = "sendgrid"

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            base_url=settings.sendgrid_api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {settings.sendgrid_api_key}"},
            timeout=settings.smtp_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
        )

    def lane(self) -> AbstractAsyncContextManager[Send]:
        return StatelessLane(self.send)

    async def send(self, row: Outbound) -> None:
        email = compose_email(row, self.settings)
        try:
            response = await self.client.post("/v3/mail/send", json=mail_send_body(email, str(row.id)))
        except httpx.HTTPError as exc:
            raise TransientFailure(f"SendGrid unreachable: {exc or type(exc).__name__}") from exc
        if 200 <= response.status_code < 300:
            return
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE:
            raise PermanentFailure(_error_text(response))
        raise TransientFailure(_error_text(response))

    async def close(self) -> None:
        await self.client.aclose()
