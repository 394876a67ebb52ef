"""The consent round trip through the service's gRPC against the fake Google / Intuit OAuth servers:
PKCE S256, a state bound to the user and org who started it, used once, within its lifetime."""

from __future__ import annotations

import base64
import uuid
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
from cws.integrations.v1 import integrations_pb2 as pb

from conftest import INTEGRATIONS_CLIENT_ID, INTEGRATIONS_CLIENT_SECRET, INTEGRATIONS_TEST_TOKEN_KEY
from services.integrations.crypto import VERIFIER, TokenBox
from services.integrations.tests.helpers import (
    User,
    connect,
    connection_row,
    consent,
    integration,
    owner_of,
    stub,
)
from tools import testkit
from tools.fake_oauth import s256


async def test_an_owner_connects_google_with_pkce_and_the_tokens_are_stored_sealed(
    integrations, fake_google, make_org, stack
):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        started = await api.StartConnect(
            pb.StartConnectRequest(provider="google_calendar"), metadata=user.md()
        )
        url = urlsplit(started.authorization_url)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert started.authorization_url.startswith(f"{fake_google.base_url}/oauth/authorize?")
        assert query["client_id"] == INTEGRATIONS_CLIENT_ID
        assert query["code_challenge_method"] == "S256"
        assert query["access_type"] == "offline" and query["prompt"] == "consent"
        assert query["scope"] == "https://www.googleapis.com/auth/calendar"
        assert len(query["state"]) >= 40

        # The verifier kept here (sealed for this org) is the one the challenge was made from.
        [(sealed,)] = await testkit.sql(
            stack.admin_url,
            "SELECT code_verifier_sealed FROM integrations.oauth_states WHERE org_id = %s",
            (org.org_id,),
        )
        box = TokenBox((base64.b64decode(INTEGRATIONS_TEST_TOKEN_KEY),))
        verifier = box.open(bytes(sealed), org.org_id, "google_calendar", VERIFIER)
        assert s256(verifier) == query["code_challenge"]

        back = await consent(started.authorization_url)
        assert back["state"] == query["state"]
        done = await api.CompleteConnect(
            pb.CompleteConnectRequest(state=back["state"], code=back["code"]), metadata=user.md()
        )
        assert done.integration.status == "connected"
        assert done.integration.connected_by == org.owner_id
        assert done.integration.account_id == ""  # the calendar is chosen next

        shown = await integration(api, User(org.org_id, str(uuid.uuid4()), "VIEWER"), "google_calendar")
        assert shown.status == "connected" and shown.configured

    status, access, refresh, expires_at, _ = await connection_row(
        stack.admin_url, org.org_id, "google_calendar"
    )
    assert status == "connected" and expires_at is not None
    assert b"at-" not in bytes(access) and b"rt-" not in bytes(refresh)  # the fake's tokens, never in clear


async def test_the_fake_checks_the_pkce_verifier(fake_google):
    """The code only turns into tokens with the verifier its challenge was made from (what makes the
    flow above prove we send the right one)."""
    verifier = "v" * 64
    query = {
        "response_type": "code",
        "client_id": INTEGRATIONS_CLIENT_ID,
        "redirect_uri": "https://console.cws.test/cb",
        "state": "s",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    url = str(httpx.URL(f"{fake_google.base_url}/oauth/authorize", params=query))
    back = await consent(url)
    form = {"grant_type": "authorization_code", "code": back["code"], "redirect_uri": query["redirect_uri"]}
    async with httpx.AsyncClient(timeout=10) as http:
        auth = (INTEGRATIONS_CLIENT_ID, INTEGRATIONS_CLIENT_SECRET)
        wrong = await http.post(
            f"{fake_google.base_url}/oauth/token", data={**form, "code_verifier": "w" * 64}, auth=auth
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        missing = await http.post(f"{fake_google.base_url}/oauth/token", data=form, auth=auth)
        assert missing.status_code == 400
        right = await http.post(
            f"{fake_google.base_url}/oauth/token", data={**form, "code_verifier": verifier}, auth=auth
        )
        assert right.status_code == 200 and right.json()["refresh_token"]


async def test_the_state_is_bound_to_the_user_and_org_that_started_it(integrations, make_org):
    org, other_org = await make_org(), await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        started = await api.StartConnect(
            pb.StartConnectRequest(provider="google_calendar"), metadata=user.md()
        )
        back = await consent(started.authorization_url)
        request = pb.CompleteConnectRequest(state=back["state"], code=back["code"])

        colleague = User(org.org_id, str(uuid.uuid4()), "ADMIN")
        error = await testkit.rpc_error(
            api.CompleteConnect(request, metadata=colleague.md()), grpc.StatusCode.PERMISSION_DENIED
        )
        assert error.reason == "oauth_state_other_user"
        assert "another user" in error.detail

        # Another org's owner (even one who got hold of the state) finds no such sign-in in its org.
        error = await testkit.rpc_error(
            api.CompleteConnect(request, metadata=owner_of(other_org).md()), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert error.reason == "oauth_state_unknown"
        assert (await integration(api, owner_of(other_org), "google_calendar")).status == "disconnected"

        # Those refusals did not use the state up: the user who started it completes it.
        done = await api.CompleteConnect(request, metadata=user.md())
        assert done.integration.status == "connected"

        # ...once.
        error = await testkit.rpc_error(
            api.CompleteConnect(request, metadata=user.md()), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert error.reason == "oauth_state_used"


async def test_an_expired_state_is_refused(integrations, make_org, stack):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        started = await api.StartConnect(
            pb.StartConnectRequest(provider="google_calendar"), metadata=user.md()
        )
        back = await consent(started.authorization_url)
        # Ten minutes pass (the state's lifetime), moved behind the service's back.
        await testkit.sql(
            stack.admin_url,
            "UPDATE integrations.oauth_states SET expires_at = now() - interval '1 second' WHERE org_id = %s",
            (org.org_id,),
        )
        error = await testkit.rpc_error(
            api.CompleteConnect(
                pb.CompleteConnectRequest(state=back["state"], code=back["code"]), metadata=user.md()
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert error.reason == "oauth_state_expired"
        assert (await integration(api, user, "google_calendar")).status == "disconnected"


async def test_access_denied_at_the_provider_is_a_clear_refusal(integrations, make_org):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        started = await api.StartConnect(
            pb.StartConnectRequest(provider="google_calendar"), metadata=user.md()
        )
        back = await consent(started.authorization_url, deny=True)
        assert back["error"] == "access_denied" and "code" not in back
        error = await testkit.rpc_error(
            api.CompleteConnect(
                pb.CompleteConnectRequest(state=back["state"], error=back["error"]), metadata=user.md()
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert error.reason == "oauth_access_denied"
        assert "access was denied at Google Calendar" in error.detail
        assert (await integration(api, user, "google_calendar")).status == "disconnected"


async def test_who_may_connect_and_what_is_refused_as_bad_input(integrations, make_org):
    org = await make_org()
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        for role in ("VIEWER", "DISPATCHER", "FINANCE"):
            viewer = User(org.org_id, str(uuid.uuid4()), role)
            await testkit.rpc_error(
                api.StartConnect(pb.StartConnectRequest(provider="google_calendar"), metadata=viewer.md()),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            listed = await api.ListIntegrations(pb.ListIntegrationsRequest(), metadata=viewer.md())
            assert [i.provider for i in listed.integrations] == ["google_calendar", "quickbooks"]
        error = await testkit.rpc_error(
            api.StartConnect(pb.StartConnectRequest(provider="outlook"), metadata=owner_of(org).md()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert error.reason == "unknown_provider"
        await testkit.rpc_error(
            api.CompleteConnect(pb.CompleteConnectRequest(state="", code="x"), metadata=owner_of(org).md()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


async def test_quickbooks_needs_the_realm_id_it_redirects_with(integrations, fake_quickbooks, make_org):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        started = await api.StartConnect(pb.StartConnectRequest(provider="quickbooks"), metadata=user.md())
        query = {k: v[0] for k, v in parse_qs(urlsplit(started.authorization_url).query).items()}
        assert query["scope"] == "com.intuit.quickbooks.accounting"
        back = await consent(started.authorization_url)
        assert back["realmId"]
        error = await testkit.rpc_error(
            api.CompleteConnect(
                pb.CompleteConnectRequest(state=back["state"], code=back["code"]), metadata=user.md()
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [v.field for v in error.violations] == ["realm_id"]


async def test_quickbooks_connects_to_the_company_consented_to(
    integrations, fake_quickbooks, make_org, stack
):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        connected = await connect(stub(channel), user, "quickbooks")
    assert connected.status == "connected"
    assert connected.account_id  # the realm id the consent redirected with
    assert connected.account_name  # CompanyInfo's name (the realm id when it could not be read)
    row = await connection_row(stack.admin_url, org.org_id, "quickbooks")
    assert row is not None and row[4] == connected.account_id
