"""Test support shared by every test folder: Problem+JSON checks and signing in at the gateway,
signed contexts for calling a service over gRPC directly, SQL access, and waiting on what happens
asynchronously.

`eventually` polls a check until it holds or a deadline passes, so a test waits exactly as long as
the system needs and fails with the last thing it saw. That something did NOT happen is not a thing
to wait for: wait instead for a later event that proves the system got past the point where it
would have happened. No test sleeps a fixed time to hope."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import httpx
import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from sqlalchemy import event

from libs.common import call_signing
from libs.common import context as request_context
from libs.common import status as rich_status
from libs.common.db import unit_of_work
from libs.common.grpc_client import open_channel
from libs.common.internal_keys import CallSigner
from libs.common.settings import sqlalchemy_url
from tools.processes import DEV_KEYRING

T = TypeVar("T")


# --- Problem+JSON and signing in at the gateway ----------------------------------------------

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}


def assert_clean(response: httpx.Response) -> None:
    """No stack trace or SQL ever reaches a client."""
    body = response.text
    assert "Traceback" not in body, body
    assert "sqlalchemy" not in body.lower(), body


def assert_problem(response: httpx.Response, status: int, type_suffix: str | None = None) -> dict[str, Any]:
    """An RFC 9457 Problem+JSON answer with `status`, tied to the request by its id."""
    assert_clean(response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["request_id"] and body["request_id"] == response.headers["x-request-id"], body
    if type_suffix is not None:
        assert body["type"].endswith(type_suffix), body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sign_in(http: httpx.AsyncClient, url: str, email: str, password: str) -> dict[str, str]:
    """Log in at the gateway; the bearer header of the new session."""
    response = await http.post(f"{url}/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


async def owner(http: httpx.AsyncClient, url: str, org: Any) -> dict[str, str]:
    """Signed in as the owner of a test org (conftest's make_org)."""
    return await sign_in(http, url, org.owner_email, org.owner_password)


async def staff(
    http: httpx.AsyncClient, url: str, owner_headers: dict[str, str], role: str
) -> dict[str, str]:
    """A new user with `role` in the owner's org, signed in after changing the temporary password
    (until then a token opens nothing but the password change: issue 9)."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    created = await http.post(
        f"{url}/v1/iam/users", headers=owner_headers, json={"email": email, "role": role}
    )
    assert created.status_code == 201, created.text
    return await first_sign_in(http, url, email, created.json()["temp_password"])


async def first_sign_in(http: httpx.AsyncClient, url: str, email: str, temp_password: str) -> dict[str, str]:
    """Sign in with a temporary password as a new user must: change it, then sign in with the new one.
    The bearer header of that session."""
    marked = await sign_in(http, url, email, temp_password)
    chosen = "Chosen-password-" + uuid.uuid4().hex[:10]
    changed = await http.post(
        f"{url}/v1/auth/change-password",
        headers=marked,
        json={"current_password": temp_password, "new_password": chosen},
    )
    assert changed.status_code == 204, changed.text
    return await sign_in(http, url, email, chosen)


# --- signed contexts for gRPC calls ------------------------------------------------------------
# A service accepts a call only signed for its method and its request (libs/common/call_signing.py), so
# the helpers below cannot sign by themselves: they name the context and who signs it, and
# `signing_channel()`
# signs each call as it is sent, as the suite's own SigningInterceptor does. Call services directly
# through `signing_channel(target)`; over a plain channel such metadata carries no signature and is refused.

KEYRING = DEV_KEYRING  # the keys this test session's processes were started with
GATEWAY = KEYRING.signer("gateway")
JWT = request_context.AuthMethod.Value("AUTH_METHOD_JWT")
Metadata = tuple[tuple[str, Any], ...]
# Test-only metadata, read and removed by signing_channel()'s interceptor: which signer signs the call.
SIGN_AS = "x-test-sign-as"
_signers: dict[str, CallSigner] = {}


def signed(ctx: request_context.RequestContext, signer: CallSigner | None = None) -> Metadata:
    """Any context, to be signed by `signer` (the gateway's key by default) for whatever call it is
    sent with, through `signing_channel()`."""
    chosen = signer or GATEWAY
    handle = f"{chosen.name}/{chosen.public_text}"
    _signers.setdefault(handle, chosen)
    return ((call_signing.CONTEXT_KEY, ctx.SerializeToString()), (SIGN_AS, handle))


def as_role(org_id: str, role: str) -> Metadata:
    """A signed-in staff member of `org_id` with `role`, a fresh principal and session each call."""
    ctx = request_context.RequestContext(
        org_id=org_id,
        principal_id=str(uuid.uuid4()),
        role=role,
        auth_method=JWT,  # type: ignore[arg-type]
        request_id=f"test-{uuid.uuid4().hex[:12]}",
        session_id=str(uuid.uuid4()),
    )
    return signed(ctx)


def as_service(org_id: str, service: str = "jobs") -> Metadata:
    """A suite service acting on its own in `org_id` (AUTH_METHOD_SERVICE), signed with its own key."""
    return signed(request_context.service_context(service, org_id), KEYRING.signer(service))


class _SignForTest(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Turns the metadata of `signed`/`as_role`/`as_service` into a signature over this call's method
    and request; metadata without the marker (a test's hand-built attack) passes untouched."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        items = list(details.metadata or ())
        marked = dict(items)
        handle = marked.get(SIGN_AS)
        if handle is not None:
            ctx = request_context.RequestContext.FromString(marked[call_signing.CONTEXT_KEY])
            method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
            items = [(k, v) for k, v in items if k not in (SIGN_AS, call_signing.CONTEXT_KEY)]
            # A test may send raw bytes (a generic unary_unary with no serializer): sign those as sent.
            body = request if isinstance(request, bytes) else request.SerializeToString()
            items += call_signing.sign_call(ctx, _signers[handle], method, body)
        details = grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=grpc.aio.Metadata(*items),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )
        return await continuation(details, request)


def signing_channel(target: str) -> grpc.aio.Channel:
    """A channel to a service for a test: what `signed`/`as_role`/`as_service` name is signed per call.
    Use it as `async with signing_channel(target) as channel:` or close it yourself."""
    return open_channel(target, [_SignForTest()])


async def rpc_error(call: Awaitable[Any], code: grpc.StatusCode) -> rich_status.DecodedError:
    """Await a gRPC call that must fail with `code`; its decoded rich status (reason, violations)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, f"{raised.value.code()}: {raised.value.details()}"
    return rich_status.decode(raised.value)


# --- SQL and waiting ---------------------------------------------------------------------------


async def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement on a direct connection (autocommit): for what a test must see or set behind a
    service's back (a row's state, a clock moved). Superuser URLs bypass RLS: say why in the test."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def eventually(
    check: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Call `check` until it returns a truthy value (returned) or stops raising AssertionError;
    after `timeout` seconds, fail with the last value or assertion seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except AssertionError as error:
            last = error
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message or 'condition'} not met within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


# --- is it up -------------------------------------------------------------------------------------


async def ready(url: str) -> bool:
    """Whether `url` (a /readyz) answers 200 now; a process that is away is not ready, not an error.
    Wait for it with `await eventually(lambda: ready(proc.readyz_url))`."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def grpc_serving(target: str) -> bool:
    """Whether the standard gRPC health service at `target` says SERVING now."""
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
    except grpc.aio.AioRpcError:
        return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def schema_drift(admin_url: str, schema: str, metadata: Any) -> list[Any]:
    """What differs between a service's declared tables (models.py `metadata`) and what its migrations
    made in `schema` (Alembic's autogenerate comparison): empty when the two agree."""
    engine = sa.create_engine(sqlalchemy_url(admin_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    # Alembic's own version table lives in the schema and in no model.
                    "include_name": lambda name, kind, _: (
                        (kind != "schema" or name == schema)
                        and not (kind == "table" and name == "alembic_version")
                    ),
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def basic(username: str, password: str) -> dict[str, str]:
    """The Authorization header of an HTTP Basic Auth pair (the scheduler's and operators' logins)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def jpeg_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A real JPEG, made by Pillow."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "JPEG", quality=85)
    return out.getvalue()


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _plan_nodes(child)
    return found


async def explained(db: Any, org_id: str, call: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """Run `call(uow)` as a service does (a unit of work in the org's context, as the runtime role);
    return (sql, plan nodes) of each SELECT it ran, explained (ANALYZE) in the same transaction."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "set_config" not in statement:
            statements.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with unit_of_work(db, org_id) as uow:
            await call(uow)
            event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
            connection = await uow.session.connection()
            plans = []
            for statement, parameters in statements:
                result = await connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
                )
                document = result.scalar_one()
                plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
                plans.append((statement, _plan_nodes(plan)))
    finally:
        if event.contains(db.engine.sync_engine, "before_cursor_execute", capture):
            event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    return plans
