"""A local OAuth 2.0 authorization server (authorization code + PKCE S256, refresh, revoke) for the
integrations tests and `make dev`: the part Google's and Intuit's servers share. tools/fake_google.py
and tools/fake_quickbooks.py mount it beside their APIs; `python -m tools.fake_oauth --port N` runs it
alone.

    server = OAuthServer(realm_id="9130357000000001")   # realm_id: QuickBooks' realmId on redirect
    server.add_routes(app)                               # an aiohttp web.Application
    token = server.bearer(request)                       # in an API handler: the AccessToken or None
    FakeOAuth(log_dir).start().base_url                  # the standalone process (tests)

Routes (paths fixed; point the *_OAUTH_{AUTH,TOKEN,REVOKE}_URL settings at them):
- `GET  /oauth/authorize?response_type=code&client_id&redirect_uri&state&code_challenge
  &code_challenge_method=S256&scope...`: a consent page: an "Allow" and a "Deny" button, plain forms
  (no JavaScript) that POST back to the same URL.
- `POST /oauth/authorize?<same query>`: form `decision=allow` (the default) → 302 to
  `redirect_uri?code=..&state=..` (`&realmId=..` when realm_id is set); `decision=deny`, or a `deny`
  query parameter → 302 to `redirect_uri?error=access_denied&state=..`. A bad client id, a missing
  redirect_uri or a missing/non-S256 code challenge → 400 page (no redirect), like the real servers.
- `POST /oauth/token` (form): client by HTTP Basic or client_id/client_secret form fields;
  `grant_type=authorization_code` (code once only, within 10 minutes, same redirect_uri, code_verifier
  checked against the S256 challenge) and `grant_type=refresh_token` (a revoked grant or unknown token →
  400 `{"error": "invalid_grant"}`; with rotate_refresh the refresh token is replaced on every refresh,
  as Intuit does, and the old one is refused afterwards). Answers `{"access_token", "token_type":
  "Bearer", "expires_in", "refresh_token", "scope"}` (+ `x_refresh_token_expires_in` with rotation).
- `POST /oauth/revoke`: `token` as a form field, a query parameter or JSON `{"token": ..}`; an access
  or refresh token revokes its whole grant. 200, or 400 `invalid_token` for an unknown token.

Control routes (tests, fakes' users): all answer JSON.
- `POST /_control/oauth/expire-access-tokens`: every access token issued so far is expired.
- `POST /_control/oauth/revoke-all`: every grant revoked (refresh → invalid_grant, API → 401).
- `POST /_control/oauth/token-failures` JSON `{"status": 503, "count": 2}`: the next `count` token
  requests answer `status` (429 with `Retry-After: 1`).
- `POST /_control/oauth/config` JSON `{"access_ttl": seconds, "rotate_refresh": bool}`.
- `POST /_control/oauth/reset`: forget every code and grant, failures and config back to the start.
- `GET  /_control/oauth/state`: `{"grants": [...], "token_requests": [...], "revoked_tokens": n}`.
- `GET  /_control/oauth/healthz`: "ok".
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import html
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from tools.devstack import free_port
from tools.processes import Proc

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"
REVOKE_PATH = "/oauth/revoke"
CONTROL_PREFIX = "/_control/oauth"
HEALTH_PATH = f"{CONTROL_PREFIX}/healthz"

# The client the fakes know unless told otherwise (the test env's *_OAUTH_CLIENT_ID/SECRET).
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
CODE_TTL_SECONDS = 600
DEFAULT_ACCESS_TTL = 3600
REFRESH_TTL_SECONDS = 100 * 24 * 3600  # what Intuit says in x_refresh_token_expires_in


def s256(verifier: str) -> str:
    """RFC 7636's S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str
    expires_at: float
    used: bool = False


@dataclass
class OAuthGrant:
    """One user's consent: its refresh token and the access tokens issued from it."""

    grant_id: str
    client_id: str
    scope: str
    refresh_token: str
    realm_id: str | None
    revoked: bool = False
    refreshes: int = 0
    old_refresh_tokens: list[str] = field(default_factory=list)


@dataclass
class AccessToken:
    token: str
    grant: OAuthGrant
    expires_at: float

    @property
    def valid(self) -> bool:
        return not self.grant.revoked and time.time() < self.expires_at


@dataclass
class OAuthServer:
    """The authorization server's state and routes (see the module docstring)."""

    realm_id: str | None = None
    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET})
    access_ttl: float = DEFAULT_ACCESS_TTL
    rotate_refresh: bool = False
    codes: dict[str, _Code] = field(default_factory=dict)
    grants: dict[str, OAuthGrant] = field(default_factory=dict)  # by refresh token (current)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    revoked_tokens: int = 0
    _failures: list[int] = field(default_factory=list)
    _initial: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._initial = {"access_ttl": self.access_ttl, "rotate_refresh": self.rotate_refresh}

    # --- for the fakes' API handlers ----------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(AUTHORIZE_PATH, self.authorize_page)
        app.router.add_post(AUTHORIZE_PATH, self.authorize_decision)
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(REVOKE_PATH, self.revoke)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_post(f"{CONTROL_PREFIX}/expire-access-tokens", self._control_expire)
        app.router.add_post(f"{CONTROL_PREFIX}/revoke-all", self._control_revoke_all)
        app.router.add_post(f"{CONTROL_PREFIX}/token-failures", self._control_failures)
        app.router.add_post(f"{CONTROL_PREFIX}/config", self._control_config)
        app.router.add_post(f"{CONTROL_PREFIX}/reset", self._control_reset)
        app.router.add_get(f"{CONTROL_PREFIX}/state", self._control_state)

    def bearer(self, request: web.Request) -> AccessToken | None:
        """The request's `Authorization: Bearer` token when it is known, unexpired and its grant not
        revoked; None otherwise (the API answers 401)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = self.access_tokens.get(token.strip())
        return found if found is not None and found.valid else None

    def expire_access_tokens(self) -> int:
        now = time.time()
        for token in self.access_tokens.values():
            token.expires_at = min(token.expires_at, now - 1)
        return len(self.access_tokens)

    def revoke_all(self) -> int:
        for grant in self.grants.values():
            grant.revoked = True
        return len(self.grants)

    def reset(self) -> None:
        self.codes.clear()
        self.grants.clear()
        self.access_tokens.clear()
        self.token_requests.clear()
        self._failures.clear()
        self.revoked_tokens = 0
        self.access_ttl = self._initial["access_ttl"]
        self.rotate_refresh = self._initial["rotate_refresh"]

    # --- authorization endpoint ---------------------------------------------------------------

    def _authorize_problem(self, request: web.Request) -> str | None:
        query = request.query
        if query.get("response_type", "code") != "code":
            return "unsupported_response_type"
        if query.get("client_id") not in self.clients:
            return "invalid_client: unknown client_id"
        if not query.get("redirect_uri"):
            return "invalid_request: redirect_uri is required"
        if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
            return "invalid_request: a PKCE code_challenge with code_challenge_method=S256 is required"
        return None

    async def authorize_page(self, request: web.Request) -> web.Response:
        problem = self._authorize_problem(request)
        if problem:
            return _page(f"<h1>Authorization error</h1><p>{html.escape(problem)}</p>", status=400)
        action = html.escape(request.path_qs, quote=True)
        scope = html.escape(request.query.get("scope", ""))
        who = "QuickBooks company" if self.realm_id else "account"
        return _page(
            f"<h1>Sign in with the fake provider</h1>"
            f"<p>The application <code>{html.escape(request.query['client_id'])}</code> asks to use "
            f"your {who}: <code>{scope}</code></p>"
            f'<form method="post" action="{action}">'
            f'<button type="submit" name="decision" value="allow" id="allow">Allow</button></form>'
            f'<form method="post" action="{action}">'
            f'<button type="submit" name="decision" value="deny" id="deny">Deny</button></form>'
        )

    async def authorize_decision(self, request: web.Request) -> web.Response:
        problem = self._authorize_problem(request)
        if problem:
            return _page(f"<h1>Authorization error</h1><p>{html.escape(problem)}</p>", status=400)
        form = await request.post()
        query = request.query
        params: dict[str, str] = {}
        if "deny" in query or form.get("decision") == "deny":
            params["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(24)
            self.codes[code] = _Code(
                client_id=query["client_id"],
                redirect_uri=query["redirect_uri"],
                scope=query.get("scope", ""),
                challenge=query["code_challenge"],
                expires_at=time.time() + CODE_TTL_SECONDS,
            )
            params["code"] = code
        if "state" in query:
            params["state"] = query["state"]
        if self.realm_id and "code" in params:
            params["realmId"] = self.realm_id
        raise web.HTTPFound(_with_query(query["redirect_uri"], params))

    # --- token endpoint -----------------------------------------------------------------------

    def _client(self, request: web.Request, form: Any) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            client_id, _, secret = decoded.partition(":")
        else:
            client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        known = self.clients.get(client_id)
        if known is None or not secrets.compare_digest(known, secret):
            return None
        return client_id

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant_type = str(form.get("grant_type", ""))
        self.token_requests.append({"grant_type": grant_type, "at": time.time()})
        if self._failures:
            status = self._failures.pop(0)
            headers = {"Retry-After": "1"} if status == 429 else {}
            return web.json_response({"error": "temporarily_unavailable"}, status=status, headers=headers)
        client_id = self._client(request, form)
        if client_id is None:
            return _error(401, "invalid_client", "client authentication failed")
        if grant_type == "authorization_code":
            return self._exchange(client_id, form)
        if grant_type == "refresh_token":
            return self._refresh(client_id, str(form.get("refresh_token", "")))
        return _error(400, "unsupported_grant_type", grant_type)

    def _exchange(self, client_id: str, form: Any) -> web.Response:
        code = self.codes.get(str(form.get("code", "")))
        if code is None or code.client_id != client_id:
            return _error(400, "invalid_grant", "unknown authorization code")
        if code.used:
            return _error(400, "invalid_grant", "authorization code already used")
        if time.time() > code.expires_at:
            return _error(400, "invalid_grant", "authorization code expired")
        if str(form.get("redirect_uri", "")) != code.redirect_uri:
            return _error(400, "invalid_grant", "redirect_uri does not match the authorization request")
        verifier = str(form.get("code_verifier", ""))
        if not verifier or not secrets.compare_digest(s256(verifier), code.challenge):
            return _error(400, "invalid_grant", "code_verifier does not match the code_challenge")
        code.used = True
        grant = OAuthGrant(
            grant_id=secrets.token_hex(8),
            client_id=client_id,
            scope=code.scope,
            refresh_token="rt-" + secrets.token_urlsafe(24),
            realm_id=self.realm_id,
        )
        self.grants[grant.refresh_token] = grant
        return self._tokens(grant)

    def _refresh(self, client_id: str, refresh_token: str) -> web.Response:
        grant = self.grants.get(refresh_token)
        if grant is None or grant.revoked or grant.client_id != client_id:
            return _error(400, "invalid_grant", "Token has been expired or revoked.")
        grant.refreshes += 1
        if self.rotate_refresh:
            del self.grants[refresh_token]
            grant.old_refresh_tokens.append(refresh_token)
            grant.refresh_token = "rt-" + secrets.token_urlsafe(24)
            self.grants[grant.refresh_token] = grant
        return self._tokens(grant, include_refresh=self.rotate_refresh)

    def _tokens(self, grant: OAuthGrant, include_refresh: bool = True) -> web.Response:
        access = AccessToken("at-" + secrets.token_urlsafe(24), grant, time.time() + self.access_ttl)
        self.access_tokens[access.token] = access
        body: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl),
            "scope": grant.scope,
        }
        if include_refresh:
            body["refresh_token"] = grant.refresh_token
        if self.rotate_refresh:
            body["x_refresh_token_expires_in"] = REFRESH_TTL_SECONDS
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    # --- revocation ---------------------------------------------------------------------------

    async def revoke(self, request: web.Request) -> web.Response:
        token = request.query.get("token", "")
        if not token:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.read() or b"{}")
                except ValueError:
                    body = {}
                token = str(body.get("token", "")) if isinstance(body, dict) else ""
            else:
                token = str((await request.post()).get("token", ""))
        grant = self.grants.get(token)
        if grant is None and token in self.access_tokens:
            grant = self.access_tokens[token].grant
        if grant is None:
            return _error(400, "invalid_token", "unknown token")
        grant.revoked = True
        self.revoked_tokens += 1
        return web.json_response({})

    # --- control ------------------------------------------------------------------------------

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _control_expire(self, _: web.Request) -> web.Response:
        return web.json_response({"expired": self.expire_access_tokens()})

    async def _control_revoke_all(self, _: web.Request) -> web.Response:
        return web.json_response({"revoked": self.revoke_all()})

    async def _control_failures(self, request: web.Request) -> web.Response:
        body = await _json(request)
        self._failures = [int(body.get("status", 503))] * int(body.get("count", 1))
        return web.json_response({"failures": len(self._failures)})

    async def _control_config(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if "access_ttl" in body:
            self.access_ttl = float(body["access_ttl"])
        if "rotate_refresh" in body:
            self.rotate_refresh = bool(body["rotate_refresh"])
        return web.json_response({"access_ttl": self.access_ttl, "rotate_refresh": self.rotate_refresh})

    async def _control_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    async def _control_state(self, _: web.Request) -> web.Response:
        grants = {id(g): g for g in self.grants.values()}.values()
        return web.json_response(
            {
                "grants": [
                    {
                        "grant_id": g.grant_id,
                        "client_id": g.client_id,
                        "scope": g.scope,
                        "realm_id": g.realm_id,
                        "revoked": g.revoked,
                        "refreshes": g.refreshes,
                    }
                    for g in grants
                ],
                "token_requests": self.token_requests,
                "revoked_tokens": self.revoked_tokens,
            }
        )


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=f"<!doctype html><html><head><title>Fake OAuth</title></head><body>{body}</body></html>",
        status=status,
        content_type="text/html",
    )


def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise web.HTTPBadRequest(text="JSON body expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object expected")
    return body


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


# --- the process ---------------------------------------------------------------------------------


@dataclass
class FakeServerProc(Proc):
    """A local fake provider's process: ready when its health route answers."""

    health_url: str = ""

    @property
    def probe_url(self) -> str:
        return self.health_url


@dataclass
class FakeServer:
    """A local fake provider (`python -m <module> --port N ...`) as a process on a free port, logging
    to `log_dir`: `.start()`, `.base_url`, `.stop()`, `.kill()` (SIGKILL, for the fault tests). Each
    fake names its module, its log and its health route, and adds its own command-line arguments."""

    log_dir: Path
    port: int = 0
    _proc: FakeServerProc | None = field(default=None, init=False)

    name: ClassVar[str]
    module: ClassVar[str]
    health_path: ClassVar[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arguments(self) -> list[str]:
        return []

    def start(self, timeout: float = 30) -> Self:
        self.port = self.port or free_port()
        self._proc = FakeServerProc(
            name=self.name,
            args=["-m", self.module, "--port", str(self.port), *self.arguments()],
            env={},
            log_path=self.log_dir / f"{self.name}.log",
            health_url=f"{self.base_url}{self.health_path}",
        )
        self._proc.start()
        try:
            self._proc.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc = None


@dataclass
class FakeOAuth(FakeServer):
    """`python -m tools.fake_oauth` as a process on a free port: `FakeOAuth(log_dir).start()`,
    `.base_url`, `.stop()`; the control functions call its /_control/oauth routes."""

    realm_id: str | None = None
    rotate_refresh: bool = False

    name: ClassVar[str] = "fake-oauth"
    module: ClassVar[str] = "tools.fake_oauth"
    health_path: ClassVar[str] = HEALTH_PATH

    def arguments(self) -> list[str]:
        extra = ["--realm-id", self.realm_id] if self.realm_id else []
        return extra + (["--rotate-refresh"] if self.rotate_refresh else [])

    def control(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        response = httpx.post(f"{self.base_url}{CONTROL_PREFIX}/{action}", json=body or {}, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def build_app(server: OAuthServer) -> web.Application:
    app = web.Application()
    server.add_routes(app)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local OAuth 2.0 server (see the module docstring)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--realm-id", default=None, help="QuickBooks' realmId added to the redirect")
    parser.add_argument("--client-id", default=CLIENT_ID)
    parser.add_argument("--client-secret", default=CLIENT_SECRET)
    parser.add_argument("--access-ttl", type=float, default=DEFAULT_ACCESS_TTL)
    parser.add_argument("--rotate-refresh", action="store_true", help="new refresh token per refresh")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = OAuthServer(
        realm_id=args.realm_id,
        clients={args.client_id: args.client_secret},
        access_ttl=args.access_ttl,
        rotate_refresh=args.rotate_refresh,
    )
    web.run_app(
        build_app(server), host="127.0.0.1", port=args.port, print=lambda line: print(line, flush=True)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
