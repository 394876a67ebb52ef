"""iam's PrivacyService through its gRPC API (issue 13, seed 002's data export/delete playbook).

Export (OWNER or ADMIN): the client's portal magic links and sessions, metadata only (never a token
hash). Erase (suite services only): the client's links and sessions are gone, so a portal session
they held is refused on its next check and an unused link can no longer be redeemed; the org's audit
entries keep who did what but lose the person's values (before/after JSON at any depth, the
break-glass reason); published events naming them are forgotten, unpublished ones keep the step
pending. A second erase changes nothing. Another org's context gets nothing and changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cws.common.v1 import audit_pb2, privacy_pb2, privacy_pb2_grpc
from cws.iam.v1 import iam_pb2, iam_pb2_grpc
from google.protobuf import json_format

from libs.common import context as request_context
from libs.common.db import Database, unit_of_work
from libs.common.privacy import ERASED
from services.iam import audit
from services.iam.models import SCHEMA, event_tables
from tools.testkit import as_role, as_service, eventually, rpc_error, signed, signing_channel, sql

Code = grpc.StatusCode
ANONYMOUS = request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS")
CLIENT = iam_pb2.PORTAL_KIND_CLIENT
EMAIL = "pat.doe@example.com"
PERSON = privacy_pb2.Person(emails=[EMAIL], pii_values=["Pat Doe", "555-0100", 'Pat "Sparky" Doe'])


@dataclass
class Stubs:
    # Typed loosely, as the suite's tests type their stubs: the generated classes are the sync ones.
    iam: Any
    privacy: Any


@pytest.fixture
async def stubs(iam: Any) -> AsyncIterator[Stubs]:
    async with signing_channel(iam.target) as channel:
        yield Stubs(iam_pb2_grpc.IamServiceStub(channel), privacy_pb2_grpc.PrivacyServiceStub(channel))


@pytest.fixture
async def db(stack: Any) -> AsyncIterator[Database]:
    database = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    yield database
    await database.dispose()


def anonymous(org_id: str = "") -> Any:
    return signed(
        request_context.RequestContext(
            org_id=org_id,
            auth_method=ANONYMOUS,  # type: ignore[arg-type]
            request_id=f"test-{uuid.uuid4().hex[:12]}",
            client_ip="203.0.113.9",
        )
    )


async def client_link(stubs: Stubs, org_id: str, email: str) -> str:
    issued = await stubs.iam.IssueClientPortalToken(
        iam_pb2.IssueClientPortalTokenRequest(email=email), metadata=as_role(org_id, "DISPATCHER")
    )
    return str(issued.token)


async def client_session(stubs: Stubs, org_id: str, email: str) -> str:
    redeemed = await stubs.iam.RedeemPortalLink(
        iam_pb2.RedeemPortalLinkRequest(kind=CLIENT, link_token=await client_link(stubs, org_id, email)),
        metadata=anonymous(),
    )
    return str(redeemed.session_token)


async def session_stands(stubs: Stubs, token: str, kind: Any = CLIENT) -> bool:
    try:
        await stubs.iam.CheckPortalSession(
            iam_pb2.CheckPortalSessionRequest(kind=kind, session_token=token), metadata=anonymous()
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() == Code.UNAUTHENTICATED, error
        return False
    return True


async def worker_session(stubs: Stubs, org_id: str) -> str:
    issued = await stubs.iam.IssueWorkerPortalToken(
        iam_pb2.IssueWorkerPortalTokenRequest(worker_id=str(uuid.uuid4())), metadata=as_role(org_id, "OWNER")
    )
    redeemed = await stubs.iam.RedeemPortalLink(
        iam_pb2.RedeemPortalLinkRequest(kind=iam_pb2.PORTAL_KIND_WORKER, link_token=issued.token),
        metadata=anonymous(),
    )
    return str(redeemed.session_token)


async def audited(db: Database, org_id: str, **fields: Any) -> str:
    """An admin write as iam's audit consumer records it; returns its request id, to find the row."""
    before, after = fields.pop("before", None), fields.pop("after", None)
    request_id = f"req-{uuid.uuid4().hex[:10]}"
    message = audit_pb2.AdminAuditRecorded(
        org_id=org_id,
        actor=str(uuid.uuid4()),
        role="ADMIN",
        auth_method="jwt",
        action="booking.UpdateBooking",
        resource_type="booking",
        resource_id=str(uuid.uuid4()),
        request_id=request_id,
        **fields,
    )
    if before is not None:
        message.before.update(before)
    if after is not None:
        message.after.update(after)
    async with unit_of_work(db, org_id) as uow:
        await audit.record_from_service(uow, message)
    return request_id


async def audit_row(stack: Any, request_id: str) -> tuple[Any, Any, Any]:
    # As the superuser: the test reads what is stored, past the service.
    [row] = await sql(
        stack.admin_url,
        "SELECT before, after, break_glass_reason FROM iam.admin_audit_logs WHERE request_id = %s",
        (request_id,),
    )
    return row[0], row[1], row[2]


async def portal_rows(stack: Any, org_id: str, email: str) -> int:
    [(links,)] = await sql(
        stack.admin_url,
        "SELECT count(*) FROM iam.portal_links WHERE org_id = %s AND subject = %s",
        (uuid.UUID(org_id), email),
    )
    [(sessions,)] = await sql(
        stack.admin_url,
        "SELECT count(*) FROM iam.portal_sessions WHERE org_id = %s AND subject = %s",
        (uuid.UUID(org_id), email),
    )
    return int(links) + int(sessions)


async def _is(count: Any, expected: int) -> bool:
    return bool(await count == expected)


async def events_naming(stack: Any, org_id: str, value: str) -> int:
    [(count,)] = await sql(
        stack.admin_url,
        "SELECT count(*) FROM iam.event_outbox WHERE org_id = %s AND position(%s IN payload) > 0",
        (uuid.UUID(org_id), value.encode()),
    )
    return int(count)


async def all_published(stack: Any, org_id: str) -> bool:
    rows = await sql(
        stack.admin_url,
        "SELECT 1 FROM iam.event_outbox WHERE org_id = %s AND published_at IS NULL",
        (uuid.UUID(org_id),),
    )
    return not rows


async def export(stubs: Stubs, org_id: str, person: Any = PERSON, role: str = "OWNER") -> dict[str, Any]:
    answer = await stubs.privacy.ExportPerson(
        privacy_pb2.ExportPersonRequest(person=person), metadata=as_role(org_id, role)
    )
    return json_format.MessageToDict(answer.sections)


async def erase(stubs: Stubs, metadata: Any, person: Any = PERSON) -> Any:
    return await stubs.privacy.ErasePerson(
        privacy_pb2.ErasePersonRequest(request_id=str(uuid.uuid4()), person=person), metadata=metadata
    )


# --- ExportPerson ---------------------------------------------------------------------------------


async def test_export_lists_the_clients_portal_links_and_sessions_without_tokens(
    stubs: Stubs, make_org: Any
) -> None:
    org, other = await make_org(), await make_org()
    session = await client_session(stubs, org.org_id, EMAIL)
    await client_link(stubs, org.org_id, EMAIL.upper())  # stored normalised, still the client's
    await client_session(stubs, org.org_id, "someone.else@example.com")
    await worker_session(stubs, org.org_id)
    await client_session(stubs, other.org_id, EMAIL)
    await stubs.iam.RevokePortalSession(
        iam_pb2.RevokePortalSessionRequest(session_token=session), metadata=anonymous()
    )

    records = (await export(stubs, org.org_id, role="ADMIN"))["portal_access"]
    assert sorted(r["record"] for r in records) == ["magic_link", "magic_link", "session"]
    assert {r["kind"] for r in records} == {"client"}
    [ended] = [r for r in records if r["record"] == "session"]
    assert ended["revoked_reason"] == "logout" and ended["revoked_at"]
    links = [r for r in records if r["record"] == "magic_link"]
    assert sorted(bool(r["used_at"]) for r in links) == [False, True]
    for record in records:
        assert set(record) == {
            "record",
            "kind",
            "created_at",
            "expires_at",
            "used_at",
            "revoked_at",
            "revoked_reason",
        }
    text = json.dumps(records)
    assert "token" not in text and EMAIL not in text and session not in text

    # Another org's context gets nothing of this org's, only its own.
    assert len((await export(stubs, other.org_id))["portal_access"]) == 2


async def test_export_is_for_owners_and_admins(stubs: Stubs, make_org: Any) -> None:
    org = await make_org()
    await client_session(stubs, org.org_id, EMAIL)
    request = privacy_pb2.ExportPersonRequest(person=PERSON)
    for role in ("DISPATCHER", "FINANCE", "VIEWER", "WORKER", "CLIENT"):
        await rpc_error(
            stubs.privacy.ExportPerson(request, metadata=as_role(org.org_id, role)), Code.PERMISSION_DENIED
        )
    assert len((await export(stubs, org.org_id, role="OWNER"))["portal_access"]) == 2


async def test_export_of_no_one_or_of_junk_is_an_empty_bundle(stubs: Stubs, make_org: Any) -> None:
    org = await make_org()
    await client_session(stubs, org.org_id, EMAIL)
    for person in (
        privacy_pb2.Person(),
        privacy_pb2.Person(emails=["", "  "]),
        privacy_pb2.Person(emails=["nobody@example.com"], booking_ids=["not-a-uuid"]),
    ):
        assert await export(stubs, org.org_id, person) == {"portal_access": []}


# --- ErasePerson ----------------------------------------------------------------------------------


async def test_erase_ends_portal_access_scrubs_the_audit_and_forgets_events_once(
    stubs: Stubs, db: Database, make_org: Any, stack: Any, notify: Any
) -> None:
    # Notify runs: it answers the login request below by having iam mint the emailed link, as in
    # production. (Without it in this test the count of erased rows raced notify: CI saw 7, not 6.)
    org, other = await make_org(), await make_org()
    session = await client_session(stubs, org.org_id, EMAIL)
    unused = await client_link(stubs, org.org_id, EMAIL)
    others_session = await client_session(stubs, org.org_id, "someone.else@example.com")
    workers_session = await worker_session(stubs, org.org_id)
    elsewhere = await client_session(stubs, other.org_id, EMAIL)
    assert await session_stands(stubs, session)

    mentions = await audited(
        db,
        org.org_id,
        before={"client_email": EMAIL, "status": "confirmed"},
        after={
            "notes": "Called PAT DOE about the kitchen",
            "people": [{"name": "Pat Doe", "phone": "555-0100"}],
        },
        break_glass_session_id=str(uuid.uuid4()),
        break_glass_reason="client Pat Doe complained",
    )
    # In the JSON's text a quote is escaped: the search must still find the value.
    quoted = await audited(db, org.org_id, after={"notes": 'ask for pat "sparky" doe'})
    unrelated = await audited(db, org.org_id, after={"status": "cancelled", "team": "Pat's crew"})
    other_orgs = await audited(db, other.org_id, before={"client_email": EMAIL})

    await stubs.iam.RequestClientLogin(
        iam_pb2.RequestClientLoginRequest(email=EMAIL), metadata=anonymous(org.org_id)
    )
    assert await events_naming(stack, org.org_id, EMAIL) == 1
    published: bool = await eventually(lambda: all_published(stack, org.org_id), message="the relay")
    assert published
    emailed: bool = await eventually(
        lambda: _is(portal_rows(stack, org.org_id, EMAIL), 4), message="notify's magic link"
    )
    assert emailed

    first = await erase(stubs, as_service(org.org_id))
    # 3 links (the redeemed one, the unused one, the one notify emailed) + 1 session + 2 audit rows
    # + 1 published event.
    assert (first.changed, first.pending_reason) == (7, ""), first

    assert not await session_stands(stubs, session), "the portal session is refused at once"
    await rpc_error(
        stubs.iam.RedeemPortalLink(
            iam_pb2.RedeemPortalLinkRequest(kind=CLIENT, link_token=unused), metadata=anonymous()
        ),
        Code.UNAUTHENTICATED,
    )
    assert await portal_rows(stack, org.org_id, EMAIL) == 0
    assert await session_stands(stubs, others_session)
    assert await session_stands(stubs, workers_session, iam_pb2.PORTAL_KIND_WORKER)
    assert await session_stands(stubs, elsewhere), "another org's client is someone else's"

    before, after, reason = await audit_row(stack, mentions)
    assert before == {"client_email": ERASED, "status": "confirmed"}
    assert after == {
        "notes": f"Called {ERASED} about the kitchen",
        "people": [{"name": ERASED, "phone": ERASED}],
    }
    assert reason == f"client {ERASED} complained"
    assert await audit_row(stack, quoted) == (None, {"notes": f"ask for {ERASED}"}, None)
    assert await audit_row(stack, unrelated) == (None, {"status": "cancelled", "team": "Pat's crew"}, None)
    assert await audit_row(stack, other_orgs) == ({"client_email": EMAIL}, None, None)
    assert await events_naming(stack, org.org_id, EMAIL) == 0

    # The erasure is audited, naming the deletion request, not the person.
    [(recorded_after, actor)] = await sql(
        stack.admin_url,
        "SELECT after, actor FROM iam.admin_audit_logs WHERE org_id = %s AND action = 'iam.person.erase'",
        (uuid.UUID(org.org_id),),
    )
    assert (recorded_after, actor) == ({"erased_rows": 7}, "service:jobs")

    again = await erase(stubs, as_service(org.org_id))
    assert (again.changed, again.pending_reason) == (0, "")
    assert await export(stubs, org.org_id) == {"portal_access": []}


async def test_only_suite_services_erase_and_only_in_their_org(
    stubs: Stubs, make_org: Any, stack: Any
) -> None:
    org, other = await make_org(), await make_org()
    session = await client_session(stubs, org.org_id, EMAIL)
    for role in ("OWNER", "ADMIN"):
        await rpc_error(erase(stubs, as_role(org.org_id, role)), Code.PERMISSION_DENIED)
    assert await session_stands(stubs, session)
    # Run in another org, the step finds no one there and ends nothing here.
    elsewhere = await erase(stubs, as_service(other.org_id))
    assert (elsewhere.changed, elsewhere.pending_reason) == (0, "")
    assert await session_stands(stubs, session)
    # No one, or junk: nothing to do, and no error.
    for person in (privacy_pb2.Person(), privacy_pb2.Person(emails=["x"], booking_ids=["not-a-uuid"])):
        assert (await erase(stubs, as_service(org.org_id), person)).changed == 0
    assert await session_stands(stubs, session)


async def test_an_event_naming_the_person_not_yet_published_keeps_the_step_pending(
    stubs: Stubs, make_org: Any, stack: Any
) -> None:
    org = await make_org()
    session = await client_session(stubs, org.org_id, EMAIL)
    # An event naming the client that the relay cannot publish (no stream takes its subject), so it
    # stays unpublished for as long as the test needs.
    event_id = uuid.uuid4()
    await sql(
        stack.admin_url,
        "INSERT INTO iam.event_outbox (id, subject, payload, org_id)"
        " VALUES (%s, 'cws.test.privacy.unpublished', %s, %s)",
        (event_id, b"\x0a\x13" + EMAIL.encode(), uuid.UUID(org.org_id)),
    )
    try:
        first = await erase(stubs, as_service(org.org_id))
        # The rest is done (1 link, 1 session); the event is left for its consumers.
        assert first.changed == 2 and "not published" in first.pending_reason, first
        assert not await session_stands(stubs, session)
        assert await sql(stack.admin_url, "SELECT 1 FROM iam.event_outbox WHERE id = %s", (event_id,))

        await sql(
            stack.admin_url, "UPDATE iam.event_outbox SET published_at = now() WHERE id = %s", (event_id,)
        )
        second = await erase(stubs, as_service(org.org_id))
        assert (second.changed, second.pending_reason) == (1, ""), second
        assert not await sql(stack.admin_url, "SELECT 1 FROM iam.event_outbox WHERE id = %s", (event_id,))
    finally:
        await sql(stack.admin_url, "DELETE FROM iam.event_outbox WHERE id = %s", (event_id,))
