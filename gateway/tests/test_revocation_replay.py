"""A gateway that starts trusts its revocation cache only once it has replayed the window (issue 9,
hole 9): a session signed out shortly before the gateway starts is refused from its very first
requests, while the replay is still running (the gateway asks IAM meanwhile), and after it.

The stream holds a few thousand other revocations before the one that matters, so the replay takes
long enough for requests to arrive in the middle of it: a feed called live as soon as it subscribed
answered those with 200."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from cws.iam.v1 import events_pb2

from gateway.revocations import IAM_SESSION_REVOKED
from tools.devstack import NatsServer
from tools.processes import gateway_proc
from tools.testkit import assert_problem, bearer, eventually

DECOYS = 4000


async def publish_decoys(server: NatsServer, org_id: str) -> None:
    """Revocations of sessions nobody holds, published as IAM would (valid SessionRevoked), as iam."""
    connection = await server.connect_as("iam")
    try:
        for _ in range(DECOYS):
            decoy = events_pb2.SessionRevoked(
                org_id=org_id,
                user_id=str(uuid.uuid4()),
                session_ids=[str(uuid.uuid4()) for _ in range(4)],
                reason="test decoy",
            )
            await connection.publish(IAM_SESSION_REVOKED.subject, decoy.SerializeToString())
        await connection.flush()
    finally:
        await connection.close()


async def test_a_session_revoked_before_start_is_refused_from_the_first_request(
    gateways, gateway, http, make_org, stack
):
    org = await make_org()
    login = {"email": org.owner_email, "password": org.owner_password}
    revoked = (await http.post(f"{gateway.url}/v1/auth/login", json=login)).json()
    kept = (await http.post(f"{gateway.url}/v1/auth/login", json=login)).json()
    await publish_decoys(stack.nats, org.org_id)
    out = await http.post(f"{gateway.url}/v1/auth/logout", json={"refresh_token": revoked["refresh_token"]})
    assert out.status_code == 204, out.text
    users = f"{gateway.url}/v1/iam/users"

    async def in_the_stream() -> bool:  # the running gateway has heard it: it is behind the decoys
        assert_problem(await http.get(users, headers=bearer(revoked["access_token"])), 401, "session_revoked")
        return True

    # A precondition, not what is under test: the session gateway works through the 4000 decoys first,
    # which on a loaded 2-core machine has taken more than eventually's default 10 s.
    await eventually(in_the_stream, timeout=60, message="the revocation to reach the stream")

    fresh = gateway_proc(
        gateways.base_env(), stack.work_dir / "logs", label=f"gateway-replay-{uuid.uuid4().hex[:6]}"
    )
    fresh.start()
    answers: list[httpx.Response] = []
    try:
        ready_at: float | None = None
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=5) as client:
            # From the moment the port opens until a second after the gateway is ready.
            while ready_at is None or time.monotonic() < ready_at + 1:
                assert time.monotonic() < deadline, f"the gateway never got ready:\n{fresh.tail()}"
                assert fresh.alive, fresh.tail()
                try:
                    answers.append(
                        await client.get(f"{fresh.url}/v1/iam/users", headers=bearer(revoked["access_token"]))
                    )
                    if ready_at is None and (await client.get(fresh.readyz_url)).status_code == 200:
                        ready_at = time.monotonic()
                except httpx.TransportError:
                    await asyncio.sleep(0.01)
            assert answers, "no request reached the new gateway"
            for answer in answers:
                assert_problem(answer, 401, "session_revoked")
            # Refused for being revoked, not for anything else: another session of the same user works.
            still = await client.get(f"{fresh.url}/v1/iam/users", headers=bearer(kept["access_token"]))
            assert still.status_code == 200, still.text
            events = next(
                c for c in (await client.get(fresh.readyz_url)).json()["checks"] if c["name"] == "events"
            )
            assert events["detail"]["revocation_feed"] is True
    finally:
        fresh.stop()
