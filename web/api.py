"""Calls to the gateway's REST API on behalf of the person in front of the browser.

Staff calls carry the session's access token (refreshed shortly before it expires); portal calls carry
the portal session token as a Bearer. The client's address goes along in X-Forwarded-For, so the
gateway's rate limits, admin allowlist and audit see the person, not this process. A Problem+JSON
answer becomes `ApiError`, which the pages show next to the field it names."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Literal

import httpx
import orjson
import structlog
from fastapi import Request

from web.session import Session

log = structlog.get_logger("web.api")

Auth = Literal["staff", "client", "worker", "none"]
# Refresh an access token this long before it expires, so a page's calls do not race its expiry.
REFRESH_MARGIN_SECONDS = 30
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_BEFORE_PASSWORD_CHANGE = frozenset({"/v1/auth/change-password", "/v1/auth/logout"})
# 401s about what the person typed on a form (a step-up password, a TOTP code), not about the session:
# shown beside the field; the session stays.
TYPED_CREDENTIAL_PROBLEMS = frozenset({"invalid_credentials", "mfa_required"})


@dataclass
class ApiError(Exception):
    """A gateway answer of 4xx/5xx (or no answer: status 503, code `gateway_unavailable`)."""

    status: int
    problem: dict[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return _code(self.problem)

    @property
    def detail(self) -> str:
        return str(
            self.problem.get("detail") or self.problem.get("title") or f"the request failed ({self.status})"
        )

    @property
    def field_errors(self) -> dict[str, str]:
        """Validation errors by field name (the last path element of `field`/`loc`)."""
        found: dict[str, str] = {}
        for error in self.problem.get("errors") or []:
            if not isinstance(error, dict):
                continue
            name = error.get("field") or ".".join(str(p) for p in error.get("loc") or [] if p != "body")
            name = str(name).split(".")[-1] if name else ""
            if name and name not in found:
                found[name] = str(error.get("message") or error.get("msg") or "is not valid")
        return found

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


class SignInRequired(Exception):
    """The staff session is missing, expired or revoked: the page sends the person to sign in."""

    def __init__(self, kind: Auth = "staff") -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class Answer:
    status: int
    data: Any
    headers: httpx.Headers


class Gateway:
    """One HTTP/1.1 keep-alive pool to the gateway for the process."""

    def __init__(self, base_url: str, timeout: float) -> None:
        # One pool for everyone: a Set-Cookie of the gateway's (a portal sign-in) must never ride along on
        # other people's calls, so the jar's policy accepts no cookie at all.
        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, follow_redirects=False, cookies=jar)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        request: Request,
        method: str,
        path: str,
        *,
        auth: Auth = "staff",
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        raw: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer (or the raw `Answer` with raw=True); raises ApiError or SignInRequired.
        `headers`: extra ones for this call (an Idempotency-Key)."""
        session: Session = request.state.session
        headers = {**self._headers(request), **(headers or {})}
        if auth == "staff":
            staff = session.staff or {}
            if staff.get("must_change_password") and path not in OPEN_BEFORE_PASSWORD_CHANGE:
                # The gateway opens a few reads to such a token; the console opens nothing but the
                # change itself, as the person would expect after signing in with a temporary one.
                raise ApiError(
                    403, {"code": "password_change_required", "detail": "change your password first"}
                )
            headers["Authorization"] = "Bearer " + await self._access_token(request, session)
            glass = session.get("break_glass")
            if method in WRITE_METHODS and isinstance(glass, dict) and glass.get("until", 0) > time.time():
                headers["X-Break-Glass-Token"] = str(glass.get("token", ""))
        elif auth in ("client", "worker"):
            token = session.get(auth)
            if not isinstance(token, str) or not token:
                raise SignInRequired(auth)
            headers["Authorization"] = "Bearer " + token
        answer = await self._send(request, method, path, headers, json, params, files)
        if answer.status == 401 and auth != "none" and _code(answer.data) not in TYPED_CREDENTIAL_PROBLEMS:
            if auth == "staff":
                session.drop("staff")
            else:
                session.drop(auth)
            raise SignInRequired(auth)
        if answer.status >= 400:
            problem = answer.data if isinstance(answer.data, dict) else {"detail": str(answer.data)[:200]}
            error = ApiError(answer.status, problem)
            if error.code == "read_only":
                request.state.read_only = True
            raise error
        return answer if raw else answer.data

    def _headers(self, request: Request) -> dict[str, str]:
        headers = {"X-Forwarded-For": request.state.client_ip, "Accept": "application/json"}
        # Media may bind signed photo links to the User-Agent that asked (PHOTO_TOKEN_BIND_USER_AGENT):
        # they are minted for the browser that will load them, not for this process.
        user_agent = request.headers.get("user-agent")
        if user_agent:
            headers["User-Agent"] = user_agent[:1024]
        request_id = request.headers.get("x-request-id")
        if request_id:
            headers["X-Request-ID"] = request_id[:128]
        return headers

    async def _send(
        self,
        request: Request,
        method: str,
        path: str,
        headers: dict[str, str],
        json: Any,
        params: dict[str, Any] | None,
        files: dict[str, Any] | None,
    ) -> Answer:
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        content = None
        if json is not None:
            content = orjson.dumps(json)
            headers = {**headers, "Content-Type": "application/json"}
        try:
            response = await self.http.request(
                method, path, headers=headers, params=clean, files=files, content=content
            )
        except httpx.HTTPError as error:
            log.warning("gateway_unreachable", path=path, error=type(error).__name__)
            raise ApiError(
                503,
                {
                    "code": "gateway_unavailable",
                    "detail": "the service is not reachable; try again in a moment",
                },
            ) from None
        if response.headers.get("x-read-only") == "1":
            request.state.read_only = True
        content_type = response.headers.get("content-type", "")
        data: Any = response.content
        if "json" in content_type and response.content:
            try:
                data = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                data = {"detail": "the gateway answered malformed JSON"}
        return Answer(response.status_code, data, response.headers)

    async def _access_token(self, request: Request, session: Session) -> str:
        staff = session.staff
        if staff is None:
            raise SignInRequired("staff")
        if float(staff.get("expires_at", 0)) - REFRESH_MARGIN_SECONDS > time.time():
            return str(staff["access_token"])
        # One rotation per request: a page whose calls run together must not use the refresh token
        # twice, which the gateway takes as theft and answers by revoking the whole session.
        lock: asyncio.Lock | None = getattr(request.state, "refresh_lock", None)
        if lock is None:  # kept in the request's scope state: every call of this request sees it
            lock = request.state.refresh_lock = asyncio.Lock()
        async with lock:
            staff = session.staff
            if staff is None:
                raise SignInRequired("staff")
            if float(staff.get("expires_at", 0)) - REFRESH_MARGIN_SECONDS > time.time():
                return str(staff["access_token"])  # another call of this request rotated it
            # A failed rotation signs the person out rather than retrying with the old token.
            answer = await self._send(
                request,
                "POST",
                "/v1/auth/refresh",
                self._headers(request),
                {"refresh_token": staff.get("refresh_token", "")},
                None,
                None,
            )
            if answer.status != 200 or not isinstance(answer.data, dict):
                session.drop("staff")
                raise SignInRequired("staff")
            session.set(
                "staff",
                staff_session(answer.data, email=str(staff.get("email", "")), since=staff.get("since")),
            )
            return str(answer.data["access_token"])


def gateway_of(request: Request) -> Gateway:
    """The process's gateway client (made once, in the app's lifespan)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def _code(data: Any) -> str:
    """A Problem+JSON body's code (its type is PROBLEM_BASE + code: gateway/problems.py), or ""."""
    if not isinstance(data, dict):
        return ""
    return str(data.get("code") or str(data.get("type") or "").rsplit("/", 1)[-1])


def staff_session(tokens: dict[str, Any], email: str, since: float | None = None) -> dict[str, Any]:
    """What the cookie keeps of a sign-in answer (TokensOut). `since`: when the person signed in (kept
    across refreshes: WEB_SESSION_TTL_MINUTES counts from it, however often the cookie is re-sealed)."""
    return {
        "since": since if since is not None else time.time(),
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "expires_at": time.time() + int(tokens.get("expires_in", 60)),
        "role": tokens.get("role", ""),
        "user_id": tokens.get("user_id", ""),
        "org_id": tokens.get("org_id", ""),
        "mfa_verified": bool(tokens.get("mfa_verified")),
        "must_change_password": bool(tokens.get("must_change_password")),
        "email": email,
    }
