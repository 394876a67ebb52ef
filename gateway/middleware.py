"""The gateway's edge, as pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request).

Outermost first: request id, metrics, client IP, CORS (Starlette's), rate limit, body size, admin IP
allowlist, authentication, read-only. app.py adds them in reverse.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jwt
import structlog
from cws.iam.v1 import iam_pb2
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection

from gateway.portal_auth import PORTAL_PREFIXES
from gateway.principal import BASIC, JWT, Principal
from gateway.problems import ProblemError, problem_response
from gateway.revocations import RevokedSessions
from gateway.settings import GatewaySettings, constant_time_equals
from libs.common.logs import get_logger
from libs.common.tokens import decode_access

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = get_logger(__name__)

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_5XX = Counter("http_5xx_errors_total", "HTTP responses with a 5xx status", ["method", "route"])
RATE_LIMITED = Counter("rate_limit_rejections_total", "Requests refused by the rate limiter", ["limit"])
RATE_LIMIT_ERRORS = Counter("rate_limit_backend_errors_total", "Rate limiter storage failures (failed open)")

ADMIN_PREFIXES = ("/v1/admin/", "/v1/iam/")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METRICS_PATHS = frozenset({"/metrics", "/v1/metrics"})
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", *METRICS_PATHS})
# Credential endpoints get the tighter per-IP limit: guessing, and mail-bombing through magic links.
LOGIN_PATHS = frozenset(
    {"/v1/auth/login", "/v1/auth/signup", "/v1/auth/refresh", "/v1/auth/2fa/verify", "/client/login/request"}
)
# Starting break-glass is itself how writes are re-enabled during read-only mode.
READ_ONLY_EXEMPT = frozenset({"/v1/admin/break-glass/start"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def is_admin_path(path: str) -> bool:
    return path.startswith(ADMIN_PREFIXES)


async def send_problem(scope: Scope, receive: Receive, send: Send, error: ProblemError) -> None:
    response = problem_response(
        error.status,
        error.code,
        error.detail,
        request_id=state(scope).get("request_id", ""),
        instance=scope.get("path", ""),
        errors=error.errors,
        headers=error.headers,
    )
    await response(scope, receive, send)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state(scope)["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "org_id", "principal")


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(elapsed)
            if status >= 500:
                HTTP_5XX.labels(method, route).inc()
            # One access line per request; request id, org and principal come from contextvars.
            log.info("http_request", method=method, route=route, status=status, ms=round(elapsed * 1000, 2))


class ClientIpMiddleware:
    """X-Forwarded-For is believed only when the direct peer is a trusted proxy; the client is the
    first address, from the right, that is not a trusted proxy."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.trust = settings.trust_proxy_headers
        self.proxies = settings.proxy_networks

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    def resolve(self, peer: str, forwarded_for: str) -> str:
        if not (self.trust and forwarded_for and self._trusted(peer)):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # garbage in the header: fall back to what we know
        return hops[0] if hops else peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = (scope.get("client") or ("", 0))[0]
            state(scope)["client_ip"] = self.resolve(peer, Headers(scope=scope).get("x-forwarded-for", ""))
        await self.app(scope, receive, send)


def limiter_storage(redis_url: str) -> Storage:
    if redis_url:
        return RedisStorage("async+" + redis_url if not redis_url.startswith("async+") else redis_url)
    return MemoryStorage()


class RateLimitMiddleware:
    """Per client IP, RATE_LIMIT_PER_MINUTE on everything and a tighter limit on credential
    endpoints, in Redis when REDIS_URL is set (shared by every gateway) and in-process otherwise.
    If Redis fails the request goes through (logged and counted): an outage of the limiter must
    not become an outage of the product."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings, storage: Storage) -> None:
        self.app = app
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.general = RateLimitItemPerMinute(settings.rate_limit_per_minute)
        self.login = RateLimitItemPerMinute(settings.login_rate_limit_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNLIMITED_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        ip = state(scope).get("client_ip", "")
        item, name = (self.login, "login") if path in LOGIN_PATHS else (self.general, "general")
        try:
            allowed = await self.limiter.hit(item, name, ip)
            stats = await self.limiter.get_window_stats(item, name, ip)
        except Exception as exc:  # Redis down or slow: fail open, loudly
            RATE_LIMIT_ERRORS.inc()
            log.warning("rate_limiter_unavailable", error=str(exc))
            return await self.app(scope, receive, send)
        reset = max(int(stats.reset_time - time.time()), 1)
        headers = {
            "RateLimit-Policy": f"{item.amount};w={item.get_expiry()}",
            "RateLimit": f"limit={item.amount}, remaining={stats.remaining}, reset={reset}",
        }
        if not allowed:
            RATE_LIMITED.labels(name).inc()
            error = ProblemError(
                429,
                "rate_limited",
                f"too many requests; try again in {reset} seconds",
                headers={**headers, "Retry-After": str(reset)},
            )
            return await send_problem(scope, receive, send, error)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for key, value in headers.items():
                    response_headers[key] = value
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = ProblemError(413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                return await send_problem(
                    scope, receive, send, ProblemError(400, "bad_request", "Content-Length is not a number")
                )
            if int(length) > self.max_bytes:
                return await send_problem(scope, receive, send, too_large)
        else:
            # No Content-Length (chunked): read up to the limit before the app runs, because an
            # error raised inside the app's body parsing would turn into FastAPI's generic 400.
            buffered = await self._buffer(scope, receive, send, too_large)
            if buffered is None:
                return None
            receive = buffered
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)

    async def _buffer(
        self, scope: Scope, receive: Receive, send: Send, too_large: ProblemError
    ) -> Receive | None:
        """The whole body, replayed to the app; None when it was too large (413 already sent)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await send_problem(scope, receive, send, too_large)
                return None
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay


class AdminAllowlistMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.networks = settings.admin_networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.networks and is_admin_path(scope.get("path", "")):
            try:
                ip = ipaddress.ip_address(state(scope).get("client_ip", ""))
                allowed = any(ip in net for net in self.networks)
            except ValueError:
                allowed = False
            if not allowed:
                error = ProblemError(403, "ip_not_allowed", "your IP address is not on the admin allowlist")
                return await send_problem(scope, receive, send, error)
        await self.app(scope, receive, send)


class AuthMiddleware:
    """Resolves the caller from a bearer access token (verified locally, revocations from events)
    or legacy Basic Auth. No credentials means anonymous: each route decides whether that is enough."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings, revoked: RevokedSessions) -> None:
        self.app = app
        self.settings = settings
        self.revoked = revoked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Metrics carry their own bearer (METRICS_TOKEN), checked by the route; it is not a JWT.
        if scope["type"] != "http" or scope.get("path", "") in METRICS_PATHS:
            return await self.app(scope, receive, send)
        try:
            principal = self.resolve(Headers(scope=scope), scope.get("path", ""))
            if principal is not None and principal.session_id and not self.revoked.live:
                await self._check_with_iam(scope, principal)
        except ProblemError as error:
            return await send_problem(scope, receive, send, error)
        state(scope)["principal"] = principal
        if principal is not None:
            structlog.contextvars.bind_contextvars(org_id=principal.org_id, principal=principal.principal_id)
        await self.app(scope, receive, send)

    def resolve(self, headers: Headers, path: str) -> Principal | None:
        if path.startswith(PORTAL_PREFIXES):
            # Portal credentials (a magic-link token as cookie or bearer) are no access tokens:
            # the portal routes verify them with IAM (gateway/portal_auth.py).
            return None
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and credentials:
            principal = self._bearer(credentials.strip())
            if self.settings.admin_mfa_required and is_admin_path(path) and not principal.mfa_verified:
                raise ProblemError(
                    401,
                    "mfa_required",
                    "admin routes need a token from a TOTP-verified login (ADMIN_MFA_REQUIRED)",
                )
            return principal
        if scheme == "basic" and credentials and self.settings.basic_credentials:
            return self._basic(credentials.strip(), headers)
        if authorization:
            raise ProblemError(
                401,
                "invalid_credentials",
                "unsupported or malformed Authorization header",
                headers=self._challenge(),
            )
        return None

    async def _check_with_iam(self, scope: Scope, principal: Principal) -> None:
        """Fail safe: without the revocation feed, a session is believed only if IAM says it stands."""
        backends = scope["app"].state.backends
        response = await backends.iam.call(
            HTTPConnection(scope),
            "CheckSession",
            iam_pb2.CheckSessionRequest(session_id=principal.session_id),
            principal,
        )
        if not response.active:
            raise ProblemError(
                401,
                "session_revoked",
                "this session has been signed out",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    def _challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="cws-admin"'} if self.settings.basic_credentials else {}

    def _bearer(self, token: str) -> Principal:
        try:
            claims = decode_access(token, self.settings.auth_secret_key)
        except (jwt.InvalidTokenError, ValueError, KeyError):
            raise ProblemError(
                401,
                "invalid_token",
                "the access token is invalid or expired",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        if self.revoked.is_revoked(claims.session_id):
            raise ProblemError(
                401,
                "session_revoked",
                "this session has been signed out",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return Principal(
            principal_id=claims.user_id,
            org_id=claims.org_id,
            role=claims.role,
            auth_method=JWT,
            mfa_verified=claims.mfa_verified,
            session_id=claims.session_id,
        )

    def _basic(self, credentials: str, headers: Headers) -> Principal:
        invalid = ProblemError(
            401, "invalid_credentials", "username or password is wrong", headers=self._challenge()
        )
        try:
            username, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid from None
        matched = None
        for credential in self.settings.basic_credentials:  # no early exit: same time for every pair
            if constant_time_equals(username, credential.username) & constant_time_equals(
                password, credential.password
            ):
                matched = credential
        if matched is None:
            raise invalid
        org_id = self.settings.default_org_id
        test_org = headers.get("x-test-org", "")
        if test_org and self.settings.test_org_header_allowed:
            try:
                org_id = str(uuid.UUID(test_org))
            except ValueError:
                raise ProblemError(400, "bad_request", "X-Test-Org must be a UUID") from None
        return Principal(
            principal_id=f"basic:{matched.username}",
            org_id=org_id,
            role=matched.role,
            auth_method=BASIC,
            username=matched.username,
        )


class ReadOnlyMiddleware:
    """ADMIN_READ_ONLY turns admin/IAM writes into 409, unless a valid break-glass token of the
    caller's own org comes with them (then the write is marked and audited with its reason)."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.enabled = settings.admin_read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            not self.enabled
            or scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not is_admin_path(path)
            or path in READ_ONLY_EXEMPT
        ):
            return await self.app(scope, receive, send)
        token = Headers(scope=scope).get("x-break-glass-token", "").strip()
        principal: Principal | None = state(scope).get("principal")
        if not token:
            error = ProblemError(
                409,
                "read_only",
                "admin writes are disabled (ADMIN_READ_ONLY); "
                "start a break-glass session and send X-Break-Glass-Token",
            )
            return await send_problem(scope, receive, send, error)
        if principal is None:
            error = ProblemError(401, "unauthenticated", "authentication required")
            return await send_problem(scope, receive, send, error)
        backends = scope["app"].state.backends
        try:
            found = await backends.iam.call(
                HTTPConnection(scope),
                "VerifyBreakGlass",
                iam_pb2.VerifyBreakGlassRequest(token=token),
                principal,
            )
        except ProblemError as error:
            return await send_problem(scope, receive, send, error)
        state(scope)["principal"] = principal.with_break_glass(found.session_id, found.reason)
        await self.app(scope, receive, send)
