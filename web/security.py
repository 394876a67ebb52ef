"""What every answer of the web process carries, and what every form post must prove.

- Headers: a Content-Security-Policy with no inline script or style (`script-src 'self'`), no
  framing, no referrer leaking a portal link's token, and `no-store` on every page (they show people's
  data and tokens live in forms).
- CSRF: a form post must come from our own pages (fetch metadata: `Sec-Fetch-Site` same-origin or
  none, else an `Origin` of our own host) and carry the session's CSRF token.
- The client's address: X-Forwarded-For is believed only from TRUSTED_PROXY_CIDRS, as in the gateway."""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.session import COOKIE_NAME, Session, SessionCodec
from web.settings import WebSettings


def content_security_policy(img_sources: list[str], local_forms: bool = False) -> str:
    """`form-action` covers where a posted form may be redirected (Stripe Checkout: https). On a
    workstation the payment page is the local Stripe on http://127.0.0.1."""
    images = " ".join(["'self'", "data:", *img_sources])
    forms = "'self' https:" + (" http://127.0.0.1:* http://localhost:*" if local_forms else "")
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; form-action {forms}; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


class WebMiddleware:
    """Opens the session cookie into `request.state.session`, works out the client's address, and on
    the way out seals the session again (when it changed) and adds the security headers."""

    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings
        self.codec = SessionCodec(settings.web_session_secret, settings.web_session_ttl_minutes * 60)
        gateway = _origin(settings.web_gateway_public_url)
        images = ([gateway] if gateway else []) + list(settings.web_img_sources)
        self.csp = content_security_policy(images, local_forms=settings.is_dev_or_test)
        self.proxies = settings.proxy_networks

    def client_ip(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("", 0))[0]
        forwarded = Headers(scope=scope).get("x-forwarded-for", "")
        if not (self.settings.trust_proxy_headers and forwarded and self._trusted(peer)):
            return peer or "127.0.0.1"
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer
        return peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        raw = request.cookies.get(COOKIE_NAME, "")
        opened = self.codec.open(raw) if raw else None
        session = Session(opened or {}, dirty=bool(raw) and opened is None)
        staff = session.staff
        if staff is not None and time.time() - float(staff.get("since") or 0) > self.codec.ttl_seconds:
            session.drop("staff", "break_glass")  # signed in longer ago than WEB_SESSION_TTL_MINUTES
        state: dict[str, Any] = scope.setdefault("state", {})
        state["session"] = session
        state["client_ip"] = self.client_ip(scope)
        state["read_only"] = False
        static = scope["path"].startswith("/static/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", self.csp)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Permissions-Policy", "camera=(self), geolocation=(), microphone=()")
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
                if session.dirty:
                    headers.append("Set-Cookie", self._cookie(session))
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _cookie(self, session: Session) -> str:
        secure = "; Secure" if self.settings.cookie_secure else ""
        if not session.data:
            return f"{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"
        value = self.codec.seal(session.data)
        max_age = self.settings.web_session_ttl_minutes * 60
        return f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"


class CsrfRefused(Exception):
    """A form post that did not come from our own page (403)."""


def check_form_origin(request: Request, form_token: str | None) -> None:
    """Raises CsrfRefused unless the post came from our own page with this session's token."""
    site = request.headers.get("sec-fetch-site", "").lower()
    if site and site not in {"same-origin", "none"}:
        raise CsrfRefused("this form was sent from another site")
    if not site:
        origin = request.headers.get("origin", "")
        if origin and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise CsrfRefused("this form was sent from another site")
    session: Session = request.state.session
    expected = session.get("csrf")
    if not isinstance(expected, str) or not form_token or not hmac.compare_digest(expected, form_token):
        raise CsrfRefused("this form has expired; reload the page and try again")
