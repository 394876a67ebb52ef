"""The monthly accounting export with EXPORT_MODE=webhook, billing to the receiver: billing's export
run (services/billing/accounting_export.py, in this process, on the session's database) hands the
month to a notify of this module's own whose EXPORT_MODE is webhook, and the receiver, a local HTTP
server checking Standard Webhooks signatures, gets the CSV once, even when billing hands it over twice
(it died before recording the month). With EXPORT_MODE off the same run keeps the CSV for review
(services/jobs/tests/test_accounting_export.py, through the jobs runner).

Billing runs here in-process rather than as a second billing process: a second one on the session's
database would share its Stripe loop and event consumers with the session's billing."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from libs.common.db import Database
from services.billing import accounting_export
from services.billing.models import SCHEMA, event_tables
from services.billing.peers import Peers, open_peers
from services.billing.settings import BillingSettings
from services.notify.tests.own_notify import HttpRecorder, OwnNotify, Recorded, start_own_notify
from tools.processes import DEV_KEYRING
from tools.testkit import eventually, sql

WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver(HttpRecorder):
    """Answers 204 to what verifies with the secret, 401 otherwise."""

    def __init__(self) -> None:
        super().__init__(respond=self._respond)

    def _respond(self, request: Recorded) -> int:
        try:
            Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
        except WebhookVerificationError:
            return 401
        return 204

    def of_org(self, org_id: str) -> list[Recorded]:
        return [r for r in self.at("/exports") if r.json().get("data", {}).get("org_id") == org_id]


@pytest.fixture(scope="module")
def webhook_notify(stack: Any) -> Iterator[tuple[OwnNotify, Receiver]]:
    receiver = Receiver()
    receiver.start()
    own = start_own_notify(
        stack,
        "notify-accounting",
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


@pytest.fixture
async def billing_here(
    stack: Any, iam: Any, booking: Any, webhook_notify: tuple[OwnNotify, Receiver]
) -> AsyncIterator[tuple[Database, BillingSettings, Peers]]:
    """Billing's database, settings and peers as its process has them, notify being the webhook one."""
    settings = BillingSettings(  # type: ignore[call-arg]
        _env_file=None,
        app_env="test",
        database_url=stack.app_url,
        internal_signing_key=DEV_KEYRING.private["billing"],
        iam_grpc_target=iam.target,
        booking_grpc_target=booking.target,
        notify_grpc_target=webhook_notify[0].target,
    )
    db = Database(stack.app_url, schema=SCHEMA, tables=event_tables, pool_size=2)
    peers = open_peers(settings)
    yield db, settings, peers
    await peers.close()
    await db.dispose()


async def test_the_month_goes_out_once_as_a_signed_export_webhook(
    billing_here: tuple[Database, BillingSettings, Peers],
    webhook_notify: tuple[OwnNotify, Receiver],
    stack: Any,
) -> None:
    db, settings, peers = billing_here
    _, receiver = webhook_notify
    org = uuid.uuid4()  # unknown to IAM: its zone is UTC
    last_month = (datetime.now(UTC).date().replace(day=1) - timedelta(days=1)).replace(day=20)
    await sql(  # one issued invoice of last month, written behind billing's back
        stack.admin_url,
        "INSERT INTO billing.invoices (id, org_id, number, status, currency, client_name, client_email,"
        " issued_at, subtotal_cents, taxable_subtotal_cents, tax_cents, total_cents)"
        " VALUES (gen_random_uuid(), %s, 'INV-000001', 'SENT', 'CAD', '@SUM(A1)', 'a@example.com', %s,"
        " 10000, 10000, 500, 10500)",
        (org, datetime.combine(last_month, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)),
    )

    done = await accounting_export.run(db, settings, peers, org, "", "test-accounting-webhook")

    period = f"{last_month:%Y-%m}"
    assert (done.period, done.exported, done.rows, done.delivery) == (period, True, 1, "webhook")

    async def posted() -> Recorded:
        found = receiver.of_org(str(org))
        assert len(found) == 1, found
        return found[0]

    request: Recorded = await eventually(posted, message="the accounting export webhook")
    body = Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    assert body["type"] == "accounting_csv"
    data = body["data"]
    assert (data["period"], data["filename"], data["rows"], data["content_type"]) == (
        period,
        f"accounting-{period}.csv",
        1,
        "text/csv",
    )
    assert data["bytes"] == done.bytes == len(data["csv"].encode())
    [row] = list(csv.DictReader(io.StringIO(data["csv"])))
    assert (row["invoice_number"], row["client_name"], row["total_cents"]) == (
        "INV-000001",
        "'@SUM(A1)",
        "10500",
    )

    # A second run finds the month recorded and does nothing.
    again = await accounting_export.run(db, settings, peers, org, "", "test-accounting-webhook-2")
    assert (again.exported, again.delivery) == (False, "webhook")
    # Billing died after notify had the month and before recording it: handed over again, and
    # notify's dedupe key keeps it one webhook.
    await sql(stack.admin_url, "DELETE FROM billing.accounting_exports WHERE org_id = %s", (org,))
    third = await accounting_export.run(db, settings, peers, org, "", "test-accounting-webhook-3")
    assert (third.exported, third.delivery) == (True, "webhook")
    await asyncio.sleep(1)  # time for a second webhook, were there one (notify polls every 0.2 s)
    assert [r.headers["webhook-id"] for r in receiver.of_org(str(org))] == [request.headers["webhook-id"]]
