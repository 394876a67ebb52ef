"""What the integrations tests share: a fixed signed-in user (a state is bound to one), the stub, the
consent at a fake provider, and reading a connection's row behind the service's back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cws.common.v1.context_pb2 import RequestContext
from cws.integrations.v1 import integrations_pb2 as pb
from cws.integrations.v1 import integrations_pb2_grpc

from libs.common import context as request_context
from tools import testkit

JWT = request_context.AuthMethod.Value("AUTH_METHOD_JWT")


@dataclass(frozen=True)
class User:
    org_id: str
    user_id: str
    role: str = "OWNER"

    def md(self) -> testkit.Metadata:
        """This user's signed context (the same principal on every call, a fresh request id)."""
        return testkit.signed(
            RequestContext(
                org_id=self.org_id,
                principal_id=self.user_id,
                role=self.role,
                auth_method=JWT,  # type: ignore[arg-type]
                request_id=f"test-{uuid.uuid4().hex[:12]}",
                session_id=str(uuid.uuid4()),
            )
        )


def owner_of(org: Any) -> User:
    return User(org.org_id, org.owner_id, "OWNER")


def stub(channel: Any) -> integrations_pb2_grpc.IntegrationsServiceStub:
    return integrations_pb2_grpc.IntegrationsServiceStub(channel)


async def consent(authorization_url: str, *, deny: bool = False) -> dict[str, str]:
    """The user at the provider's consent page pressing Allow (or Deny): the redirect's query."""
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(authorization_url)
        assert page.status_code == 200, page.text
        assert "Allow" in page.text
        answer = await http.post(authorization_url, data={"decision": "deny" if deny else "allow"})
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def connect(grpc_stub: Any, user: User, provider: str = "google_calendar") -> pb.Integration:
    started = await grpc_stub.StartConnect(pb.StartConnectRequest(provider=provider), metadata=user.md())
    back = await consent(started.authorization_url)
    done = await grpc_stub.CompleteConnect(
        pb.CompleteConnectRequest(state=back["state"], code=back["code"], realm_id=back.get("realmId", "")),
        metadata=user.md(),
    )
    return done.integration


async def integration(grpc_stub: Any, user: User, provider: str) -> pb.Integration:
    listed = await grpc_stub.ListIntegrations(pb.ListIntegrationsRequest(), metadata=user.md())
    return next(i for i in listed.integrations if i.provider == provider)


async def connection_row(admin_url: str, org_id: str, provider: str) -> tuple[Any, ...] | None:
    """(status, access_token_sealed, refresh_token_sealed, token_expires_at, account_id): read as the
    superuser, which RLS does not bind, to see what is stored."""
    rows = await testkit.sql(
        admin_url,
        "SELECT status, access_token_sealed, refresh_token_sealed, token_expires_at, account_id "
        "FROM integrations.connections WHERE org_id = %s AND provider = %s",
        (org_id, provider),
    )
    return rows[0] if rows else None
