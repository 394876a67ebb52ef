"""The gateway's edge policies, seed 002: Basic Auth, the config viewer and its redaction, feature
flags, ADMIN_READ_ONLY with break-glass and its audit trail, the admin IP allowlist behind trusted
proxies, metrics behind METRICS_TOKEN, rate limits (in-process and Redis), readiness and OpenAPI.

Each configuration runs as its own gateway process (gateways.get) in front of the shared IAM; each
test owns its orgs."""

from __future__ import annotations

import os
import random
import uuid

import grpc
import httpx
import psycopg
import pytest
from cws.common.v1 import ops_pb2, ops_pb2_grpc

from tools.processes import DEV_KEYRING, DEV_SECRETS
from tools.testkit import as_role, assert_clean, assert_problem, basic, bearer, signing_channel

STRONG_ADMIN_PASSWORD = "Strong-admin-pass-" + "7c1d9e4a2b"
# Settings that hold secrets, so the config viewer has something to redact.
# Two earlier AUTH_SECRET_KEYs, as during a rotation (AUTH_SECRET_KEY_PREVIOUS).
EARLIER_AUTH_KEYS = ("earlier-auth-key-for-tests-2b8d", "older-auth-key-for-tests-7f1a")
SECRET_ENV = {
    "METRICS_TOKEN": "metrics-token-for-tests-5f0a3c9e1d7b",
    "STRIPE_SECRET_KEY": "sk_test_stripe-secret-for-tests-8e2b",
    "STRIPE_WEBHOOK_SECRET": "whsec_webhook-secret-for-tests-3a9c",
    "SMTP_PASSWORD": "smtp-password-for-tests-6d1f",
    "SENDGRID_API_KEY": "SG.sendgrid-key-for-tests-4c7e",
    "AUTH_SECRET_KEY_PREVIOUS": ",".join(EARLIER_AUTH_KEYS),
}
RATE_LIMITED_ENV = {
    "RATE_LIMIT_PER_MINUTE": "5",
    "TRUST_PROXY_HEADERS": "true",
    "TRUSTED_PROXY_IPS": "127.0.0.1",
}


def random_private_ip() -> str:
    """A client address of this test's own, so a shared limiter (Redis) never sees it twice."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def owner_token(http: httpx.AsyncClient, url: str, org, **headers: str) -> str:
    response = await http.post(
        f"{url}/v1/auth/login",
        json={"email": org.owner_email, "password": org.owner_password},
        headers=headers,
    )
    assert_clean(response)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


# --- Basic Auth --------------------------------------------------------------------------------------


async def test_basic_auth_profile(gateways, http, make_org):
    org = await make_org()
    other = await make_org()
    gw = gateways.get(
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=STRONG_ADMIN_PASSWORD,
        DEFAULT_ORG_ID=org.org_id,
        LEGACY_BASIC_AUTH_ENABLED="true",
        # Weak pairs are ignored, even with Basic Auth on.
        DISPATCHER_BASIC_USERNAME="dispatch",
        DISPATCHER_BASIC_PASSWORD="change-me",
        VIEWER_BASIC_USERNAME="viewer",
        VIEWER_BASIC_PASSWORD="short",
        OWNER_BASIC_USERNAME="owner",
        OWNER_BASIC_PASSWORD="Dev-Auth-Secret",  # long enough, but a known placeholder
    )
    url = f"{gw.url}/v1/admin/profile"

    missing = await http.get(url)
    assert_problem(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Basic")

    ok = await http.get(url, headers=basic("admin", STRONG_ADMIN_PASSWORD))
    assert ok.status_code == 200, ok.text
    profile = ok.json()
    assert profile["role"] == "ADMIN"
    assert profile["org_id"] == org.org_id
    assert profile["auth_method"] == "basic"
    assert profile["mfa_verified"] is False  # Basic Auth is not MFA-capable

    for headers in (
        basic("admin", STRONG_ADMIN_PASSWORD + "x"),
        basic("admin", ""),
        basic("Admin", STRONG_ADMIN_PASSWORD),
        basic("dispatch", "change-me"),
        basic("viewer", "short"),
        basic("owner", "Dev-Auth-Secret"),
        {"Authorization": "Basic !!!not-base64!!!"},
    ):
        wrong = await http.get(url, headers=headers)
        assert_problem(wrong, 401)
        assert wrong.headers["www-authenticate"].startswith("Basic")

    # APP_ENV=test honours X-Test-Org for the Basic principal.
    switched = await http.get(
        url, headers={**basic("admin", STRONG_ADMIN_PASSWORD), "X-Test-Org": other.org_id}
    )
    assert switched.status_code == 200, switched.text
    assert switched.json()["org_id"] == other.org_id
    bad_org = await http.get(url, headers={**basic("admin", STRONG_ADMIN_PASSWORD), "X-Test-Org": "nope"})
    assert_problem(bad_org, 400)

    # The Basic principal acts in its org: it lists that org's users only.
    users = await http.get(f"{gw.url}/v1/iam/users", headers=basic("admin", STRONG_ADMIN_PASSWORD))
    assert users.status_code == 200, users.text
    assert [u["id"] for u in users.json()["users"]] == [org.owner_id]


async def test_basic_auth_off_unless_enabled(gateways, http, make_org):
    await make_org()
    # Credentials configured, but LEGACY_BASIC_AUTH_ENABLED=false: the pair opens nothing.
    gw = gateways.get(
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=STRONG_ADMIN_PASSWORD,
        LEGACY_BASIC_AUTH_ENABLED="false",
    )
    response = await http.get(f"{gw.url}/v1/admin/profile", headers=basic("admin", STRONG_ADMIN_PASSWORD))
    assert_problem(response, 401)


# --- Config viewer and feature flags -----------------------------------------------------------------


async def test_config_viewer_redacts_every_secret(gateways, http, make_org, stack):
    org = await make_org()
    gw = gateways.get(**SECRET_ENV)
    token = await owner_token(http, gw.url, org)

    response = await http.get(f"{gw.url}/v1/admin/config", headers=bearer(token))
    assert_clean(response)
    assert response.status_code == 200, response.text
    config = response.json()["config"]
    for key in (
        "auth_secret_key",
        "auth_secret_key_previous",
        "internal_signing_key",
        "metrics_token",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "smtp_password",
        "sendgrid_api_key",
        "database_url",
        "nats_url",
    ):
        assert config[key] == "<redacted>", (key, config[key])
    assert config["app_env"] == "test"
    assert config["rate_limit_per_minute"] == int(gateways.base_env()["RATE_LIMIT_PER_MINUTE"])

    body = response.text
    for secret in [
        *DEV_SECRETS.values(),
        *SECRET_ENV.values(),
        *EARLIER_AUTH_KEYS,
        stack.app_url,
        stack.nats.url,
        *DEV_KEYRING.private.values(),
        *stack.nats.password_env().values(),
    ]:
        assert secret not in body, secret
    # Nor any recognisable piece of them (e.g. the database password or host part of a URL).
    assert "postgresql" not in body
    assert "nats://" not in body

    # Managers only.
    anonymous = await http.get(f"{gw.url}/v1/admin/config")
    assert_problem(anonymous, 401)


async def test_config_viewer_under_basic_auth(gateways, http, make_org):
    org = await make_org()
    gw = gateways.get(
        ADMIN_BASIC_USERNAME="admin",
        ADMIN_BASIC_PASSWORD=STRONG_ADMIN_PASSWORD,
        DEFAULT_ORG_ID=org.org_id,
        LEGACY_BASIC_AUTH_ENABLED="true",
        **SECRET_ENV,
    )
    response = await http.get(f"{gw.url}/v1/admin/config", headers=basic("admin", STRONG_ADMIN_PASSWORD))
    assert_clean(response)
    assert response.status_code == 200, response.text
    assert response.json()["config"]["legacy_basic_auth_enabled"] is True
    for secret in [*DEV_SECRETS.values(), *SECRET_ENV.values(), STRONG_ADMIN_PASSWORD]:
        assert secret not in response.text, secret

    flags = await http.get(f"{gw.url}/v1/admin/feature-flags", headers=basic("admin", STRONG_ADMIN_PASSWORD))
    assert flags.status_code == 200, flags.text
    assert flags.json()["legacy_basic_auth_enabled"] is True


async def test_feature_flags(gateway, http, make_org):
    org = await make_org()
    token = await owner_token(http, gateway.url, org)
    response = await http.get(f"{gateway.url}/v1/admin/feature-flags", headers=bearer(token))
    assert_clean(response)
    assert response.status_code == 200, response.text
    flags = response.json()
    assert flags["admin_read_only"] is False
    assert flags["admin_mfa_required"] is False
    assert flags["signup_enabled"] is False
    assert flags["export_mode"] == "off"
    assert_problem(await http.get(f"{gateway.url}/v1/admin/feature-flags"), 401)


async def test_feature_flags_come_from_the_service_that_acts_on_them(gateways, http, make_org):
    """The gateway's own environment saying otherwise does not matter: booking, notify, iam and jobs
    answer for DEPOSITS_ENABLED, EXPORT_MODE, SIGNUP_ENABLED and JOBS_ENABLED (all off in the test
    stack), and a service that is down is named instead of guessed."""
    gw = gateways.get(
        DEPOSITS_ENABLED="true", EXPORT_MODE="webhook", SIGNUP_ENABLED="true", JOBS_ENABLED="true"
    )
    org = await make_org()
    headers = bearer(await owner_token(http, gw.url, org))
    flags = (await http.get(f"{gw.url}/v1/admin/feature-flags", headers=headers)).json()
    assert (flags["deposits_enabled"], flags["export_mode"]) == (False, "off"), flags
    assert (flags["signup_enabled"], flags["jobs_enabled"]) == (False, False), flags
    assert flags["unavailable"] == []

    no_booking = gateways.get(BOOKING_GRPC_TARGET="127.0.0.1:9")
    headers = bearer(await owner_token(http, no_booking.url, org))
    response = await http.get(f"{no_booking.url}/v1/admin/feature-flags", headers=headers)
    assert response.status_code == 200, response.text
    flags = response.json()
    assert flags["unavailable"] == ["booking"]
    assert flags["deposits_enabled"] is None
    assert flags["export_mode"] == "off"


async def test_feature_flags_need_a_signed_staff_context(booking):
    """Unlike readiness, OpsService.GetFeatureFlags is not a probe: unsigned callers are refused."""
    async with signing_channel(booking.target) as channel:
        ops = ops_pb2_grpc.OpsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ops.GetFeatureFlags(ops_pb2.GetFeatureFlagsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ready = await ops.GetReadiness(ops_pb2.GetReadinessRequest(), timeout=5)
        assert ready.service == "booking"
        org = str(uuid.uuid4())
        answer = await ops.GetFeatureFlags(
            ops_pb2.GetFeatureFlagsRequest(), metadata=as_role(org, "VIEWER"), timeout=5
        )
        assert dict(answer.flags) == {"deposits_enabled": False}
        with pytest.raises(grpc.aio.AioRpcError) as client:
            await ops.GetFeatureFlags(
                ops_pb2.GetFeatureFlagsRequest(), metadata=as_role(org, "CLIENT"), timeout=5
            )
        assert client.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- Read-only and break-glass -----------------------------------------------------------------------


async def _start_break_glass(http: httpx.AsyncClient, url: str, token: str, reason: str) -> dict:
    response = await http.post(
        f"{url}/v1/admin/break-glass/start", headers=bearer(token), json={"reason": reason, "ttl_minutes": 15}
    )
    assert_clean(response)
    assert response.status_code == 201, response.text
    return response.json()


async def _audit(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    response = await http.get(f"{url}/v1/admin/audit-logs", params={"limit": 200}, headers=bearer(token))
    assert_clean(response)
    assert response.status_code == 200, response.text
    return response


async def test_read_only_blocks_writes_until_break_glass(gateways, http, make_org):
    gw = gateways.get(ADMIN_READ_ONLY="true")
    org = await make_org()
    other = await make_org()
    token = await owner_token(http, gw.url, org)
    other_token = await owner_token(http, gw.url, other)
    new_user = {"email": f"bg-{uuid.uuid4().hex[:10]}@example.com", "role": "VIEWER"}

    blocked = await http.post(f"{gw.url}/v1/iam/users", headers=bearer(token), json=new_user)
    body = assert_problem(blocked, 409, "read_only")
    assert "break-glass" in body["detail"]
    blocked_logout = await http.post(f"{gw.url}/v1/iam/users/{org.owner_id}/logout", headers=bearer(token))
    assert_problem(blocked_logout, 409, "read_only")
    # Reads go on, for the investigation.
    users = await http.get(f"{gw.url}/v1/iam/users", headers=bearer(token))
    assert users.status_code == 200, users.text
    assert users.json()["total"] == 1
    # Every answer says the mode is on, reads too (the web console's banner reads it).
    assert users.headers["x-read-only"] == "1" and blocked.headers["x-read-only"] == "1"

    # Break-glass needs a reason and a TTL.
    start_url = f"{gw.url}/v1/admin/break-glass/start"
    for bad in (
        {"ttl_minutes": 15},
        {"reason": "incident 42"},
        {"reason": "", "ttl_minutes": 15},
        {"reason": "incident 42", "ttl_minutes": 0},
        {},
    ):
        assert_problem(await http.post(start_url, headers=bearer(token), json=bad), 422)
    too_long = await http.post(
        start_url, headers=bearer(token), json={"reason": "incident", "ttl_minutes": 1000}
    )
    assert_problem(too_long, 422)
    assert_problem(await http.post(start_url, json={"reason": "x", "ttl_minutes": 5}), 401)

    reason = f"INC-{uuid.uuid4().hex[:8]}: restore a locked-out dispatcher"
    started = await _start_break_glass(http, gw.url, token, reason)
    assert started["token"] and started["expires_at"] and started["session_id"]
    other_reason = f"INC-{uuid.uuid4().hex[:8]}: the other org's incident"
    other_started = await _start_break_glass(http, gw.url, other_token, other_reason)

    # Another org's token does not open this org's writes, even for a valid owner.
    foreign = await http.post(
        f"{gw.url}/v1/iam/users",
        headers={**bearer(token), "X-Break-Glass-Token": other_started["token"]},
        json=new_user,
    )
    assert_problem(foreign, 403, "break_glass_invalid")
    garbage = await http.post(
        f"{gw.url}/v1/iam/users", headers={**bearer(token), "X-Break-Glass-Token": "bg_nope"}, json=new_user
    )
    assert_problem(garbage, 403, "break_glass_invalid")
    anonymous = await http.post(
        f"{gw.url}/v1/iam/users", headers={"X-Break-Glass-Token": started["token"]}, json=new_user
    )
    assert_problem(anonymous, 401)

    created = await http.post(
        f"{gw.url}/v1/iam/users",
        headers={**bearer(token), "X-Break-Glass-Token": started["token"]},
        json=new_user,
    )
    assert_clean(created)
    assert created.status_code == 201, created.text
    user_id = created.json()["user"]["id"]

    # Both the start and the write are in this org's audit log, with the reason.
    audit = await _audit(http, gw.url, token)
    entries = audit.json()
    start_rows = [e for e in entries if e["action"] == "admin.break_glass.start"]
    assert len(start_rows) == 1, entries
    assert start_rows[0]["break_glass_reason"] == reason
    assert start_rows[0]["resource_id"] == started["session_id"]
    create_rows = [e for e in entries if e["action"] == "iam.user.create"]
    assert len(create_rows) == 1, entries
    assert create_rows[0]["resource_id"] == user_id
    assert create_rows[0]["break_glass_reason"] == reason
    assert create_rows[0]["break_glass_session_id"] == started["session_id"]
    assert started["token"] not in audit.text  # the token itself is never recorded

    # The other org sees none of it (only its own start).
    other_audit = await _audit(http, gw.url, other_token)
    other_entries = other_audit.json()
    assert [e["action"] for e in other_entries] == ["admin.break_glass.start"]
    assert other_entries[0]["break_glass_reason"] == other_reason
    for leaked in (reason, started["session_id"], user_id, org.org_id):
        assert leaked not in other_audit.text


async def test_break_glass_start_needs_a_manager(gateways, http, make_org):
    gw = gateways.get(ADMIN_READ_ONLY="true")
    org = await make_org()
    token = await owner_token(http, gw.url, org)
    # Create a viewer through break-glass, then check the viewer cannot start one.
    started = await _start_break_glass(http, gw.url, token, "onboard a viewer during the incident")
    email = f"viewer-{uuid.uuid4().hex[:10]}@example.com"
    created = await http.post(
        f"{gw.url}/v1/iam/users",
        headers={**bearer(token), "X-Break-Glass-Token": started["token"]},
        json={"email": email, "role": "VIEWER"},
    )
    assert created.status_code == 201, created.text
    login = await http.post(
        f"{gw.url}/v1/auth/login", json={"email": email, "password": created.json()["temp_password"]}
    )
    assert login.status_code == 200, login.text
    viewer = login.json()["access_token"]
    refused = await http.post(
        f"{gw.url}/v1/admin/break-glass/start",
        headers=bearer(viewer),
        json={"reason": "me too", "ttl_minutes": 5},
    )
    assert_problem(refused, 403)


# --- Admin IP allowlist ------------------------------------------------------------------------------


async def test_ip_allowlist_refuses_admin_routes_from_other_addresses(gateways, http, make_org):
    gw = gateways.get(ADMIN_IP_ALLOWLIST_CIDRS="10.0.0.0/8")
    org = await make_org()
    token = await owner_token(http, gw.url, org)  # /v1/auth is not an admin route

    assert_problem(await http.get(f"{gw.url}/v1/admin/profile", headers=bearer(token)), 403, "ip_not_allowed")
    assert_problem(await http.get(f"{gw.url}/v1/iam/users", headers=bearer(token)), 403, "ip_not_allowed")
    # Without trusted proxies, X-Forwarded-For is the caller's word and is ignored.
    spoofed = await http.get(
        f"{gw.url}/v1/iam/users", headers={**bearer(token), "X-Forwarded-For": "10.1.2.3"}
    )
    assert_problem(spoofed, 403, "ip_not_allowed")
    healthz = await http.get(f"{gw.url}/healthz")
    assert healthz.status_code == 200, healthz.text


async def test_ip_allowlist_behind_a_trusted_proxy(gateways, http, make_org):
    gw = gateways.get(
        ADMIN_IP_ALLOWLIST_CIDRS="10.0.0.0/8", TRUST_PROXY_HEADERS="true", TRUSTED_PROXY_IPS="127.0.0.1"
    )
    org = await make_org()
    token = await owner_token(http, gw.url, org)

    allowed = await http.get(
        f"{gw.url}/v1/iam/users", headers={**bearer(token), "X-Forwarded-For": "10.1.2.3"}
    )
    assert allowed.status_code == 200, allowed.text
    profile = await http.get(
        f"{gw.url}/v1/admin/profile", headers={**bearer(token), "X-Forwarded-For": "10.1.2.3"}
    )
    assert profile.status_code == 200, profile.text
    # The client is the right-most untrusted hop: a forged left-most entry does not help.
    forged = await http.get(
        f"{gw.url}/v1/iam/users", headers={**bearer(token), "X-Forwarded-For": "10.1.2.3, 203.0.113.7"}
    )
    assert_problem(forged, 403, "ip_not_allowed")
    direct = await http.get(f"{gw.url}/v1/iam/users", headers=bearer(token))
    assert_problem(direct, 403, "ip_not_allowed")


# --- Metrics -----------------------------------------------------------------------------------------


async def test_metrics_need_the_metrics_token(gateways, http, make_org):
    await make_org()
    gw = gateways.get(**SECRET_ENV)
    token = SECRET_ENV["METRICS_TOKEN"]
    await http.get(f"{gw.url}/healthz")  # at least one request to count
    for path in ("/metrics", "/v1/metrics"):
        missing = await http.get(f"{gw.url}{path}")
        assert_problem(missing, 401)
        wrong = await http.get(f"{gw.url}{path}", headers=bearer(token + "x"))
        assert_problem(wrong, 401)
        ok = await http.get(f"{gw.url}{path}", headers=bearer(token))
        assert ok.status_code == 200, ok.text
        assert ok.headers["content-type"].startswith("text/plain")
        assert "http_requests_total" in ok.text
        assert "http_request_duration_seconds" in ok.text


# --- Rate limits -------------------------------------------------------------------------------------


async def _assert_sixth_request_limited(http: httpx.AsyncClient, url: str, org) -> None:
    client_ip = {"X-Forwarded-For": random_private_ip()}
    token = await owner_token(http, url, org)  # login has its own (generous) limit
    headers = {**bearer(token), **client_ip}
    for _ in range(5):
        ok = await http.get(f"{url}/v1/admin/feature-flags", headers=headers)
        assert ok.status_code == 200, ok.text
        assert "limit=5" in ok.headers["ratelimit"]
    limited = await http.get(f"{url}/v1/admin/feature-flags", headers=headers)
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-policy"].startswith("5;w=60")
    assert "remaining=0" in limited.headers["ratelimit"]
    # Another client is not affected; health probes are never limited.
    other = await http.get(
        f"{url}/v1/admin/feature-flags", headers={**bearer(token), "X-Forwarded-For": random_private_ip()}
    )
    assert other.status_code == 200, other.text
    probe = await http.get(f"{url}/healthz", headers=client_ip)
    assert probe.status_code == 200, probe.text


async def test_rate_limit_in_process(gateways, http, make_org):
    org = await make_org()
    gw = gateways.get(REDIS_URL="", **RATE_LIMITED_ENV)
    await _assert_sixth_request_limited(http, gw.url, org)


async def test_rate_limit_in_redis(gateways, http, make_org, stack):
    if not stack.redis_url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Redis (REDIS_URL or 127.0.0.1:6379) for the shared rate limiter")
        pytest.skip("no Redis reachable on REDIS_URL or 127.0.0.1:6379; the Redis limiter is not tested")
    org = await make_org()
    gw = gateways.get(REDIS_URL=stack.redis_url, **RATE_LIMITED_ENV)
    await _assert_sixth_request_limited(http, gw.url, org)
    # The count lives in Redis: a second gateway on the same Redis shares it.
    twin = gateways.get(REDIS_URL=stack.redis_url, LOG_LEVEL="WARNING", **RATE_LIMITED_ENV)
    client_ip = {"X-Forwarded-For": random_private_ip()}
    token = await owner_token(http, gw.url, org)
    for url in (gw.url, twin.url, gw.url, twin.url, gw.url):
        ok = await http.get(f"{url}/v1/admin/feature-flags", headers={**bearer(token), **client_ip})
        assert ok.status_code == 200, ok.text
    limited = await http.get(f"{twin.url}/v1/admin/feature-flags", headers={**bearer(token), **client_ip})
    assert_problem(limited, 429, "rate_limited")


# --- Readiness ---------------------------------------------------------------------------------------


async def test_readyz_reports_every_check(gateway, http):
    response = await http.get(f"{gateway.url}/readyz")
    assert_clean(response)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["status"] == "ok"
    assert body["database"]["migrations_current"] is True
    assert body["database"]["reachable"] is True
    assert body["jobs"]["enabled"] is False
    checks = {c["name"]: c for c in body["checks"]}
    assert {"db", "migrations", "jobs", "service:iam"} <= checks.keys()
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["migrations"]["detail"]["migrations_current"] is True
    assert checks["service:iam"]["detail"]["serving"] is True


async def test_readyz_503_when_jobs_enabled_without_heartbeat(gateways, http):
    # Scheduler tests earlier in the run leave fresh heartbeats behind: start from none.
    async with await psycopg.AsyncConnection.connect(gateways.stack.admin_url, autocommit=True) as admin:
        await admin.execute("DELETE FROM jobs.job_heartbeats")
    gw = gateways.get(JOBS_ENABLED="true")
    response = await http.get(f"{gw.url}/readyz")
    assert_clean(response)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["status"] == "error"
    assert body["jobs"]["enabled"] is True
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["jobs"]["ok"] is False
    assert checks["db"]["ok"] is True  # only the heartbeat is missing


# --- OpenAPI -----------------------------------------------------------------------------------------


async def test_openapi_documents_every_route(gateway, http, monkeypatch):
    from gateway.access import api_routes
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    response = await http.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200, response.text
    spec = response.json()
    paths = spec["paths"]

    expected = {
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/metrics", "get"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/signup", "post"),
        ("/v1/auth/change-password", "post"),
        ("/v1/auth/2fa/enroll", "post"),
        ("/v1/auth/2fa/verify", "post"),
        ("/v1/auth/2fa/disable", "post"),
        ("/v1/iam/users", "get"),
        ("/v1/iam/users", "post"),
        ("/v1/iam/users/{user_id}/reset-password", "post"),
        ("/v1/iam/users/{user_id}/logout", "post"),
        ("/v1/admin/profile", "get"),
        ("/v1/admin/config", "get"),
        ("/v1/admin/feature-flags", "get"),
        ("/v1/admin/break-glass/start", "post"),
        ("/v1/admin/audit-logs", "get"),
    }
    # And whatever else the application serves (built here only to list its routes; its logging
    # set-up would reconfigure this test process).
    monkeypatch.setattr("gateway.app.configure_logging", lambda *args, **kwargs: None)
    app = create_app(
        GatewaySettings(app_env="test", redis_url="", **{k.lower(): v for k, v in DEV_SECRETS.items()})
    )
    # Included routers are flattened by api_routes: app.routes alone holds no APIRoute.
    listed = list(api_routes(app.routes))
    assert len(listed) > 50
    for route in listed:
        if route.original_route.include_in_schema:  # type: ignore[attr-defined]
            expected |= {(route.path or "", method.lower()) for method in route.methods or ()}
    for path, method in sorted(expected):
        assert method in paths.get(path, {}), (path, method)

    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} >= {"http"}
    assert {s["scheme"].lower() for s in schemes.values()} >= {"bearer", "basic"}
    assert paths["/v1/iam/users"]["get"]["security"]
    assert paths["/v1/admin/break-glass/start"]["post"]["security"]

    login = paths["/v1/auth/login"]["post"]["responses"]
    assert {"200", "401", "422"} <= login.keys()
    assert "application/problem+json" in login["401"]["content"]
    assert {"401", "403", "409"} <= paths["/v1/iam/users"]["post"]["responses"].keys()
    assert "Problem" in spec["components"]["schemas"]
