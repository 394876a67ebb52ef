"""Cross-site request refusal for what a browser does with the portal cookies: confirming a sign-in
link, logging out, and portal writes carried by a cookie (issue 9, hole 8: login CSRF).

The portal sign-in is a POST that sets a cookie: a site that made a visitor's browser post *its own*
link token would sign the visitor in as the attacker (login CSRF), and SameSite cookies cannot help,
as there is no cookie yet. The check follows the browsers' fetch metadata, as Go's
`http.CrossOriginProtection` does: `Sec-Fetch-Site` when the browser sends it (every current one
does), else the `Origin` header against the request's own host. A request with neither comes from no
browser (curl, an API client) and has no victim's session to ride on. Origins listed in CORS_ORIGINS
are the operator's own front-ends and may post from another origin (never `*`).

Staff routes need none of this: they authenticate by an `Authorization` header, which a browser
never adds to a cross-site request by itself."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from gateway.problems import ProblemError
from gateway.settings import GatewaySettings

# `none`: the user's own navigation (typed, bookmarked); never a page's doing.
SAFE_FETCH_SITES = frozenset({"same-origin", "none"})


def _refused() -> ProblemError:
    return ProblemError(
        403,
        "cross_site_request",
        "this request came from another site; open the link in the browser you use for the portal",
    )


def _trusted(origin: str, settings: GatewaySettings) -> bool:
    return bool(origin) and origin != "*" and origin in settings.cors_origins


def check_same_origin(request: Request, settings: GatewaySettings) -> None:
    """Refuses (403 `cross_site_request`) a browser request that another site started."""
    origin = request.headers.get("origin", "").strip()
    fetch_site = request.headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site:
        if fetch_site in SAFE_FETCH_SITES or _trusted(origin, settings):
            return
        raise _refused()
    if not origin:
        return  # no browser, or an old one on a same-origin request (they send Origin cross-site)
    if (
        origin.lower() != "null"
        and urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
    ):
        return
    if _trusted(origin, settings):
        return
    raise _refused()
