"""What each route does, as the edge policies see it: a mark every route carries as a route
dependency (`dependencies=[ADMIN]`, on the router when all its routes do the same thing), never read
from the URL. Issue 9 hole 2: the rules used to key on the `/v1/admin/` and `/v1/iam/` prefixes, so
`POST /v1/auth/2fa/disable` (an OWNER clearing another user's TOTP) escaped all of them.

Surfaces:
- ADMIN: staff managing the org (everything under /v1/admin and /v1/iam, `POST /v1/auth/2fa/disable`,
  minting worker portal links). ADMIN_IP_ALLOWLIST_CIDRS and ADMIN_MFA_REQUIRED apply.
- ACCOUNT: a signed-in user's own account (change password, TOTP enrolment and verification). Not
  admin: it is how a user reaches MFA in the first place.
- PUBLIC: anonymous callers (sign-in, sign-up, estimate, lead intake, NPS answers).
- PORTAL: the client and worker portals (their own credentials, gateway/portal_auth.py).
- OPS: health, readiness, metrics (probes; metrics carry METRICS_TOKEN).

ADMIN_READ_ONLY refuses every state-changing request (POST, PUT, PATCH, DELETE) on every surface,
409 `read_only`, unless a break-glass token comes with it, except the routes marked
OPEN_IN_READ_ONLY, this short list and no other (gateway/tests/test_route_access.py pins it):
- `POST /v1/auth/login`, `POST /v1/auth/refresh`: signing in and keeping a session. Read-only mode is
  for investigating an incident, which needs reads, and starting break-glass needs a signed-in owner.
- `POST /v1/auth/logout`: ending a session must always work; it only takes access away.
- `POST /v1/admin/break-glass/start`: the way writes are re-enabled during read-only mode.
- `POST /v1/leads`: public lead intake; customers keep asking for cleanings while the back office
  is frozen, and a lead grants no power over the org.
- `POST /v1/estimate`: a POST only because its input is a body; it prices a cleaning and writes
  nothing.
- `POST /client/login/request`: the client portal's sign-in (the client's `login`), so clients can
  keep reading their bookings; it writes only the link it mails.
- `POST /client/login/confirm`, `POST /worker/login/confirm`: the second step of the portals'
  sign-in (issue 9, hole 8: the link is used up by a POST, no longer by its GET); it writes only
  the used link and the portal session, so clients and workers keep reading what is theirs.
- `POST /client/logout`, `POST /worker/logout`: ending a portal session, like the staff logout,
  only takes access away.

A bearer token whose user's password is temporary (an admin created the account or reset its
password; the token's `pwc` claim) opens only the routes marked OPEN_BEFORE_PASSWORD_CHANGE: sign in,
refresh, sign out, `POST /v1/auth/change-password` and `GET /v1/admin/profile` (who you are). Every
other route answers 403 `password_change_required` before it runs (gateway/middleware/auth.py), and
every service refuses such a context too (libs/common/context.refuse_until_password_changed).

The middleware (gateway/middleware/route_access.py) finds the route a request will reach with the
same matching as the router, before the route runs: the refusals must come before the body is parsed
(a 409 or 403 rather than a 422) and before break-glass settles who the gRPC calls act as. A route
without a mark is treated as ADMIN and not open (fail closed), and a test fails on it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Depends
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, compile_path

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Surface(StrEnum):
    ADMIN = "admin"
    ACCOUNT = "account"
    PUBLIC = "public"
    PORTAL = "portal"
    OPS = "ops"


@dataclass(frozen=True)
class _Mark:
    """A no-op route dependency: its presence on the route is the mark."""

    surface: Surface | None = None
    open_in_read_only: bool = False
    open_before_password_change: bool = False

    async def __call__(self) -> None:
        return None


ADMIN = Depends(_Mark(Surface.ADMIN))
ACCOUNT = Depends(_Mark(Surface.ACCOUNT))
PUBLIC = Depends(_Mark(Surface.PUBLIC))
PORTAL = Depends(_Mark(Surface.PORTAL))
OPS = Depends(_Mark(Surface.OPS))
OPEN_IN_READ_ONLY = Depends(_Mark(open_in_read_only=True))
OPEN_BEFORE_PASSWORD_CHANGE = Depends(_Mark(open_before_password_change=True))


@dataclass(frozen=True)
class Access:
    surface: Surface
    open_in_read_only: bool = False
    open_before_password_change: bool = False

    @property
    def admin(self) -> bool:
        """The staff/admin surface: the allowlist and ADMIN_MFA_REQUIRED apply."""
        return self.surface is Surface.ADMIN


# Fail closed: what an unmarked route gets at run time (a test refuses unmarked routes).
UNMARKED = Access(Surface.ADMIN)


class Unclassified(ValueError):
    pass


def access_of(route: APIRoute) -> Access:
    """The route's marks; Unclassified when it has no surface, or more than one."""
    marks = [d.dependency for d in route.dependencies if isinstance(d.dependency, _Mark)]
    surfaces = {m.surface for m in marks if m.surface is not None}
    if len(surfaces) != 1:
        found = ", ".join(sorted(surfaces)) or "none"
        raise Unclassified(
            f"{sorted(route.methods or ())} {route.path}: needs exactly one surface mark (found {found})"
        )
    return Access(
        surfaces.pop(),
        open_in_read_only=any(m.open_in_read_only for m in marks),
        open_before_password_change=any(m.open_before_password_change for m in marks),
    )


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[RouteContext]:
    """Every API route the app serves, included routers flattened, in the router's order."""
    for context in iter_route_contexts(routes):
        if isinstance(context.original_route, APIRoute):
            yield context


@dataclass(frozen=True)
class _Entry:
    regex: re.Pattern[str]
    methods: frozenset[str]
    access: Access


class RouteTable:
    """The access of the route a request will reach: the router's own rule (the first route whose
    path and method match, else the first whose path matches, which then answers 405)."""

    def __init__(self, contexts: Iterable[RouteContext]) -> None:
        self.entries = [self._entry(context) for context in contexts]

    @staticmethod
    def _entry(context: RouteContext) -> _Entry:
        route = context.original_route
        assert isinstance(route, APIRoute)
        try:
            access = access_of(route)
        except Unclassified:
            access = UNMARKED
        regex, _, _ = compile_path(context.path or route.path)
        return _Entry(regex, frozenset(context.methods or route.methods or ()), access)

    def lookup(self, scope: dict[str, Any] | Any) -> Access | None:
        """None when no route matches (the router answers 404)."""
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = scope.get("method", "")
        partial: Access | None = None
        for entry in self.entries:
            if entry.regex.match(path):
                if method in entry.methods:
                    return entry.access
                if partial is None:
                    partial = entry.access
        return partial
