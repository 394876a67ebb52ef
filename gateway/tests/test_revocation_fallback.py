"""A revoked session is refused even while NATS (the revocation feed) is down: the gateway then asks
IAM about each session instead of trusting its cache, and goes back to the feed when NATS returns."""

from __future__ import annotations

import asyncio

import httpx


async def wait_status(http: httpx.AsyncClient, url: str, status: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if (await http.get(url)).status_code == status:
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout} s")
        await asyncio.sleep(0.2)


async def test_revoked_session_is_refused_while_nats_is_down(gateway, iam, booking, http, make_org, stack):
    org = await make_org()
    login = {"email": org.owner_email, "password": org.owner_password}
    revoked = (await http.post(f"{gateway.url}/v1/auth/login", json=login)).json()
    kept = (await http.post(f"{gateway.url}/v1/auth/login", json=login)).json()
    stack.nats.stop()
    try:
        await wait_status(http, f"{gateway.url}/readyz", 503)  # the gateway has noticed
        out = await http.post(
            f"{gateway.url}/v1/auth/logout", json={"refresh_token": revoked["refresh_token"]}
        )
        assert out.status_code == 204, out.text
        refused = await http.get(
            f"{gateway.url}/v1/iam/users", headers={"Authorization": f"Bearer {revoked['access_token']}"}
        )
        assert refused.status_code == 401 and refused.json()["type"].endswith("session_revoked"), refused.text
        still = await http.get(
            f"{gateway.url}/v1/iam/users", headers={"Authorization": f"Bearer {kept['access_token']}"}
        )
        assert still.status_code == 200, still.text
    finally:
        stack.nats.start()
        for url in (
            f"http://127.0.0.1:{iam.http_port}/readyz",
            f"http://127.0.0.1:{booking.http_port}/readyz",
            f"{gateway.url}/readyz",
        ):
            await wait_status(http, url, 200)
    events = next(
        c for c in (await http.get(f"{gateway.url}/readyz")).json()["checks"] if c["name"] == "events"
    )
    assert events["detail"]["revocation_feed"] is True  # the cache is fed again, not the fallback
    # Back on the feed: the revocation, published once NATS returned, reaches the cache again.
    for _ in range(50):
        refused = await http.get(
            f"{gateway.url}/v1/iam/users", headers={"Authorization": f"Bearer {revoked['access_token']}"}
        )
        if refused.status_code == 401:
            break
        await asyncio.sleep(0.1)
    assert refused.status_code == 401, refused.text
