"""What the HTTP-layer tests share: what every error answer must look like, and signing in."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

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
    """A new user with `role` in the owner's org, signed in with the temporary password."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    created = await http.post(
        f"{url}/v1/iam/users", headers=owner_headers, json={"email": email, "role": role}
    )
    assert created.status_code == 201, created.text
    return await sign_in(http, url, email, created.json()["temp_password"])
