"""The OAuth 2.0 client side for both providers: the authorization URL (PKCE S256 and a state), the
code exchange, the refresh and the revocation, over httpx against the endpoints in settings.

Failures are typed, for the callers to map:
- `GrantRevoked`: the refresh token is dead (invalid_grant on refresh): the user or the provider
  withdrew the consent; only a new consent helps.
- `ProviderUnavailable`: 5xx, a connection error or a timeout: try again later (the breaker counts it).
- `RateLimited(retry_after)`: 429 (Retry-After in seconds, 1 when absent).
- `OAuthRefused(error, description)`: any other refusal (a bad or used code, invalid_client: our
  configuration), a 4xx for the user, an error recorded for a sync.
The provider modules (gcal.py, qbo.py) raise the same three for their APIs (`retry_after_seconds`
reads the header)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from services.integrations.settings import IntegrationsSettings
from services.integrations.sync_types import GOOGLE_CALENDAR, QUICKBOOKS

GOOGLE_SCOPE = "https://www.googleapis.com/auth/calendar"
QUICKBOOKS_SCOPE = "com.intuit.quickbooks.accounting"
# When the provider gives no expires_in: assume an hour (both document one hour).
DEFAULT_EXPIRES_IN = 3600


class OAuthError(Exception):
    """Root of the OAuth client's failures."""


class GrantRevoked(OAuthError):
    """The refresh token was refused (invalid_grant): the grant is gone."""


class ProviderUnavailable(OAuthError):
    """The provider did not answer usefully (5xx, connection error, timeout)."""


class RateLimited(OAuthError):
    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"rate limited; retry after {retry_after:g} s")
        self.retry_after = retry_after


class OAuthRefused(OAuthError):
    """A 4xx other than the above: `error` is the provider's code (invalid_grant, invalid_client...)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Endpoints:
    client_id: str
    client_secret: str
    redirect_uri: str
    auth_url: str
    token_url: str
    revoke_url: str
    scope: str
    # Google takes the client in the form body; Intuit wants HTTP Basic.
    basic_auth: bool


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None  # None: the provider kept the old one (Google's refresh)
    expires_at: datetime
    scope: str


def endpoints(settings: IntegrationsSettings, provider: str) -> Endpoints:
    if provider == GOOGLE_CALENDAR:
        return Endpoints(
            client_id=settings.google_oauth_client_id,
            client_secret=settings.google_oauth_client_secret,
            redirect_uri=settings.google_oauth_redirect_uri,
            auth_url=settings.google_oauth_auth_url,
            token_url=settings.google_oauth_token_url,
            revoke_url=settings.google_oauth_revoke_url,
            scope=GOOGLE_SCOPE,
            basic_auth=False,
        )
    if provider == QUICKBOOKS:
        return Endpoints(
            client_id=settings.quickbooks_oauth_client_id,
            client_secret=settings.quickbooks_oauth_client_secret,
            redirect_uri=settings.quickbooks_oauth_redirect_uri,
            auth_url=settings.quickbooks_oauth_auth_url,
            token_url=settings.quickbooks_oauth_token_url,
            revoke_url=settings.quickbooks_oauth_revoke_url,
            scope=QUICKBOOKS_SCOPE,
            basic_auth=True,
        )
    raise ValueError(f"unknown provider {provider!r}")


def new_code_verifier() -> str:
    """RFC 7636: 43 to 128 characters of [A-Za-z0-9-._~]; 64 here."""
    return str(generate_token(64))


def code_challenge(verifier: str) -> str:
    return str(create_s256_code_challenge(verifier))


def authorization_url(settings: IntegrationsSettings, provider: str, state: str, challenge: str) -> str:
    ep = endpoints(settings, provider)
    params = {
        "response_type": "code",
        "client_id": ep.client_id,
        "redirect_uri": ep.redirect_uri,
        "scope": ep.scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if provider == GOOGLE_CALENDAR:
        # A refresh token on every consent (offline), and asked again even after an earlier consent.
        params.update(access_type="offline", prompt="consent", include_granted_scopes="true")
    separator = "&" if "?" in ep.auth_url else "?"
    return f"{ep.auth_url}{separator}{urlencode(params)}"


def retry_after_seconds(headers: Mapping[str, str], default: float = 1.0) -> float:
    """Retry-After as seconds (delta-seconds or an HTTP date); `default` when absent or unreadable.
    `headers`: httpx's, or httplib2's response (google-api-python-client's), whose keys are lower case."""
    value = str(headers.get("Retry-After") or headers.get("retry-after") or "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


async def _post(
    http: httpx.AsyncClient, ep: Endpoints, url: str, *, data: dict[str, str] | None = None, json: Any = None
) -> httpx.Response:
    auth: dict[str, Any] = {"auth": httpx.BasicAuth(ep.client_id, ep.client_secret)} if ep.basic_auth else {}
    try:
        response = await http.post(url, data=data, json=json, headers={"Accept": "application/json"}, **auth)
    except (httpx.TimeoutException, httpx.TransportError) as error:
        raise ProviderUnavailable(f"{url}: {type(error).__name__}") from None
    if response.status_code == 429:
        raise RateLimited(retry_after_seconds(response.headers))
    if response.status_code >= 500:
        raise ProviderUnavailable(f"{url}: HTTP {response.status_code}")
    return response


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}", response.text[:200]
    if not isinstance(body, dict):
        return f"http_{response.status_code}", ""
    error = body.get("error")
    if isinstance(error, dict):  # some APIs nest {"error": {"code", "message"}}
        return str(error.get("status") or error.get("code") or response.status_code), str(
            error.get("message", "")
        )
    return str(error or f"http_{response.status_code}"), str(body.get("error_description", ""))[:300]


def _token_set(response: httpx.Response, now: datetime) -> TokenSet:
    try:
        body = response.json()
        access = str(body["access_token"])
    except (ValueError, KeyError, TypeError):
        raise ProviderUnavailable("the token endpoint answered without an access token") from None
    expires_in = body.get("expires_in") or DEFAULT_EXPIRES_IN
    refresh = body.get("refresh_token")
    return TokenSet(
        access_token=access,
        refresh_token=str(refresh) if refresh else None,
        expires_at=now + timedelta(seconds=float(expires_in)),
        scope=str(body.get("scope", "")),
    )


async def exchange_code(
    http: httpx.AsyncClient, settings: IntegrationsSettings, provider: str, code: str, verifier: str
) -> TokenSet:
    """The authorization code for tokens (with the PKCE verifier). OAuthRefused for a bad code."""
    ep = endpoints(settings, provider)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": ep.redirect_uri,
        "code_verifier": verifier,
    }
    if not ep.basic_auth:
        form.update(client_id=ep.client_id, client_secret=ep.client_secret)
    now = datetime.now(UTC)
    response = await _post(http, ep, ep.token_url, data=form)
    if response.status_code != 200:
        raise OAuthRefused(*_error_of(response))
    tokens = _token_set(response, now)
    if tokens.refresh_token is None:
        raise OAuthRefused("no_refresh_token", "the provider gave no refresh token (offline access refused)")
    return tokens


async def refresh(
    http: httpx.AsyncClient, settings: IntegrationsSettings, provider: str, refresh_token: str
) -> TokenSet:
    """New tokens from the refresh token. GrantRevoked on invalid_grant."""
    ep = endpoints(settings, provider)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if not ep.basic_auth:
        form.update(client_id=ep.client_id, client_secret=ep.client_secret)
    now = datetime.now(UTC)
    response = await _post(http, ep, ep.token_url, data=form)
    if response.status_code != 200:
        error, description = _error_of(response)
        if error == "invalid_grant":
            raise GrantRevoked(description or "the refresh token was refused")
        raise OAuthRefused(error, description)
    return _token_set(response, now)


async def revoke(http: httpx.AsyncClient, settings: IntegrationsSettings, provider: str, token: str) -> bool:
    """Revoke the grant `token` belongs to (the refresh token revokes the whole grant at both providers).
    True when the provider confirmed (or already did not know the token); ProviderUnavailable /
    RateLimited when it could not be asked."""
    ep = endpoints(settings, provider)
    if provider == QUICKBOOKS:
        response = await _post(http, ep, ep.revoke_url, json={"token": token})
    else:
        response = await _post(http, ep, ep.revoke_url, data={"token": token})
    if response.status_code == 200:
        return True
    error, _ = _error_of(response)
    # An unknown or already revoked token: nothing left to revoke.
    return error in {"invalid_token", "invalid_grant"}
