"""A connection's life after the consent, through the service's gRPC against the fake Google: tokens
refreshed before they expire, a grant revoked at Google (connection revoked, owners emailed through
notify), disconnecting (revoked at Google), and row-level security."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import psycopg
from cws.common.v1.audit_pb2 import AdminAuditRecorded
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from cws.integrations.v1 import integrations_pb2 as pb

from conftest import INTEGRATIONS_CLIENT_ID, INTEGRATIONS_CLIENT_SECRET, INTEGRATIONS_TEST_TOKEN_KEY
from services.integrations.crypto import ACCESS, REFRESH, TokenBox
from services.integrations.events import AUDIT_RECORDED
from services.integrations.models import TENANT_TABLES
from services.integrations.tests.helpers import User, connect, connection_row, integration, owner_of, stub
from tools import testkit

BOX = TokenBox((base64.b64decode(INTEGRATIONS_TEST_TOKEN_KEY),))


async def tokens(admin_url: str, org_id: str, provider: str = "google_calendar") -> tuple[str, str, datetime]:
    """The stored tokens, opened with the session's key (read as the superuser, behind the service)."""
    row = await connection_row(admin_url, org_id, provider)
    assert row is not None and row[1] is not None
    access = BOX.open(bytes(row[1]), org_id, provider, ACCESS)
    refresh = BOX.open(bytes(row[2]), org_id, provider, REFRESH)
    return access, refresh, row[3]


async def test_a_token_expiring_soon_is_refreshed_before_use_and_stored(
    integrations, fake_google, make_org, stack
):
    org = await make_org()
    user = owner_of(org)
    fake_google.control("oauth/config", {"access_ttl": 120})  # under the 5 minutes' margin
    try:
        async with testkit.signing_channel(integrations.target) as channel:
            api = stub(channel)
            await connect(api, user)
            before, refresh_before, expires_before = await tokens(stack.admin_url, org.org_id)
            assert expires_before < datetime.now(UTC) + timedelta(minutes=5)
            listed = await api.ListCalendars(pb.ListCalendarsRequest(), metadata=user.md())
            assert listed.calendars
            after, refresh_after, expires_after = await tokens(stack.admin_url, org.org_id)
            assert after != before  # a new access token, stored sealed
            assert refresh_after == refresh_before  # Google keeps the refresh token
            assert expires_after > expires_before
    finally:
        fake_google.control("oauth/config", {"access_ttl": 3600})

    # A token good for an hour is used as it is.
    other = await make_org()
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, owner_of(other))
        before, _, _ = await tokens(stack.admin_url, other.org_id)
        await api.ListCalendars(pb.ListCalendarsRequest(), metadata=owner_of(other).md())
        assert (await tokens(stack.admin_url, other.org_id))[0] == before


async def test_a_grant_revoked_at_google_revokes_the_connection_and_emails_the_owners(
    integrations, fake_google, make_org, stack, smtp_sink
):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, user)
        calendars = await api.ListCalendars(pb.ListCalendarsRequest(), metadata=user.md())
        await api.ChooseCalendar(
            pb.ChooseCalendarRequest(calendar_id=calendars.calendars[0].id), metadata=user.md()
        )
        # The user removes the app's access in their Google account; later the access token expires.
        _, refresh, _ = await tokens(stack.admin_url, org.org_id)
        async with httpx.AsyncClient(timeout=10) as http:
            revoked = await http.post(f"{fake_google.base_url}/oauth/revoke", data={"token": refresh})
            assert revoked.status_code == 200
        await testkit.sql(
            stack.admin_url,
            "UPDATE integrations.connections SET token_expires_at = now() WHERE org_id = %s",
            (org.org_id,),
        )
        synced = await api.SyncGoogleCalendar(
            pb.SyncGoogleCalendarRequest(force=True), metadata=testkit.as_service(org.org_id)
        )
        assert synced.skipped and synced.skip_reason == "revoked"

        shown = await integration(api, user, "google_calendar")
        assert shown.status == "revoked"
        assert shown.status_reason == "the grant was revoked at Google"
        assert shown.sync.last_error.startswith("revoked")
        row = await connection_row(stack.admin_url, org.org_id, "google_calendar")
        assert row is not None and row[1] is None and row[2] is None  # the dead tokens are forgotten

        # Nothing more is tried for it: the job skips it until someone reconnects.
        again = await api.SyncGoogleCalendar(
            pb.SyncGoogleCalendarRequest(force=True), metadata=testkit.as_service(org.org_id)
        )
        assert again.skip_reason == "not_connected"

    [mail] = await smtp_sink.delivered(org.owner_email)
    assert "Google Calendar was disconnected" in mail.subject
    assert "/admin/settings/integrations" in mail.text


async def test_disconnect_revokes_at_google_and_forgets_the_tokens(
    integrations, fake_google, make_org, stack
):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, user)
        _, refresh, _ = await tokens(stack.admin_url, org.org_id)

        viewer = User(org.org_id, str(uuid.uuid4()), "VIEWER")
        await testkit.rpc_error(
            api.Disconnect(pb.DisconnectRequest(provider="google_calendar"), metadata=viewer.md()),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        done = await api.Disconnect(pb.DisconnectRequest(provider="google_calendar"), metadata=user.md())
        assert done.revoked_at_provider
        assert done.integration.status == "disconnected"
        row = await connection_row(stack.admin_url, org.org_id, "google_calendar")
        assert row is not None and row[0] == "disconnected" and row[1] is None and row[2] is None

        # Google no longer honours the grant.
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.post(
                f"{fake_google.base_url}/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": refresh},
                auth=(INTEGRATIONS_CLIENT_ID, INTEGRATIONS_CLIENT_SECRET),
            )
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

        # Twice is fine, and says there was nothing left to revoke.
        again = await api.Disconnect(pb.DisconnectRequest(provider="google_calendar"), metadata=user.md())
        assert again.integration.status == "disconnected" and not again.revoked_at_provider


async def test_another_org_sees_nothing_of_a_connection(integrations, make_org, stack):
    org, other = await make_org(), await make_org()
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, owner_of(org))
        theirs = await integration(api, owner_of(other), "google_calendar")
        assert theirs.status == "disconnected" and theirs.connected_by == ""
        # Another org's admin cannot list or disconnect it.
        await testkit.rpc_error(
            api.ListCalendars(pb.ListCalendarsRequest(), metadata=owner_of(other).md()),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        await api.Disconnect(pb.DisconnectRequest(provider="google_calendar"), metadata=owner_of(other).md())
        assert (await integration(api, owner_of(org), "google_calendar")).status == "connected"

    with psycopg.connect(stack.app_url) as conn:
        # The runtime role with no org set sees no row at all; with one, only that org's.
        assert conn.execute("SELECT count(*) FROM integrations.connections").fetchone()[0] == 0
        with conn.transaction():
            conn.execute("SELECT set_config('app.current_org_id', %s, true)", (other.org_id,))
            assert conn.execute("SELECT count(*) FROM integrations.connections").fetchone()[0] == 0
        with conn.transaction():
            conn.execute("SELECT set_config('app.current_org_id', %s, true)", (org.org_id,))
            assert conn.execute("SELECT count(*) FROM integrations.connections").fetchone()[0] == 1


def test_every_tenant_table_has_forced_rls_and_a_policy(stack):
    with psycopg.connect(stack.admin_url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'integrations'
                           AND p.tablename = c.relname AND p.policyname = c.relname || '_org_isolation')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'integrations' AND c.relkind = 'r'
              AND EXISTS (SELECT 1 FROM information_schema.columns col WHERE col.table_schema = 'integrations'
                          AND col.table_name = c.relname AND col.column_name = 'org_id')
              AND c.relname NOT LIKE 'event_%%'
            """
        ).fetchall()
        public_can_list = conn.execute(
            "SELECT has_function_privilege('public', 'integrations.all_sync_states(text)', 'EXECUTE')"
        ).fetchone()[0]
    assert sorted(r[0] for r in rows) == sorted(TENANT_TABLES)
    assert all(enabled and forced and policy for _, enabled, forced, policy in rows), rows
    assert public_can_list is False


def test_the_models_match_the_migrations(stack):
    from services.integrations.models import metadata

    assert testkit.schema_drift(stack.admin_url, "integrations", metadata) == []


async def test_admin_actions_are_audited_by_iam_and_sync_bookkeeping_is_not(
    integrations, iam, make_org, stack
):
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, user)
        calendars = await api.ListCalendars(pb.ListCalendarsRequest(), metadata=user.md())
        await api.ChooseCalendar(
            pb.ChooseCalendarRequest(calendar_id=calendars.calendars[0].id), metadata=user.md()
        )
        synced = await api.SyncGoogleCalendar(
            pb.SyncGoogleCalendarRequest(force=True), metadata=testkit.as_service(org.org_id)
        )
        assert not synced.skipped
        await api.Disconnect(pb.DisconnectRequest(provider="google_calendar"), metadata=user.md())

    # At the source, in the actions' own transactions: an audit event for each admin action, once,
    # and none for the sync's bookkeeping or a read.
    with psycopg.connect(stack.admin_url) as conn:
        payloads = conn.execute(
            "SELECT payload FROM integrations.event_outbox WHERE org_id = %s AND subject = %s",
            (org.org_id, AUDIT_RECORDED.subject),
        ).fetchall()
    raised = sorted(AdminAuditRecorded.FromString(payload).action for (payload,) in payloads)
    assert raised == [
        "integrations.ChooseCalendar",
        "integrations.CompleteConnect",
        "integrations.Disconnect",
        "integrations.StartConnect",
    ]

    async with testkit.signing_channel(iam.target) as channel:
        audit = iam_pb2_grpc.IamServiceStub(channel)

        async def entries(action: str) -> list[iam_pb2.AuditLog]:
            found = await audit.ListAuditLogs(iam_pb2.ListAuditLogsRequest(action=action), metadata=user.md())
            return list(found.entries)

        async def arrived(action: str) -> list[iam_pb2.AuditLog]:
            found = await entries(action)
            assert found, action
            return found

        # Each row in its own time: a publish retried by the relay, rows claimed by another
        # integrations process's relay, or an event IAM failed once and got again after a delay all
        # arrive after events raised later (at least once, not in order). Seen in a clean-clone CI run:
        # Disconnect's row was in and CompleteConnect's not yet.
        [disconnected] = await testkit.eventually(lambda: arrived("integrations.Disconnect"))
        [connected] = await testkit.eventually(lambda: arrived("integrations.CompleteConnect"))
        [chosen] = await testkit.eventually(lambda: arrived("integrations.ChooseCalendar"))
        assert await entries("integrations.SyncGoogleCalendar") == []
        assert await entries("integrations.ListCalendars") == []
    assert connected.actor == org.owner_id and connected.role == "OWNER"
    assert dict(connected.after) == {"status": "connected", "account_id": ""}
    assert chosen.after["calendar_id"] == calendars.calendars[0].id
    assert (
        disconnected.after["status"] == "disconnected" and disconnected.after["revoked_at_provider"] is True
    )


async def test_quickbooks_refresh_tokens_rotate_and_the_new_one_is_stored(
    integrations, fake_quickbooks, make_org, stack
):
    """Intuit answers every refresh with a new refresh token and refuses the old one from then on."""
    org = await make_org()
    user = owner_of(org)
    async with testkit.signing_channel(integrations.target) as channel:
        api = stub(channel)
        await connect(api, user, "quickbooks")
        access_before, refresh_before, _ = await tokens(stack.admin_url, org.org_id, "quickbooks")
        await testkit.sql(
            stack.admin_url,
            "UPDATE integrations.connections SET token_expires_at = now() WHERE org_id = %s",
            (org.org_id,),
        )
        await api.SyncQuickBooks(
            pb.SyncQuickBooksRequest(force=True), metadata=testkit.as_service(org.org_id)
        )
    access_after, refresh_after, expires_after = await tokens(stack.admin_url, org.org_id, "quickbooks")
    assert access_after != access_before and refresh_after != refresh_before
    assert expires_after > datetime.now(UTC) + timedelta(minutes=30)
    async with httpx.AsyncClient(timeout=10) as http:
        old = await http.post(
            f"{fake_quickbooks.base_url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_before},
            auth=(INTEGRATIONS_CLIENT_ID, INTEGRATIONS_CLIENT_SECRET),
        )
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
