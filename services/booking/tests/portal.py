"""Signing in to the client and worker portals as a browser or a JSON client would, for the portal
tests: a link (emailed, or minted by an admin) opens a page; the page's POST opens the session."""

from __future__ import annotations

import uuid
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

CONFIRM = {"client": "/client/login/confirm", "worker": "/worker/login/confirm"}
COOKIE = {"client": "client_session", "worker": "worker_session"}


async def magic_link(http: httpx.AsyncClient, url: str, email: str, headers: dict[str, str]) -> str:
    """A client's magic link, from a gateway whose IAM hands it out (CLIENT_MAGIC_LINK_IN_RESPONSE)."""
    response = await http.post(f"{url}/client/login/request", json={"email": email}, headers=headers)
    assert response.status_code == 202, response.text
    link = response.json()["magic_link"]
    assert link.startswith("/client/login/callback?token=")
    return str(link)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def set_cookie(response: httpx.Response, name: str) -> Any:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar[name]


async def confirm(
    http: httpx.AsyncClient, url: str, kind: str, link_token: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """What the callback page's button does: the token, in a form body, to the confirm route."""
    return await http.post(f"{url}{CONFIRM[kind]}", data={"token": link_token}, headers=headers or {})


async def follow(http: httpx.AsyncClient, url: str, kind: str, link: str) -> httpx.Response:
    """A browser following the link: the page (which signs nobody in), then its button."""
    page = await http.get(url + link)
    assert page.status_code == 200, page.text
    assert "set-cookie" not in page.headers
    signed_in = await confirm(http, url, kind, token_of(link))
    http.cookies.clear()  # callers choose how to present the session
    return signed_in


async def session_of(http: httpx.AsyncClient, url: str, kind: str, link: str) -> str:
    """The session token a link opens (the cookie's value, also the bearer token)."""
    signed_in = await follow(http, url, kind, link)
    assert signed_in.status_code == 200, signed_in.text
    return str(set_cookie(signed_in, COOKIE[kind]).value)


async def client_session(http: httpx.AsyncClient, url: str, org_id: str, email: str) -> str:
    return await session_of(http, url, "client", await magic_link(http, url, email, {"X-Test-Org": org_id}))


async def worker_link(http: httpx.AsyncClient, url: str, staff: dict[str, str], worker_id: str) -> str:
    issued = await http.post(f"{url}/v1/admin/workers/{worker_id}/portal-link", headers=staff)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["link"] == f"/worker/login/callback?token={body['token']}" and body["expires_at"]
    return str(body["link"])


async def worker_session(http: httpx.AsyncClient, url: str, staff: dict[str, str], worker_id: str) -> str:
    return await session_of(http, url, "worker", await worker_link(http, url, staff, worker_id))


def add_worker(stack: Any, org_id: str, name: str) -> str:
    worker_id = str(uuid.uuid4())
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO booking.workers (id, org_id, name) VALUES (%s, %s, %s)", (worker_id, org_id, name)
        )
    return worker_id


def assign(stack: Any, org_id: str, booking: dict[str, Any], worker_id: str) -> None:
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO booking.schedule_blocks (id, org_id, kind, booking_id, worker_id, period) "
            "VALUES (gen_random_uuid(), %s, 'booking', %s, %s, tstzrange(%s::timestamptz, %s::timestamptz, '[)'))",
            (org_id, booking["id"], worker_id, booking["starts_at"], booking["ends_at"]),
        )
