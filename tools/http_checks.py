"""Assertions the HTTP-layer tests share: what every error answer must look like."""

from __future__ import annotations

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
