"""Client magic-link requests in IAM: what is recorded, when a token is handed back, and the prod rule
for CLIENT_MAGIC_LINK_IN_RESPONSE. (The HTTP flow is tested at the gateway, with booking.)"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from libs.common.db import Database, unit_of_work
from libs.common.errors import InvalidArgument
from services.iam import client_login, portal_tokens
from services.iam.events import IAM_CLIENT_LOGIN_REQUESTED
from services.iam.models import SCHEMA, event_tables
from services.iam.settings import IamSettings
from tools.processes import DEV_KEYRING
from tools.testkit import sql

SECRET_FIELDS = ("auth_secret_key", "client_portal_secret", "worker_portal_secret")


def settings(**values: Any) -> IamSettings:
    return IamSettings(_env_file=None, **values)  # type: ignore[call-arg]


def prod(**values: Any) -> IamSettings:
    strong = {name: secrets.token_urlsafe(32) for name in SECRET_FIELDS}
    trusted = DEV_KEYRING.trusted_keys("iam")
    return settings(app_env="prod", metrics_token="m" * 24, internal_trusted_keys=trusted, **strong, **values)


def test_magic_link_in_response_is_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIENT_MAGIC_LINK_IN_RESPONSE", raising=False)
    assert not prod().client_magic_link_in_response
    with pytest.raises(ValidationError, match="CLIENT_MAGIC_LINK_IN_RESPONSE"):
        prod(client_magic_link_in_response=True)
    assert settings(app_env="test", client_magic_link_in_response=True).client_magic_link_in_response


def test_a_password_hash_cost_below_owasps_minimum_is_refused_in_prod() -> None:
    assert prod().password_hash_memory_kib == 65536  # argon2-cffi's default, RFC 9106 low-memory
    with pytest.raises(ValidationError, match="PASSWORD_HASH_MEMORY_KIB"):
        prod(password_hash_memory_kib=1024)
    with pytest.raises(ValidationError, match="PASSWORD_HASH_TIME_COST"):
        prod(password_hash_time_cost=1)
    assert prod(password_hash_memory_kib=19 * 1024, password_hash_time_cost=2).password_hash_time_cost == 2
    assert settings(app_env="test", password_hash_memory_kib=1024).password_hash_memory_kib == 1024


async def outbox(stack: Any, org_id: str) -> list[tuple[str, bytes]]:
    rows = await sql(
        stack.admin_url,
        "SELECT subject, payload FROM iam.event_outbox WHERE org_id = %s AND subject LIKE %s ORDER BY created_at",
        (org_id, "cws.iam.client_login.%"),
    )
    return [(r[0], bytes(r[1])) for r in rows]


@pytest.fixture
async def db(stack: Any) -> Any:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=1)
    yield database
    await database.dispose()


async def test_request_records_an_event_and_returns_no_token_by_default(db, make_org, stack):
    org = await make_org()
    async with unit_of_work(db, org.org_id) as uow:
        requested = await client_login.request_login(uow, settings(app_env="test"), " Pat@Example.COM ")
    assert requested == client_login.LoginRequested()
    [(subject, payload)] = await outbox(stack, org.org_id)
    assert subject == IAM_CLIENT_LOGIN_REQUESTED.subject
    event = IAM_CLIENT_LOGIN_REQUESTED.decode(payload)
    assert (event.org_id, event.email) == (org.org_id, "pat@example.com")


async def test_token_only_with_the_dev_switch_and_only_for_a_real_org(db, make_org, stack):
    org = await make_org()
    switched = settings(
        app_env="test", client_magic_link_in_response=True, client_portal_secret=secrets.token_urlsafe(32)
    )
    async with unit_of_work(db, org.org_id) as uow:
        requested = await client_login.request_login(uow, switched, "pat@example.com")
    claims = portal_tokens.verify(portal_tokens.CLIENT, switched.client_portal_secret, requested.token)
    assert (claims.org_id, claims.email, claims.expires_at) == (
        org.org_id,
        "pat@example.com",
        requested.expires_at,
    )

    nowhere = str(uuid.uuid4())
    async with unit_of_work(db, nowhere) as uow:
        assert (
            await client_login.request_login(uow, switched, "pat@example.com")
            == client_login.LoginRequested()
        )
    assert await outbox(stack, nowhere) == []


async def test_malformed_email_is_invalid(db, make_org):
    org = await make_org()
    with pytest.raises(InvalidArgument):
        async with unit_of_work(db, org.org_id) as uow:
            await client_login.request_login(uow, settings(app_env="test"), "not-an-email")
