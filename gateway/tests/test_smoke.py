from __future__ import annotations


async def test_health_and_login(gateway, http, make_org):
    org = await make_org()
    r = await http.get(f"{gateway.url}/healthz")
    assert r.json() == {"status": "ok"}
    r = await http.post(
        f"{gateway.url}/v1/auth/login", json={"email": org.owner_email, "password": org.owner_password}
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = await http.get(f"{gateway.url}/v1/iam/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 1
    r = await http.get(f"{gateway.url}/readyz")
    assert r.status_code == 200, r.text
