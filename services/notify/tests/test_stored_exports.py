"""Exports handed over by another service (billing's monthly accounting CSV, QueueExport) through
notify's gRPC API: kept in export_events for review while EXPORT_MODE is off (the session notify), or
posted as a signed export webhook by a notify of this module's own with EXPORT_MODE=webhook and a
local receiver; once per dedupe key either way. Stored exports are no dead letters: the export DLQ
and its replay do not see them."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cws.notify.v1 import notify_pb2
from standardwebhooks import Webhook, WebhookVerificationError

from services.notify.tests.own_notify import HttpRecorder, OwnNotify, Recorded, start_own_notify, wait_row
from services.notify.tests.test_operator_api import dead_row, rpc_error
from tools.testkit import as_role, as_service, eventually

Code = grpc.StatusCode
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
CSV = (
    "invoice_id,invoice_number,client_name,total_cents\r\n"
    '1,INV-000001,"Ada, Client",15255\r\n'
    "2,INV-000002,'=HYPERLINK(x),100\r\n"
)


def export(period: str = "2026-11", content: str = CSV, rows: int = 2) -> notify_pb2.QueueExportRequest:
    return notify_pb2.QueueExportRequest(
        mode="accounting_csv",
        period=period,
        filename=f"accounting-{period}.csv",
        content=content,
        rows=rows,
        dedupe_key=f"export:accounting_csv:{period}",
    )


def new_org() -> str:
    return str(uuid.uuid4())


# --- EXPORT_MODE=off (the session notify): kept for review -------------------------------------------


async def test_an_export_is_kept_once_for_review_and_read_by_finance_staff(stub):
    org = new_org()
    first = await stub.QueueExport(export(), metadata=as_service(org, "billing"))
    assert first.delivery == "stored" and first.created
    again = await stub.QueueExport(export(), metadata=as_service(org, "billing"))
    assert (again.delivery, again.id, again.created) == ("stored", first.id, False)
    older = await stub.QueueExport(export("2026-10", "h\r\n", 0), metadata=as_service(org, "billing"))

    for role in ("OWNER", "ADMIN", "FINANCE"):
        listed = await stub.ListStoredExports(
            notify_pb2.ListStoredExportsRequest(), metadata=as_role(org, role)
        )
        assert [e.id for e in listed.exports] == [first.id, older.id]  # newest month first
    [november, october] = listed.exports
    assert (november.mode, november.period, november.filename, november.rows, november.bytes) == (
        "accounting_csv",
        "2026-11",
        "accounting-2026-11.csv",
        2,
        len(CSV.encode()),
    )
    assert (october.period, october.rows) == ("2026-10", 0)
    got = await stub.GetStoredExport(
        notify_pb2.GetStoredExportRequest(id=first.id), metadata=as_role(org, "FINANCE")
    )
    assert got.content == CSV and got.export.id == first.id
    paged = await stub.ListStoredExports(
        notify_pb2.ListStoredExportsRequest(limit=1, offset=1), metadata=as_role(org, "FINANCE")
    )
    assert [e.id for e in paged.exports] == [older.id]


async def test_stored_exports_are_refused_to_other_roles_and_invisible_to_other_orgs(stub):
    org, other = new_org(), new_org()
    stored = await stub.QueueExport(export(), metadata=as_service(org, "billing"))
    for role in ("DISPATCHER", "VIEWER"):
        await rpc_error(
            stub.ListStoredExports(notify_pb2.ListStoredExportsRequest(), metadata=as_role(org, role)),
            Code.PERMISSION_DENIED,
        )
        await rpc_error(
            stub.GetStoredExport(
                notify_pb2.GetStoredExportRequest(id=stored.id), metadata=as_role(org, role)
            ),
            Code.PERMISSION_DENIED,
        )
    await rpc_error(
        stub.GetStoredExport(
            notify_pb2.GetStoredExportRequest(id=stored.id), metadata=as_role(other, "OWNER")
        ),
        Code.NOT_FOUND,
    )
    listed = await stub.ListStoredExports(
        notify_pb2.ListStoredExportsRequest(), metadata=as_role(other, "OWNER")
    )
    assert list(listed.exports) == []
    # Handing over an export is for suite services, not for a person of the org.
    refused = await rpc_error(
        stub.QueueExport(export(), metadata=as_role(org, "OWNER")), Code.PERMISSION_DENIED
    )
    assert refused.reason == "service_only"


async def test_a_malformed_export_is_refused_naming_its_fields(stub):
    org = new_org()
    bad = notify_pb2.QueueExportRequest(
        mode="lead_csv", period="2026-13", filename="../etc/passwd", content="x", rows=-1, dedupe_key=""
    )
    error = await rpc_error(stub.QueueExport(bad, metadata=as_service(org, "billing")), Code.INVALID_ARGUMENT)
    assert {v.field for v in error.violations} == {"mode", "period", "filename", "rows", "dedupe_key"}
    await rpc_error(
        stub.ListStoredExports(
            notify_pb2.ListStoredExportsRequest(mode="nope"), metadata=as_role(org, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )
    await rpc_error(
        stub.GetStoredExport(
            notify_pb2.GetStoredExportRequest(id="not-a-uuid"), metadata=as_role(org, "OWNER")
        ),
        Code.INVALID_ARGUMENT,
    )


async def test_stored_exports_are_no_export_dead_letters(stack, stub):
    org = new_org()
    stored = await stub.QueueExport(export(), metadata=as_service(org, "billing"))
    outbox_id = await dead_row(stack.admin_url, org, kind="export", export_letter=True)
    owner = as_role(org, "OWNER")

    letters = await stub.ListExportDeadLetters(notify_pb2.ListExportDeadLettersRequest(), metadata=owner)
    [letter] = letters.events
    assert letter.outbox_id == outbox_id and letter.id != stored.id
    queue = await stub.DeadLetterQueue(notify_pb2.DeadLetterQueueRequest(kind="export"), metadata=owner)
    assert [i.id for i in queue.items] == [letter.id] and queue.export_dead_count == 1 and queue.total == 1
    everything = await stub.DeadLetterQueue(notify_pb2.DeadLetterQueueRequest(kind="all"), metadata=owner)
    assert stored.id not in {i.id for i in everything.items}
    await rpc_error(
        stub.ReplayExportDeadLetter(notify_pb2.ReplayExportDeadLetterRequest(id=stored.id), metadata=owner),
        Code.NOT_FOUND,
    )
    # ... and a dead letter is no stored export.
    await rpc_error(
        stub.GetStoredExport(notify_pb2.GetStoredExportRequest(id=letter.id), metadata=owner), Code.NOT_FOUND
    )
    # The dead letter still replays as before.
    replayed = await stub.ReplayExportDeadLetter(
        notify_pb2.ReplayExportDeadLetterRequest(id=letter.id), metadata=owner
    )
    assert replayed.event.id == outbox_id and replayed.event.status == "pending"
    listed = await stub.ListStoredExports(notify_pb2.ListStoredExportsRequest(), metadata=owner)
    assert [e.id for e in listed.exports] == [stored.id]


# --- EXPORT_MODE=webhook (a notify of this module's own): posted, signed, once ------------------------


class Receiver(HttpRecorder):
    """Answers 204 to what verifies with the secret (Standard Webhooks), 401 otherwise."""

    def __init__(self) -> None:
        super().__init__(respond=self._respond)

    def _respond(self, request: Recorded) -> int:
        try:
            Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
        except WebhookVerificationError:
            return 401
        return 204


@pytest.fixture(scope="module")
def webhook_notify(stack: Any) -> Iterator[tuple[OwnNotify, Receiver]]:
    receiver = Receiver().start()
    own = start_own_notify(
        stack,
        "notify-exports",
        {
            "EXPORT_MODE": "webhook",
            "EXPORT_WEBHOOK_URL": f"{receiver.url}/exports",
            "EXPORT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "EXPORT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        },
    )
    try:
        own.proc.wait_ready()
        yield own, receiver
    finally:
        own.stop()
        receiver.stop()


async def test_with_export_webhooks_the_csv_is_posted_signed_once(webhook_notify, notify_at):
    own, receiver = webhook_notify
    notify = notify_at(own.target)
    org = new_org()
    queued = await notify.QueueExport(export(), metadata=as_service(org, "billing"))
    assert queued.delivery == "webhook" and queued.created
    await wait_row(own.admin_url, queued.id, lambda r: r["status"] == "sent" and r["kind"] == "export")

    # The job asks again (billing died before recording the month): the same row, nothing new sent.
    again = await notify.QueueExport(export(), metadata=as_service(org, "billing"))
    assert (again.delivery, again.id, again.created) == ("webhook", queued.id, False)
    await asyncio.sleep(0.5)  # what a second row would need to be delivered (poll 0.2 s)

    async def posted() -> Recorded:
        found = [r for r in receiver.at("/exports") if r.headers["webhook-id"] == queued.id]
        assert len(found) == 1, found
        return found[0]

    request = await eventually(posted, message="the export webhook")
    assert Webhook(WEBHOOK_SECRET).verify(request.body, request.headers) == {
        "type": "accounting_csv",
        "data": {
            "org_id": org,
            "period": "2026-11",
            "filename": "accounting-2026-11.csv",
            "content_type": "text/csv",
            "rows": 2,
            "bytes": len(CSV.encode()),
            "csv": CSV,
        },
    }
    # Sent, not kept: nothing waits for review in this notify.
    listed = await notify.ListStoredExports(
        notify_pb2.ListStoredExportsRequest(), metadata=as_role(org, "OWNER")
    )
    assert list(listed.exports) == []
