"""The edge rules follow what a route does, not its path (issue 9, hole 2; gateway/access.py).

`POST /v1/auth/2fa/disable` (an OWNER clearing another user's TOTP) used to escape the admin IP
allowlist, ADMIN_READ_ONLY and ADMIN_MFA_REQUIRED because they keyed on the `/v1/admin/` and
`/v1/iam/` prefixes. Every route now carries a mark; every route without one fails here; and sweeps
over every route of the application check each rule against a real gateway process."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from gateway.access import WRITE_METHODS, Access, Unclassified, access_of, api_routes
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tools.processes import DEV_SECRETS
from tools.testkit import assert_clean, assert_problem, owner

# The writes ADMIN_READ_ONLY lets through, and no other (gateway/access.py says why each).
OPEN_IN_READ_ONLY = {
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/admin/break-glass/start"),
    ("POST", "/v1/leads"),
    ("POST", "/v1/estimate"),
    ("POST", "/client/login/request"),
    ("POST", "/client/login/confirm"),
    ("POST", "/worker/login/confirm"),
    ("POST", "/client/logout"),
    ("POST", "/worker/logout"),
}
DISABLE = "/v1/auth/2fa/disable"


def routes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Access]]:
    """(method, path template, access) of every API route the application serves, built in-process
    only to list them (its logging set-up would reconfigure this test process)."""
    monkeypatch.setattr("gateway.app.configure_logging", lambda *args, **kwargs: None)
    app = create_app(
        GatewaySettings(app_env="test", redis_url="", **{k.lower(): v for k, v in DEV_SECRETS.items()})
    )
    found = []
    for context in api_routes(app.routes):
        access = access_of(context.original_route)  # type: ignore[arg-type]
        found += [(method, context.path or "", access) for method in sorted(context.methods or ())]
    return found


def concrete(path: str) -> str:
    """A path template with a fresh UUID in every parameter (the refusals come before any lookup)."""
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


async def call(http: httpx.AsyncClient, url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    body = {"json": {}} if method in WRITE_METHODS else {}
    return await http.request(method, f"{url}{concrete(path)}", **body, **kwargs)  # type: ignore[arg-type]


async def target_user(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> str:
    """Another user of the owner's org, whose TOTP the owner would clear."""
    created = await http.post(
        f"{url}/v1/iam/users",
        headers=headers,
        json={"email": f"target-{uuid.uuid4().hex[:10]}@example.com", "role": "DISPATCHER"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["user"]["id"])


# --- every route is marked ---------------------------------------------------------------------------


def test_every_route_is_classified(monkeypatch):
    monkeypatch.setattr("gateway.app.configure_logging", lambda *args, **kwargs: None)
    app = create_app(
        GatewaySettings(app_env="test", redis_url="", **{k.lower(): v for k, v in DEV_SECRETS.items()})
    )
    contexts = list(api_routes(app.routes))
    assert len(contexts) > 50  # the flattening found the included routers
    unmarked = []
    for context in contexts:
        try:
            access_of(context.original_route)  # type: ignore[arg-type]
        except Unclassified as error:
            unmarked.append(str(error))
    assert not unmarked, "mark these routes in gateway/routes (gateway/access.py):\n" + "\n".join(unmarked)


def test_the_read_only_exemptions_are_the_named_list(monkeypatch):
    found = routes(monkeypatch)
    open_writes = {(m, p) for m, p, access in found if m in WRITE_METHODS and access.open_in_read_only}
    assert open_writes == OPEN_IN_READ_ONLY
    # Marks, not paths: the TOTP disable of another user is admin, though it lives under /v1/auth.
    assert {access.admin for m, p, access in found if p == DISABLE} == {True}
    assert {access.admin for m, p, access in found if p.startswith(("/v1/admin/", "/v1/iam/"))} == {True}


def test_the_data_protection_writes_are_admin_and_closed_in_read_only(monkeypatch):
    """Issue 13: the export, the deletion request and the retention cleanup are staff writes; the
    export too, though it changes no record of the person (it audits, and discloses everything)."""
    found = {(m, p): access for m, p, access in routes(monkeypatch)}
    for key in (
        ("POST", "/v1/admin/data/export"),
        ("POST", "/v1/admin/data-deletion/requests"),
        ("POST", "/v1/admin/retention/cleanup"),
    ):
        assert found[key].admin and not found[key].open_in_read_only, key
    for path in (
        "/v1/admin/timeline/booking/{booking_id}",
        "/v1/admin/metrics",
        "/v1/admin/analytics/funnel",
    ):
        assert found[("GET", path)].admin, path


# --- POST /v1/auth/2fa/disable under each admin rule -------------------------------------------------


async def test_2fa_disable_is_refused_in_read_only_mode(gateways, gateway, http, make_org):
    org = await make_org()
    user_id = await target_user(http, gateway.url, await owner(http, gateway.url, org))
    gw = gateways.get(ADMIN_READ_ONLY="true")
    headers = await owner(http, gw.url, org)
    body = {"user_id": user_id}
    refused = await http.post(f"{gw.url}{DISABLE}", headers=headers, json=body)
    assert "break-glass" in assert_problem(refused, 409, "read_only")["detail"]


async def test_2fa_disable_is_refused_outside_the_admin_allowlist(gateways, gateway, http, make_org):
    org = await make_org()
    user_id = await target_user(http, gateway.url, await owner(http, gateway.url, org))
    gw = gateways.get(ADMIN_IP_ALLOWLIST_CIDRS="10.0.0.0/8")
    headers = await owner(http, gw.url, org)  # signing in is no admin route
    body = {"user_id": user_id}
    assert_problem(await http.post(f"{gw.url}{DISABLE}", headers=headers, json=body), 403, "ip_not_allowed")


async def test_2fa_disable_needs_an_mfa_token_when_admin_mfa_is_required(gateways, gateway, http, make_org):
    org = await make_org()
    user_id = await target_user(http, gateway.url, await owner(http, gateway.url, org))
    gw = gateways.get(ADMIN_MFA_REQUIRED="true")
    headers = await owner(http, gw.url, org)  # a password-only login: not MFA-verified
    body = {"user_id": user_id}
    assert_problem(await http.post(f"{gw.url}{DISABLE}", headers=headers, json=body), 401, "mfa_required")


# --- sweeps over every route -------------------------------------------------------------------------


async def test_every_write_is_refused_in_read_only_mode_but_the_named_list(
    gateways, http, make_org, monkeypatch
):
    writes = [(m, p) for m, p, _ in routes(monkeypatch) if m in WRITE_METHODS]
    assert set(writes) >= OPEN_IN_READ_ONLY
    gw = gateways.get(ADMIN_READ_ONLY="true")
    org = await make_org()
    headers = await owner(http, gw.url, org)  # so that no refusal is for want of credentials

    for method, path in writes:
        if (method, path) in OPEN_IN_READ_ONLY:
            continue
        response = await call(http, gw.url, method, path, headers=headers)
        assert response.status_code == 409, (method, path, response.status_code, response.text)
        assert_problem(response, 409, "read_only")
    # The named list goes through to its route (anonymous here, so nothing happens: each answers
    # 4xx of its own, never read_only).
    for method, path in sorted(OPEN_IN_READ_ONLY):
        response = await call(http, gw.url, method, path)
        assert_clean(response)
        assert response.status_code != 409, (method, path, response.text)
        assert response.status_code < 500, (method, path, response.text)


async def test_every_admin_route_is_refused_outside_the_allowlist(gateways, http, make_org, monkeypatch):
    found = routes(monkeypatch)
    gw = gateways.get(ADMIN_IP_ALLOWLIST_CIDRS="10.0.0.0/8")
    org = await make_org()
    headers = await owner(http, gw.url, org)
    for method, path, access in found:
        if access.admin:
            response = await call(http, gw.url, method, path, headers=headers)
            assert response.status_code == 403, (method, path, response.status_code, response.text)
            assert_problem(response, 403, "ip_not_allowed")
        else:  # anonymous, so that nothing happens: each route answers for itself
            response = await call(http, gw.url, method, path)
            assert_clean(response)
            assert "ip_not_allowed" not in response.text, (method, path)
            assert response.status_code < 500, (method, path, response.text)


async def test_every_admin_route_needs_an_mfa_token_when_required(gateways, http, make_org, monkeypatch):
    admin_routes = [(m, p) for m, p, access in routes(monkeypatch) if access.admin]
    gw = gateways.get(ADMIN_MFA_REQUIRED="true")
    org = await make_org()
    headers = await owner(http, gw.url, org)
    for method, path in admin_routes:
        response = await call(http, gw.url, method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert_problem(response, 401, "mfa_required")
