"""IAM through its gRPC API: the real process, a real database, contexts signed as the gateway does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
from cws.common.v1 import ops_pb2, ops_pb2_grpc
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from libs.common import call_signing
from libs.common import context as request_context
from libs.common import status as rich_status
from libs.common.internal_keys import CallSigner
from libs.common.tokens import decode_access
from services.iam import passwords
from tools.processes import DEV_SECRETS
from tools.testkit import GATEWAY, JWT, as_role, eventually, rpc_error, signed, signing_channel, sql

ANONYMOUS = request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS")
Code = grpc.StatusCode


# --- helpers --------------------------------------------------------------------------------


def make_ctx(
    org_id: str = "",
    principal_id: str = "",
    role: str = "",
    auth_method: int = JWT,
    **fields: Any,
) -> request_context.RequestContext:
    return request_context.RequestContext(
        org_id=org_id,
        principal_id=principal_id,
        role=role,
        auth_method=auth_method,  # type: ignore[arg-type]
        request_id=fields.pop("request_id", f"test-{uuid.uuid4().hex[:12]}"),
        session_id=fields.pop("session_id", str(uuid.uuid4()) if principal_id else ""),
        **fields,
    )


def anonymous() -> tuple[tuple[str, Any], ...]:
    return signed(make_ctx(auth_method=ANONYMOUS, client_ip="203.0.113.9"))


@pytest.fixture
async def channel(iam: Any) -> AsyncIterator[grpc.aio.Channel]:
    async with signing_channel(iam.target) as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> iam_pb2_grpc.IamServiceStub:
    return iam_pb2_grpc.IamServiceStub(channel)


# --- signed context -------------------------------------------------------------------------


async def test_call_without_context_is_unauthenticated(stub: Any) -> None:
    error = await rpc_error(stub.ListUsers(iam_pb2.ListUsersRequest()), Code.UNAUTHENTICATED)
    assert error.reason == "context_missing"
    error = await rpc_error(
        stub.Login(iam_pb2.LoginRequest(email="a@example.com", password="x")), Code.UNAUTHENTICATED
    )
    assert error.reason == "context_missing"


LIST_USERS = "/cws.iam.v1.IamService/ListUsers"


def hand_signed(
    ctx: request_context.RequestContext, signer: CallSigner = GATEWAY, **stamp: Any
) -> call_signing.Metadata:
    """ListUsers(limit 0) signed as `signer` would sign it (tests/test_internal_calls.py has the rest)."""
    body = iam_pb2.ListUsersRequest().SerializeToString()
    return call_signing.sign_call(ctx, signer, LIST_USERS, body, **stamp)


async def test_context_signed_with_another_key_is_unauthenticated(stub: Any, make_org: Any) -> None:
    org = await make_org()
    metadata = signed(make_ctx(org.org_id, org.owner_id, "OWNER"), CallSigner.new("gateway"))
    error = await rpc_error(
        stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=metadata), Code.UNAUTHENTICATED
    )
    assert error.reason == "context_forged"


async def test_context_altered_after_signing_is_unauthenticated(stub: Any, make_org: Any) -> None:
    org = await make_org()
    genuine = dict(hand_signed(make_ctx(org.org_id, str(uuid.uuid4()), "VIEWER")))
    escalated = request_context.RequestContext.FromString(genuine[call_signing.CONTEXT_KEY])
    escalated.role = "OWNER"
    metadata = tuple({**genuine, call_signing.CONTEXT_KEY: escalated.SerializeToString()}.items())
    error = await rpc_error(
        stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=metadata), Code.UNAUTHENTICATED
    )
    assert error.reason == "context_forged"
    # A signature alone, without the context it signed, is not a context.
    only_signature = ((call_signing.SIGNATURE_KEY, genuine[call_signing.SIGNATURE_KEY]),)
    await rpc_error(stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=only_signature), Code.UNAUTHENTICATED)


async def test_stale_context_is_unauthenticated(stub: Any, make_org: Any) -> None:
    org = await make_org()
    now_ms = int(time.time() * 1000)
    fresh = hand_signed(make_ctx(org.org_id, org.owner_id, "OWNER"), issued_at_ms=now_ms - 5_000)
    assert (await stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=fresh)).total == 1
    for issued_at in (now_ms - 31_000, now_ms - 3_600_000, now_ms + 120_000):
        stale = hand_signed(make_ctx(org.org_id, org.owner_id, "OWNER"), issued_at_ms=issued_at)
        error = await rpc_error(
            stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=stale), Code.UNAUTHENTICATED
        )
        assert error.reason == "context_stale"


# --- health, reflection, readiness ----------------------------------------------------------


async def test_grpc_health_reports_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "cws.iam.v1.IamService"):
        # /readyz (what the fixture waits for) answers from a fresh check; gRPC health flips on the next
        # pass of the readiness loop, up to READINESS_INTERVAL_SECONDS later.
        async def serving(service: str = service) -> bool:
            response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return response.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, timeout=5, message=f"health of {service!r} to be SERVING")
    await rpc_error(
        health.Check(health_pb2.HealthCheckRequest(service="cws.nope.v1.Nope"), timeout=5), Code.NOT_FOUND
    )


async def test_reflection_lists_iam_service(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="cws.iam.v1.IamService"),
    ]
    responses = [r async for r in reflection.ServerReflectionInfo(iter(requests), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"cws.iam.v1.IamService", "cws.common.v1.OpsService", "grpc.health.v1.Health"} <= names
    assert responses[1].file_descriptor_response.file_descriptor_proto, "the IAM descriptor is served"


async def test_ops_readiness_reports_db_migrations_and_nats_ok(channel: grpc.aio.Channel) -> None:
    ops = ops_pb2_grpc.OpsServiceStub(channel)
    response = await ops.GetReadiness(ops_pb2.GetReadinessRequest(), timeout=5)
    assert response.service == "iam"
    assert response.ok
    checks = {c.name: c for c in response.checks}
    assert set(checks) == {"db", "migrations", "nats"}
    assert all(c.ok for c in checks.values()), checks
    assert checks["migrations"].detail["current_version"] == checks["migrations"].detail["expected_head"]


# --- login ----------------------------------------------------------------------------------


async def test_login_returns_tokens(stub: Any, stack: Any, make_org: Any) -> None:
    org = await make_org()
    response = await stub.Login(
        iam_pb2.LoginRequest(email=f"  {org.owner_email.upper()} ", password=org.owner_password),
        metadata=anonymous(),
    )
    tokens = response.tokens
    assert tokens.token_type == "bearer"
    assert (tokens.org_id, tokens.user_id, tokens.role) == (org.org_id, org.owner_id, "OWNER")
    assert tokens.refresh_token.startswith(f"rt.{org.org_id}.")
    assert 0 < tokens.expires_in <= 15 * 60
    claims = decode_access(tokens.access_token, DEV_SECRETS["AUTH_SECRET_KEY"])
    assert (claims.org_id, claims.user_id, claims.role) == (org.org_id, org.owner_id, "OWNER")
    rows = await sql(
        stack.admin_url,
        "SELECT org_id::text, client_ip FROM iam.sessions WHERE id = %s",
        (claims.session_id,),
    )
    assert rows == [(org.org_id, "203.0.113.9")]


async def test_a_login_stores_a_hash_of_another_cost_again_at_the_current_one(
    stub: Any, stack: Any, make_org: Any
) -> None:
    """PASSWORD_HASH_* can be raised in production: old hashes keep working and are upgraded on the
    next successful login (the IAM process runs at the test cost, t=1, 1 MiB, p=1)."""
    passwords.configure(time_cost=2, memory_kib=2048, parallelism=1)
    try:
        org = await make_org()
    finally:
        passwords.configure(time_cost=1, memory_kib=1024, parallelism=1)

    async def stored() -> str:
        [(hashed,)] = await sql(
            stack.admin_url, "SELECT password_hash FROM iam.users WHERE id = %s", (org.owner_id,)
        )
        return str(hashed)

    assert "m=2048,t=2,p=1" in await stored()
    wrong = iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password + "x")
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Login(wrong, metadata=anonymous())
    assert "m=2048,t=2,p=1" in await stored()  # a wrong password changes nothing
    login = iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password)
    await stub.Login(login, metadata=anonymous())
    assert "m=1024,t=1,p=1" in await stored()
    await stub.Login(login, metadata=anonymous())  # and it still verifies


async def test_login_wrong_password_and_unknown_email_look_the_same(stub: Any, make_org: Any) -> None:
    org = await make_org()
    wrong = await rpc_error(
        stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password="Wrong-password-123"), metadata=anonymous()
        ),
        Code.UNAUTHENTICATED,
    )
    unknown = await rpc_error(
        stub.Login(
            iam_pb2.LoginRequest(
                email=f"nobody-{uuid.uuid4().hex}@example.com", password="Wrong-password-123"
            ),
            metadata=anonymous(),
        ),
        Code.UNAUTHENTICATED,
    )
    assert (
        (wrong.reason, wrong.detail)
        == (unknown.reason, unknown.detail)
        == (
            "invalid_credentials",
            "email or password is wrong",
        )
    )


async def test_login_locked_after_100_consecutive_failures(stub: Any, stack: Any, make_org: Any) -> None:
    org = await make_org()
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET failed_login_count = 99, locked_until = NULL WHERE id = %s",
        (org.owner_id,),
    )
    failure = await rpc_error(
        stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password="Wrong-password-123"), metadata=anonymous()
        ),
        Code.UNAUTHENTICATED,
    )
    assert failure.reason == "invalid_credentials"
    assert await sql(
        stack.admin_url, "SELECT failed_login_count FROM iam.users WHERE id = %s", (org.owner_id,)
    ) == [(100,)]
    for _ in range(2):  # and it stays locked: the right password does not reset the count
        locked = await rpc_error(
            stub.Login(
                iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password), metadata=anonymous()
            ),
            Code.RESOURCE_EXHAUSTED,
        )
        assert locked.reason == "account_locked"
    # Even once the throttle delay has passed, only a reset unlocks the account.
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET locked_until = now() - interval '1 hour' WHERE id = %s",
        (org.owner_id,),
    )
    locked = await rpc_error(
        stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password), metadata=anonymous()
        ),
        Code.RESOURCE_EXHAUSTED,
    )
    assert locked.reason == "account_locked"


async def test_locked_user_is_unlocked_by_an_admin_reset(stub: Any, stack: Any, make_org: Any) -> None:
    org = await make_org()
    email = f"dispatcher-{uuid.uuid4().hex[:10]}@example.com"
    created = await stub.CreateUser(
        iam_pb2.CreateUserRequest(email=email, full_name="D", role="DISPATCHER"),
        metadata=as_role(org.org_id, "OWNER"),
    )
    await sql(
        stack.admin_url, "UPDATE iam.users SET failed_login_count = 100 WHERE id = %s", (created.user.id,)
    )
    await rpc_error(
        stub.Login(iam_pb2.LoginRequest(email=email, password=created.temp_password), metadata=anonymous()),
        Code.RESOURCE_EXHAUSTED,
    )
    reset = await stub.ResetUserPassword(
        iam_pb2.ResetUserPasswordRequest(user_id=created.user.id), metadata=as_role(org.org_id, "ADMIN")
    )
    assert reset.temp_password and reset.temp_password != created.temp_password
    tokens = (
        await stub.Login(
            iam_pb2.LoginRequest(email=email, password=reset.temp_password), metadata=anonymous()
        )
    ).tokens
    assert tokens.must_change_password
    assert tokens.role == "DISPATCHER"


async def test_login_throttled_after_a_few_failures(stub: Any, stack: Any, make_org: Any) -> None:
    org = await make_org()
    await sql(stack.admin_url, "UPDATE iam.users SET failed_login_count = 4 WHERE id = %s", (org.owner_id,))
    await rpc_error(
        stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password="Wrong-password-123"), metadata=anonymous()
        ),
        Code.UNAUTHENTICATED,
    )
    # Push the delay out so the assertion does not race the clock.
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET locked_until = now() + interval '30 seconds' WHERE id = %s",
        (org.owner_id,),
    )
    throttled = await rpc_error(
        stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password), metadata=anonymous()
        ),
        Code.RESOURCE_EXHAUSTED,
    )
    assert throttled.reason == "login_throttled"
    assert throttled.retry_after_seconds is not None and 1 <= throttled.retry_after_seconds <= 31


# --- refresh, logout, session checks --------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_ends_the_session(
    stub: Any, stack: Any, make_org: Any
) -> None:
    org = await make_org()
    first = (
        await stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password), metadata=anonymous()
        )
    ).tokens
    session_id = decode_access(first.access_token, DEV_SECRETS["AUTH_SECRET_KEY"]).session_id
    second = (
        await stub.Refresh(iam_pb2.RefreshRequest(refresh_token=first.refresh_token), metadata=anonymous())
    ).tokens
    assert second.refresh_token != first.refresh_token and second.user_id == org.owner_id

    reused = await rpc_error(
        stub.Refresh(iam_pb2.RefreshRequest(refresh_token=first.refresh_token), metadata=anonymous()),
        Code.UNAUTHENTICATED,
    )
    assert reused.reason == "refresh_token_reused"
    # The refusal came after the revocation committed: the session is ended, it was announced, and
    # the chain's newest token is worthless too.
    assert await sql(
        stack.admin_url, "SELECT revoked_reason FROM iam.sessions WHERE id = %s", (session_id,)
    ) == [("refresh_token_reuse",)]
    announced = await sql(
        stack.admin_url,
        "SELECT count(*) FROM iam.event_outbox WHERE subject = 'cws.iam.session.revoked' AND org_id = %s",
        (org.org_id,),
    )
    assert announced == [(1,)]
    invalid = await rpc_error(
        stub.Refresh(iam_pb2.RefreshRequest(refresh_token=second.refresh_token), metadata=anonymous()),
        Code.UNAUTHENTICATED,
    )
    assert invalid.reason == "invalid_refresh_token"
    for garbage in ("rt.not-an-org.x", "nonsense"):
        malformed = await rpc_error(
            stub.Refresh(iam_pb2.RefreshRequest(refresh_token=garbage), metadata=anonymous()),
            Code.UNAUTHENTICATED,
        )
        assert malformed.reason == "invalid_refresh_token"


async def test_logout_by_refresh_token_ends_the_session_check_session_sees_it(
    stub: Any, make_org: Any
) -> None:
    org = await make_org()
    tokens = (
        await stub.Login(
            iam_pb2.LoginRequest(email=org.owner_email, password=org.owner_password), metadata=anonymous()
        )
    ).tokens
    session_id = decode_access(tokens.access_token, DEV_SECRETS["AUTH_SECRET_KEY"]).session_id
    check = iam_pb2.CheckSessionRequest(session_id=session_id)
    assert (await stub.CheckSession(check, metadata=as_role(org.org_id, "OWNER"))).active
    # Anonymous, as the gateway calls it for a client holding only a refresh token.
    await stub.Logout(iam_pb2.LogoutRequest(refresh_token=tokens.refresh_token), metadata=anonymous())
    assert not (await stub.CheckSession(check, metadata=as_role(org.org_id, "OWNER"))).active
    # Another org's caller cannot see the session at all; a malformed id is simply not active.
    other = await make_org()
    assert not (await stub.CheckSession(check, metadata=as_role(other.org_id, "OWNER"))).active
    assert not (
        await stub.CheckSession(
            iam_pb2.CheckSessionRequest(session_id="nope"), metadata=as_role(org.org_id, "OWNER")
        )
    ).active
    error = await rpc_error(stub.Logout(iam_pb2.LogoutRequest(), metadata=anonymous()), Code.UNAUTHENTICATED)
    assert error.detail == "nothing to log out"


# --- TOTP step-up: the acting user's current password (issue 9, hole 4) ----------------------


async def totp_on(stack: Any, user_id: str) -> None:
    await sql(
        stack.admin_url,
        "UPDATE iam.users SET totp_enabled = true, totp_secret_enc = 'not-a-real-secret' WHERE id = %s",
        (user_id,),
    )


async def test_disable_totp_needs_the_acting_owners_own_password(
    stub: Any, stack: Any, make_org: Any
) -> None:
    org = await make_org()
    await totp_on(stack, org.owner_id)
    signed_in = signed(make_ctx(org.org_id, org.owner_id, "OWNER"))

    missing = await rpc_error(
        stub.DisableTotp(iam_pb2.DisableTotpRequest(), metadata=signed_in), Code.INVALID_ARGUMENT
    )
    assert [v.field for v in missing.violations] == ["current_password"]
    wrong = await rpc_error(
        stub.DisableTotp(
            iam_pb2.DisableTotpRequest(current_password="Guessed-password-1"), metadata=signed_in
        ),
        Code.UNAUTHENTICATED,
    )
    assert wrong.reason == "invalid_credentials"
    # The guess counted, and the refusal changed nothing else.
    assert await sql(
        stack.admin_url,
        "SELECT failed_login_count, totp_enabled FROM iam.users WHERE id = %s",
        (org.owner_id,),
    ) == [(1, True)]

    # An OWNER principal that is no user of the org (a forged or stale id) has no password to give.
    await rpc_error(
        stub.DisableTotp(
            iam_pb2.DisableTotpRequest(user_id=org.owner_id, current_password=org.owner_password),
            metadata=as_role(org.org_id, "OWNER"),
        ),
        Code.NOT_FOUND,
    )
    done = await stub.DisableTotp(
        iam_pb2.DisableTotpRequest(current_password=org.owner_password), metadata=signed_in
    )
    assert done.revoked_sessions == 0  # the context's session is made up; nothing else was open
    assert await sql(
        stack.admin_url, "SELECT totp_enabled FROM iam.users WHERE id = %s", (org.owner_id,)
    ) == [(False,)]


async def test_disable_totp_by_a_basic_auth_owner_needs_no_extra_password(
    stub: Any, stack: Any, make_org: Any
) -> None:
    """Legacy Basic Auth sends its password with every request (checked by the gateway): there is
    no token to steal, so the request is its own step-up."""
    org = await make_org()
    await totp_on(stack, org.owner_id)
    basic = signed(
        make_ctx(
            org.org_id,
            "basic:owner",
            "OWNER",
            auth_method=request_context.AuthMethod.Value("AUTH_METHOD_BASIC"),
            session_id="",
        )
    )
    await stub.DisableTotp(iam_pb2.DisableTotpRequest(user_id=org.owner_id), metadata=basic)
    assert await sql(
        stack.admin_url, "SELECT totp_enabled FROM iam.users WHERE id = %s", (org.owner_id,)
    ) == [(False,)]


async def test_enroll_and_verify_need_a_signed_in_users_password(
    stub: Any, stack: Any, make_org: Any
) -> None:
    org = await make_org()
    signed_in = signed(make_ctx(org.org_id, org.owner_id, "OWNER"))
    for call in (
        stub.EnrollTotp(iam_pb2.EnrollTotpRequest(), metadata=signed_in),
        stub.VerifyTotp(iam_pb2.VerifyTotpRequest(code="123456"), metadata=signed_in),
    ):
        missing = await rpc_error(call, Code.INVALID_ARGUMENT)
        assert [v.field for v in missing.violations] == ["current_password"]
    for call in (
        stub.EnrollTotp(iam_pb2.EnrollTotpRequest(current_password="Guessed-password-1"), metadata=signed_in),
        stub.VerifyTotp(
            iam_pb2.VerifyTotpRequest(code="123456", current_password="Guessed-password-1"),
            metadata=signed_in,
        ),
    ):
        assert (await rpc_error(call, Code.UNAUTHENTICATED)).reason == "invalid_credentials"
    assert await sql(
        stack.admin_url,
        "SELECT failed_login_count, totp_secret_enc IS NULL FROM iam.users WHERE id = %s",
        (org.owner_id,),
    ) == [(2, True)]
    enrolled = await stub.EnrollTotp(
        iam_pb2.EnrollTotpRequest(current_password=org.owner_password), metadata=signed_in
    )
    assert enrolled.secret and enrolled.otpauth_uri.startswith("otpauth://totp/")


# --- tenancy and user admin -----------------------------------------------------------------


async def test_list_users_never_returns_another_orgs_users(stub: Any, make_org: Any) -> None:
    org_a, org_b = await make_org("A"), await make_org("B")
    b_email = f"b-user-{uuid.uuid4().hex[:10]}@example.com"
    await stub.CreateUser(
        iam_pb2.CreateUserRequest(email=b_email, role="VIEWER"), metadata=as_role(org_b.org_id, "OWNER")
    )
    listed = await stub.ListUsers(
        iam_pb2.ListUsersRequest(limit=200), metadata=as_role(org_a.org_id, "OWNER")
    )
    assert listed.total == 1
    assert [(u.id, u.email, u.org_id) for u in listed.users] == [
        (org_a.owner_id, org_a.owner_email, org_a.org_id)
    ]
    listed_b = await stub.ListUsers(
        iam_pb2.ListUsersRequest(limit=200), metadata=as_role(org_b.org_id, "OWNER")
    )
    assert {u.email for u in listed_b.users} == {org_b.owner_email, b_email}
    assert {u.org_id for u in listed_b.users} == {org_b.org_id}


async def test_list_users_needs_a_manager_and_a_sane_page(stub: Any, make_org: Any) -> None:
    org = await make_org()
    await rpc_error(
        stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=as_role(org.org_id, "VIEWER")),
        Code.PERMISSION_DENIED,
    )
    error = await rpc_error(
        stub.ListUsers(iam_pb2.ListUsersRequest(limit=500), metadata=as_role(org.org_id, "OWNER")),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["limit"]


async def test_reset_and_logout_of_another_orgs_user_is_not_found(stub: Any, make_org: Any) -> None:
    org_a, org_b = await make_org("A"), await make_org("B")
    b_login = await stub.Login(
        iam_pb2.LoginRequest(email=org_b.owner_email, password=org_b.owner_password), metadata=anonymous()
    )
    await rpc_error(
        stub.ResetUserPassword(
            iam_pb2.ResetUserPasswordRequest(user_id=org_b.owner_id), metadata=as_role(org_a.org_id, "OWNER")
        ),
        Code.NOT_FOUND,
    )
    await rpc_error(
        stub.LogoutUser(
            iam_pb2.LogoutUserRequest(user_id=org_b.owner_id), metadata=as_role(org_a.org_id, "OWNER")
        ),
        Code.NOT_FOUND,
    )
    # Nothing happened to B's owner: the password still works and the session is still alive.
    again = await stub.Login(
        iam_pb2.LoginRequest(email=org_b.owner_email, password=org_b.owner_password), metadata=anonymous()
    )
    assert again.tokens.user_id == org_b.owner_id
    revoked = await stub.LogoutUser(
        iam_pb2.LogoutUserRequest(user_id=org_b.owner_id), metadata=as_role(org_b.org_id, "OWNER")
    )
    assert revoked.revoked_sessions == 2, "both of B's sessions were still open"
    assert b_login.tokens.user_id == org_b.owner_id
    error = await rpc_error(
        stub.ResetUserPassword(
            iam_pb2.ResetUserPasswordRequest(user_id="not-a-uuid"), metadata=as_role(org_a.org_id, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["user_id"]


async def test_admin_cannot_create_or_touch_an_owner(stub: Any, make_org: Any) -> None:
    org = await make_org()
    error = await rpc_error(
        stub.CreateUser(
            iam_pb2.CreateUserRequest(email=f"o-{uuid.uuid4().hex[:10]}@example.com", role="OWNER"),
            metadata=as_role(org.org_id, "ADMIN"),
        ),
        Code.PERMISSION_DENIED,
    )
    assert error.reason == "forbidden_role"
    await rpc_error(
        stub.ResetUserPassword(
            iam_pb2.ResetUserPasswordRequest(user_id=org.owner_id), metadata=as_role(org.org_id, "ADMIN")
        ),
        Code.PERMISSION_DENIED,
    )
    await rpc_error(
        stub.CreateUser(
            iam_pb2.CreateUserRequest(email=f"v-{uuid.uuid4().hex[:10]}@example.com", role="VIEWER"),
            metadata=as_role(org.org_id, "DISPATCHER"),
        ),
        Code.PERMISSION_DENIED,
    )
    # An owner may create another owner; an admin may create an admin.
    await stub.CreateUser(
        iam_pb2.CreateUserRequest(email=f"o-{uuid.uuid4().hex[:10]}@example.com", role="OWNER"),
        metadata=as_role(org.org_id, "OWNER"),
    )
    await stub.CreateUser(
        iam_pb2.CreateUserRequest(email=f"a-{uuid.uuid4().hex[:10]}@example.com", role="ADMIN"),
        metadata=as_role(org.org_id, "ADMIN"),
    )


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "two@@example.com", ""])
async def test_create_user_with_invalid_email_names_the_field(stub: Any, make_org: Any, email: str) -> None:
    org = await make_org()
    error = await rpc_error(
        stub.CreateUser(
            iam_pb2.CreateUserRequest(email=email, role="VIEWER"), metadata=as_role(org.org_id, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["email"]
    assert error.violations[0].description


async def test_create_user_with_unknown_role_names_the_field(stub: Any, make_org: Any) -> None:
    org = await make_org()
    error = await rpc_error(
        stub.CreateUser(
            iam_pb2.CreateUserRequest(email="x@example.com", role="GOD"),
            metadata=as_role(org.org_id, "OWNER"),
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["role"]


async def test_duplicate_email_conflict_does_not_reveal_the_other_org(stub: Any, make_org: Any) -> None:
    org_a, org_b = await make_org("A"), await make_org("B")
    email = f"dup-{uuid.uuid4().hex[:10]}@example.com"
    await stub.CreateUser(
        iam_pb2.CreateUserRequest(email=email, role="VIEWER"), metadata=as_role(org_a.org_id, "OWNER")
    )
    in_org = await rpc_error(
        stub.CreateUser(
            iam_pb2.CreateUserRequest(email=email.upper(), role="VIEWER"),
            metadata=as_role(org_a.org_id, "OWNER"),
        ),
        Code.ALREADY_EXISTS,
    )
    cross_org = await rpc_error(
        stub.CreateUser(
            iam_pb2.CreateUserRequest(email=org_b.owner_email, role="VIEWER"),
            metadata=as_role(org_a.org_id, "OWNER"),
        ),
        Code.ALREADY_EXISTS,
    )
    assert (in_org.reason, in_org.detail) == (cross_org.reason, cross_org.detail)
    assert in_org.reason == "email_taken"
    assert org_b.org_id not in cross_org.detail and "B" not in cross_org.detail.split()
    listed = await stub.ListUsers(iam_pb2.ListUsersRequest(), metadata=as_role(org_a.org_id, "OWNER"))
    assert listed.total == 2


async def test_concurrent_creates_of_one_email_give_one_user_and_one_conflict(
    stub: Any, make_org: Any
) -> None:
    org_a, org_b = await make_org("A"), await make_org("B")
    email = f"race-{uuid.uuid4().hex[:10]}@example.com"
    results = await asyncio.gather(
        *(
            stub.CreateUser(
                iam_pb2.CreateUserRequest(email=email, role="VIEWER"), metadata=as_role(org.org_id, "OWNER")
            )
            for org in (org_a, org_b, org_a, org_b)
        ),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, iam_pb2.CreateUserResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1, results
    assert [e.code() for e in failed] == [Code.ALREADY_EXISTS] * 3, [(e.code(), e.details()) for e in failed]
    assert {rich_status.decode(e).detail for e in failed} == {"an account with this email already exists"}


# --- break-glass ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "ttl", "field"),
    [
        ("", 30, "reason"),
        ("   ", 30, "reason"),
        ("x" * 501, 30, "reason"),
        ("incident", 0, "ttl_minutes"),
        ("incident", -5, "ttl_minutes"),
        ("incident", 241, "ttl_minutes"),
    ],
)
async def test_break_glass_needs_reason_and_1_to_240_minutes(
    stub: Any, make_org: Any, reason: str, ttl: int, field: str
) -> None:
    org = await make_org()
    error = await rpc_error(
        stub.StartBreakGlass(
            iam_pb2.StartBreakGlassRequest(reason=reason, ttl_minutes=ttl),
            metadata=as_role(org.org_id, "OWNER"),
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == [field]


async def test_break_glass_start_verify_and_org_scope(stub: Any, stack: Any, make_org: Any) -> None:
    org_a, org_b = await make_org("A"), await make_org("B")
    for ttl in (1, 240):
        await stub.StartBreakGlass(
            iam_pb2.StartBreakGlassRequest(reason="bounds", ttl_minutes=ttl),
            metadata=as_role(org_a.org_id, "ADMIN"),
        )
    await rpc_error(
        stub.StartBreakGlass(
            iam_pb2.StartBreakGlassRequest(reason="x", ttl_minutes=5),
            metadata=as_role(org_a.org_id, "VIEWER"),
        ),
        Code.PERMISSION_DENIED,
    )
    started = await stub.StartBreakGlass(
        iam_pb2.StartBreakGlassRequest(reason="  database incident  ", ttl_minutes=30),
        metadata=as_role(org_a.org_id, "OWNER"),
    )
    assert started.token.startswith("bg_")
    assert 29 * 60 < started.expires_at.seconds - time.time() <= 30 * 60
    verified = await stub.VerifyBreakGlass(
        iam_pb2.VerifyBreakGlassRequest(token=started.token), metadata=as_role(org_a.org_id, "VIEWER")
    )
    assert (verified.session_id, verified.reason) == (started.session_id, "database incident")

    error = await rpc_error(
        stub.VerifyBreakGlass(
            iam_pb2.VerifyBreakGlassRequest(token=started.token), metadata=as_role(org_b.org_id, "OWNER")
        ),
        Code.PERMISSION_DENIED,
    )
    assert error.reason == "break_glass_invalid"
    await rpc_error(
        stub.VerifyBreakGlass(
            iam_pb2.VerifyBreakGlassRequest(token="bg_made-up"), metadata=as_role(org_a.org_id, "OWNER")
        ),
        Code.PERMISSION_DENIED,
    )
    # Only the hash is stored, and the start is in A's audit log with its reason.
    stored = await sql(
        stack.admin_url,
        "SELECT token_hash, org_id::text FROM iam.break_glass_sessions WHERE id = %s",
        (started.session_id,),
    )
    assert stored[0][1] == org_a.org_id and started.token not in stored[0][0]
    audit = await stub.ListAuditLogs(
        iam_pb2.ListAuditLogsRequest(action="admin.break_glass.start"),
        metadata=as_role(org_a.org_id, "OWNER"),
    )
    assert started.session_id in {e.break_glass_session_id for e in audit.entries}
    assert {e.break_glass_reason for e in audit.entries} >= {"database incident"}
    audit_b = await stub.ListAuditLogs(
        iam_pb2.ListAuditLogsRequest(), metadata=as_role(org_b.org_id, "OWNER")
    )
    assert list(audit_b.entries) == []


async def test_expired_break_glass_is_refused(stub: Any, stack: Any, make_org: Any) -> None:
    org = await make_org()
    started = await stub.StartBreakGlass(
        iam_pb2.StartBreakGlassRequest(reason="incident", ttl_minutes=10),
        metadata=as_role(org.org_id, "OWNER"),
    )
    await sql(
        stack.admin_url,
        "UPDATE iam.break_glass_sessions SET expires_at = now() - interval '1 second' WHERE id = %s",
        (started.session_id,),
    )
    error = await rpc_error(
        stub.VerifyBreakGlass(
            iam_pb2.VerifyBreakGlassRequest(token=started.token), metadata=as_role(org.org_id, "OWNER")
        ),
        Code.PERMISSION_DENIED,
    )
    assert error.reason == "break_glass_invalid"


# --- portal tokens --------------------------------------------------------------------------


async def test_client_portal_token_round_trip(stub: Any, make_org: Any) -> None:
    org = await make_org()
    issued = await stub.IssueClientPortalToken(
        iam_pb2.IssueClientPortalTokenRequest(email=" Client@Example.COM ", ttl_minutes=15),
        metadata=as_role(org.org_id, "DISPATCHER"),
    )
    verified = await stub.VerifyClientPortalToken(
        iam_pb2.VerifyClientPortalTokenRequest(token=issued.token), metadata=anonymous()
    )
    assert verified.org_id == org.org_id
    assert verified.email == "client@example.com"
    assert verified.client_id == "client@example.com"
    assert verified.expires_at.seconds == issued.expires_at.seconds


async def test_client_portal_token_tampered_is_unauthenticated(stub: Any, make_org: Any) -> None:
    org, other = await make_org(), await make_org()
    issued = await stub.IssueClientPortalToken(
        iam_pb2.IssueClientPortalTokenRequest(client_id="client-1"), metadata=as_role(org.org_id, "OWNER")
    )
    header, payload, signature = issued.token.split(".")
    moved = jwt.utils.base64url_decode(payload).replace(org.org_id.encode(), other.org_id.encode())
    tampered = f"{header}.{jwt.utils.base64url_encode(moved).decode()}.{signature}"
    for token in (tampered, issued.token[:-3] + "abc", "garbage", ""):
        error = await rpc_error(
            stub.VerifyClientPortalToken(
                iam_pb2.VerifyClientPortalTokenRequest(token=token), metadata=anonymous()
            ),
            Code.UNAUTHENTICATED,
        )
        assert error.reason == "invalid_portal_token"


async def test_worker_and_client_tokens_are_not_interchangeable(stub: Any, make_org: Any) -> None:
    org = await make_org()
    worker_id = str(uuid.uuid4())
    worker = await stub.IssueWorkerPortalToken(
        iam_pb2.IssueWorkerPortalTokenRequest(worker_id=worker_id), metadata=as_role(org.org_id, "ADMIN")
    )
    client = await stub.IssueClientPortalToken(
        iam_pb2.IssueClientPortalTokenRequest(client_id="c-1"), metadata=as_role(org.org_id, "ADMIN")
    )
    verified = await stub.VerifyWorkerPortalToken(
        iam_pb2.VerifyWorkerPortalTokenRequest(token=worker.token), metadata=anonymous()
    )
    assert (verified.org_id, verified.worker_id) == (org.org_id, worker_id)
    await rpc_error(
        stub.VerifyClientPortalToken(
            iam_pb2.VerifyClientPortalTokenRequest(token=worker.token), metadata=anonymous()
        ),
        Code.UNAUTHENTICATED,
    )
    await rpc_error(
        stub.VerifyWorkerPortalToken(
            iam_pb2.VerifyWorkerPortalTokenRequest(token=client.token), metadata=anonymous()
        ),
        Code.UNAUTHENTICATED,
    )


async def test_portal_tokens_need_a_staff_role_and_valid_input(stub: Any, make_org: Any) -> None:
    org = await make_org()
    await rpc_error(
        stub.IssueClientPortalToken(
            iam_pb2.IssueClientPortalTokenRequest(client_id="c"), metadata=as_role(org.org_id, "VIEWER")
        ),
        Code.PERMISSION_DENIED,
    )
    error = await rpc_error(
        stub.IssueClientPortalToken(
            iam_pb2.IssueClientPortalTokenRequest(), metadata=as_role(org.org_id, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["email"]
    error = await rpc_error(
        stub.IssueWorkerPortalToken(
            iam_pb2.IssueWorkerPortalTokenRequest(worker_id="w-1"), metadata=as_role(org.org_id, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["worker_id"]


async def test_worker_portal_token_issue_is_audited(stub: Any, make_org: Any) -> None:
    org = await make_org()
    worker_id = str(uuid.uuid4())
    issued = await stub.IssueWorkerPortalToken(
        iam_pb2.IssueWorkerPortalTokenRequest(worker_id=worker_id, ttl_minutes=30),
        metadata=as_role(org.org_id, "DISPATCHER"),
    )
    audit = await stub.ListAuditLogs(
        iam_pb2.ListAuditLogsRequest(action="iam.worker_portal_link.issue"),
        metadata=as_role(org.org_id, "OWNER"),
    )
    [entry] = audit.entries
    assert (entry.resource_type, entry.resource_id, entry.role) == ("worker", worker_id, "DISPATCHER")
    assert entry.after["expires_at"] == issued.expires_at.seconds


async def _worker_session(stub: Any, org_id: str, worker_id: str) -> str:
    issued = await stub.IssueWorkerPortalToken(
        iam_pb2.IssueWorkerPortalTokenRequest(worker_id=worker_id), metadata=as_role(org_id, "OWNER")
    )
    redeemed = await stub.RedeemPortalLink(
        iam_pb2.RedeemPortalLinkRequest(kind=iam_pb2.PORTAL_KIND_WORKER, link_token=issued.token),
        metadata=anonymous(),
    )
    return str(redeemed.session_token)


async def _worker_session_stands(stub: Any, token: str) -> bool:
    try:
        await stub.CheckPortalSession(
            iam_pb2.CheckPortalSessionRequest(kind=iam_pb2.PORTAL_KIND_WORKER, session_token=token),
            metadata=anonymous(),
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() == Code.UNAUTHENTICATED, error
        return False
    return True


async def test_revoking_a_workers_portal_access_needs_dispatch_roles_and_stays_in_the_callers_org(
    stub: Any, make_org: Any
) -> None:
    """The gateway checks the role and the worker's org first; iam checks again on its own: a context
    without a dispatch role is refused, and another org's context reaches none of this org's rows."""
    org, other = await make_org(), await make_org()
    worker_id = str(uuid.uuid4())
    session = await _worker_session(stub, org.org_id, worker_id)
    request = iam_pb2.RevokeWorkerPortalAccessRequest(worker_id=worker_id)
    for role in ("VIEWER", "FINANCE", "WORKER", "CLIENT"):
        await rpc_error(
            stub.RevokeWorkerPortalAccess(request, metadata=as_role(org.org_id, role)), Code.PERMISSION_DENIED
        )
    await rpc_error(stub.RevokeWorkerPortalAccess(request, metadata=anonymous()), Code.UNAUTHENTICATED)
    error = await rpc_error(
        stub.RevokeWorkerPortalAccess(
            iam_pb2.RevokeWorkerPortalAccessRequest(worker_id="w-1"), metadata=as_role(org.org_id, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )
    assert [v.field for v in error.violations] == ["worker_id"]
    # Another org's admin with this worker's id ends nothing (row-level security: not their rows).
    elsewhere = await stub.RevokeWorkerPortalAccess(request, metadata=as_role(other.org_id, "OWNER"))
    assert (elsewhere.revoked_sessions, elsewhere.revoked_links) == (0, 0)
    assert await _worker_session_stands(stub, session)

    revoked = await stub.RevokeWorkerPortalAccess(request, metadata=as_role(org.org_id, "DISPATCHER"))
    assert (revoked.revoked_sessions, revoked.revoked_links) == (1, 0)
    assert not await _worker_session_stands(stub, session)
    audit = await stub.ListAuditLogs(
        iam_pb2.ListAuditLogsRequest(action="iam.worker_portal_access.revoke"),
        metadata=as_role(org.org_id, "OWNER"),
    )
    [entry] = audit.entries
    assert (entry.resource_type, entry.resource_id, entry.role) == ("worker", worker_id, "DISPATCHER")


# --- no audit rows from callers -------------------------------------------------------------


async def test_no_caller_can_write_audit_rows_through_the_api(
    channel: grpc.aio.Channel, stack: Any, make_org: Any
) -> None:
    """IamService.RecordAudit is gone: it let any staff role, VIEWER included, write audit rows.
    Audit rows come only from the writes themselves (iam's, and other services' events)."""
    service = iam_pb2.DESCRIPTOR.services_by_name["IamService"]
    assert {m.name for m in service.methods if "Audit" in m.name} == {"ListAuditLogs"}
    org = await make_org()
    # What the old RecordAuditRequest carried: field 1, action = "forged.action" (hand-encoded,
    # as a client built against the old descriptor would send it).
    forged = b"\x0a\x0dforged.action"
    record = channel.unary_unary(
        "/cws.iam.v1.IamService/RecordAudit",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    for role in ("VIEWER", "OWNER"):
        await rpc_error(record(forged, metadata=as_role(org.org_id, role)), Code.UNIMPLEMENTED)
    assert await sql(
        stack.admin_url, "SELECT count(*) FROM iam.admin_audit_logs WHERE org_id = %s", (org.org_id,)
    ) == [(0,)]
