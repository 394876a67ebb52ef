"""A revoked session is refused even while NATS (the revocation feed) is down: the gateway then asks
IAM about each session instead of trusting its cache, and goes back to the feed when NATS returns."""

from __future__ import annotations

import httpx

from tools.testkit import bearer, eventually


async def wait_status(http: httpx.AsyncClient, url: str, status: int, timeout: float = 30) -> None:
    async def answers() -> bool:
        try:
            return (await http.get(url)).status_code == status
        except httpx.TransportError:
            return False

    await eventually(answers, timeout=timeout, interval=0.2, message=f"{url} answering {status}")


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

    async def refused_by_the_cache() -> bool:
        refused = await http.get(f"{gateway.url}/v1/iam/users", headers=bearer(revoked["access_token"]))
        assert refused.status_code == 401, refused.text
        return True

    await eventually(refused_by_the_cache, timeout=5, message="the replayed revocation applied")
