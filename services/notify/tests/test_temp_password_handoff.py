"""A temporary password never stays where it does not belong (issue 9): with EMAIL_TEMP_PASSWORDS=true
on iam and notify, an admin creates a user and resets them; both emails carry the password; once
they are delivered, no table of iam (event_outbox payloads included) or notify, nor any message of
the iam stream, holds either password. And only notify may claim one.

A world of its own (database, nats-server, iam, notify, gateway): the session's notify runs without
EMAIL_TEMP_PASSWORDS and would claim the passwords from a shared stream first, and the whole of the
database and the stream is scanned, which only a world of the test's own keeps small."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from psycopg import sql as pgsql

from libs.common.bus import stream_name
from libs.common.migrate import migrate
from tools.devstack import NatsServer, drop_database, ensure_database, free_port, with_user
from tools.iam_seed import cheap_password_hashing, create_org, hold_temp_password, iam_database
from tools.processes import DEV_SECRETS, GatewayProc, ServiceProc, gateway_proc, service_proc
from tools.testkit import as_role, as_service, eventually, rpc_error, sign_in, signing_channel, sql

APP_ROLE = "cws_app"


@dataclass
class World:
    admin_url: str
    app_url: str
    nats: NatsServer
    iam: ServiceProc
    notify: ServiceProc
    gateway: GatewayProc


@pytest.fixture
async def world(stack: Any, smtp_sink: Any) -> AsyncIterator[World]:
    name = f"{stack.admin_url.rsplit('/', 1)[1]}_handoff_{secrets.token_hex(2)}"
    admin_url = ensure_database(stack.admin_url, name)
    migrate(admin_url, APP_ROLE, None)
    nats_server = NatsServer(stack.work_dir / f"nats-handoff-{secrets.token_hex(2)}" / "js").start()
    nats_server.provision_streams()
    env = {
        **stack.env(),
        "DATABASE_URL": with_user(admin_url, APP_ROLE),
        "MIGRATIONS_DATABASE_URL": admin_url,
        "NATS_URL": nats_server.url,
        **nats_server.password_env(),
        "EMAIL_TEMP_PASSWORDS": "true",
    }
    logs = stack.work_dir / "logs"
    iam = service_proc("iam", env, logs, label="iam-handoff").start()
    notify = service_proc(
        "notify",
        {
            **env,
            "IAM_GRPC_TARGET": iam.target,
            "BOOKING_GRPC_TARGET": f"127.0.0.1:{free_port()}",
            "EMAIL_MODE": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_sink.port),
            "EMAIL_FROM": "accounts@cws.test",
            "OUTBOX_POLL_SECONDS": "0.2",
        },
        logs,
        label="notify-handoff",
    ).start()
    gateway = gateway_proc(
        {
            **env,
            "IAM_GRPC_TARGET": iam.target,
            "NOTIFY_GRPC_TARGET": notify.target,
            "BOOKING_GRPC_TARGET": f"127.0.0.1:{free_port()}",
            "JOBS_GRPC_TARGET": f"127.0.0.1:{free_port()}",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "LOGIN_RATE_LIMIT_PER_MINUTE": "100000",
        },
        logs,
        label="gateway-handoff",
    ).start()
    try:
        for proc in (iam, notify, gateway):
            await proc.wait_ready_async()
        yield World(admin_url, with_user(admin_url, APP_ROLE), nats_server, iam, notify, gateway)
    finally:
        for proc in (gateway, notify, iam):
            proc.stop()
        nats_server.stop()
        drop_database(stack.admin_url, name)


async def rows_holding(admin_url: str, schema: str, secret: str) -> list[str]:
    """Every row of every table of `schema` (superuser: RLS does not hide any) in which `secret`
    appears, in any column, text or bytes."""
    found = []
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        tables = await (
            await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE'",
                (schema,),
            )
        ).fetchall()
        for (table,) in tables:
            query = pgsql.SQL("SELECT * FROM {}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(table))
            for row in await (await conn.execute(query)).fetchall():
                for value in row:
                    raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                    if secret.encode() in raw:
                        found.append(f"{schema}.{table}: {row!r}")
    return found


async def stream_holding(server: NatsServer, secret: str) -> tuple[int, list[int]]:
    """(messages read, sequences of those holding `secret`) in the iam stream, read as the NATS admin."""
    client = await server.connect_as("admin")
    try:
        js = client.jetstream()
        info = await js.stream_info(stream_name("iam"))
        holding, read = [], 0
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream_name("iam"), seq)
            read += 1
            if secret.encode() in (message.data or b"") or secret.encode() in repr(message.headers).encode():
                holding.append(seq)
        return read, holding
    finally:
        await client.close()


async def test_a_temporary_password_leaves_no_copy_once_emailed(world: World, smtp_sink: Any) -> None:
    owner_email = f"owner-{uuid.uuid4().hex[:10]}@example.com"
    owner_password = "Owner-password-" + secrets.token_hex(6)
    cheap_password_hashing()
    iam_db = iam_database(world.app_url)
    try:
        await create_org(iam_db, name="Handoff Org", email=owner_email, password=owner_password)
    finally:
        await iam_db.dispose()
    async with httpx.AsyncClient(timeout=15) as http:
        headers = await sign_in(http, world.gateway.url, owner_email, owner_password)
        address = f"staff-{uuid.uuid4().hex[:10]}@example.com"
        created = await http.post(
            f"{world.gateway.url}/v1/iam/users",
            headers=headers,
            json={"email": address, "role": "DISPATCHER"},
        )
        assert created.status_code == 201, created.text
        first = created.json()["temp_password"]
        # One at a time: a reset replaces the password still waiting (the one that works is emailed).
        await smtp_sink.delivered(address, 1, timeout=30)
        reset = await http.post(
            f"{world.gateway.url}/v1/iam/users/{created.json()['user']['id']}/reset-password", headers=headers
        )
        assert reset.status_code == 200, reset.text
        second = reset.json()["temp_password"]

    # Both emails carry their password: the hand-off worked.
    messages = await smtp_sink.delivered(address, 2, timeout=30)
    texts = " ".join(m.text for m in messages)
    assert first in texts and second in texts

    async def redacted() -> bool:
        return not await rows_holding(world.admin_url, "notify", first) and not await rows_holding(
            world.admin_url, "notify", second
        )

    # notify blanks a sent email's text once the provider has it (redact_after_send).
    await eventually(redacted, timeout=15, message="notify's copies redacted after delivery")
    # Claimed means gone, not merely encrypted: the hand-off table is empty again.
    async with await psycopg.AsyncConnection.connect(world.admin_url, autocommit=True) as conn:
        waiting = await (await conn.execute("SELECT count(*) FROM iam.temp_password_handoffs")).fetchone()
    assert waiting == (0,)
    for password in (first, second):
        assert await rows_holding(world.admin_url, "iam", password) == []
        read, holding = await stream_holding(world.nats, password)
        assert read > 0 and holding == [], (read, holding)


async def test_only_notify_may_claim_a_temporary_password(iam: Any, make_org: Any) -> None:
    """The claim hands over a credential: the gateway (any user, an OWNER included) and every other
    suite service are refused; notify, signing with its own key, gets an answer (nothing waits here)."""
    org = await make_org()
    request = iam_pb2.ClaimTemporaryPasswordRequest(user_id=org.owner_id)
    async with signing_channel(iam.target) as opened:
        stub = iam_pb2_grpc.IamServiceStub(opened)
        for metadata in (as_role(org.org_id, "OWNER"), as_service(org.org_id, "jobs")):
            refused = await rpc_error(
                stub.ClaimTemporaryPassword(request, metadata=metadata), grpc.StatusCode.PERMISSION_DENIED
            )
            assert refused.reason == "service_only"
        answer = await stub.ClaimTemporaryPassword(request, metadata=as_service(org.org_id, "notify"))
        assert answer.found is False and answer.temp_password == ""


async def test_an_expired_temporary_password_is_not_handed_over_and_is_gone(
    iam: Any, make_org: Any, stack: Any
) -> None:
    """Past AUTH_TEMP_PASSWORD_TTL_MINUTES the password works no more, so notify must not email it:
    the claim answers nothing, and deletes the dead row all the same."""
    org = await make_org()
    db = iam_database(stack.app_url)
    try:
        await hold_temp_password(
            db,
            org_id=org.org_id,
            user_id=org.owner_id,
            password="Expired-password-" + secrets.token_hex(4),
            auth_secret=DEV_SECRETS["AUTH_SECRET_KEY"],
            ttl=timedelta(minutes=-1),
        )
    finally:
        await db.dispose()
    waiting = "SELECT count(*) FROM iam.temp_password_handoffs WHERE user_id = %s"
    assert await sql(stack.admin_url, waiting, (org.owner_id,)) == [(1,)]
    async with signing_channel(iam.target) as opened:
        answer = await iam_pb2_grpc.IamServiceStub(opened).ClaimTemporaryPassword(
            iam_pb2.ClaimTemporaryPasswordRequest(user_id=org.owner_id),
            metadata=as_service(org.org_id, "notify"),
        )
    assert answer.found is False and answer.temp_password == ""
    assert await sql(stack.admin_url, waiting, (org.owner_id,)) == [(0,)]
