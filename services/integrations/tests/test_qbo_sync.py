"""qbo-sync through the integrations service, against the real billing service and the local
QuickBooks Online (tools/fake_quickbooks.py): each test connects its own org to its own fake company.

Invoices go up with the right customer, lines and the snapshot's tax; an accountant's payment in
QuickBooks comes back once (billing status recomputed, audited), whatever the number of passes; 429s
with Retry-After are waited for (or end the pass with its cursor kept), an expired token is refreshed,
payments are read a page at a time, and the first pass reads QBO_SYNC_INITIAL_DAYS back only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC
from decimal import Decimal
from typing import Any

import grpc
import httpx
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.common.v1 import audit_pb2
from cws.integrations.v1 import integrations_pb2 as pb

from services.integrations.tests.helpers import User, connect, integration, owner_of, stub
from tools import testkit

HST_LINE = billing_pb2.LineItem(description="Deep clean", quantity="3", unit_price_cents=4500, tax_rate="13")
EXEMPT_LINE = billing_pb2.LineItem(description="Supplies", quantity="1", unit_price_cents=1000, tax_rate="0")
ODD_LINE = billing_pb2.LineItem(description="Windows", quantity="1", unit_price_cents=5000, tax_rate="7")


class Setup:
    """An org connected to a fresh fake company, and the stubs to drive it."""

    def __init__(self, user: User, realm: str, api: Any, billing: Any, fake: Any) -> None:
        self.user, self.realm, self.api, self.billing, self.fake = user, realm, api, billing, fake

    def finance(self) -> testkit.Metadata:
        return testkit.as_role(self.user.org_id, "FINANCE")

    async def invoice(
        self,
        *lines: billing_pb2.LineItem,
        name: str = "Ada Client",
        email: str = "ada@example.com",
        issue: bool = True,
    ) -> billing_pb2.Invoice:
        created = await self.billing.CreateInvoice(
            billing_pb2.CreateInvoiceRequest(
                client_name=name, client_email=email, items=list(lines or [HST_LINE])
            ),
            metadata=self.finance(),
        )
        if not issue:
            return created.invoice
        issued = await self.billing.IssueInvoice(
            billing_pb2.IssueInvoiceRequest(invoice_id=created.invoice.id), metadata=self.finance()
        )
        return issued.invoice

    async def get(self, invoice_id: str) -> billing_pb2.Invoice:
        found = await self.billing.GetInvoice(
            billing_pb2.GetInvoiceRequest(invoice_id=invoice_id), metadata=self.finance()
        )
        return found.invoice

    async def sync(self) -> pb.SyncQuickBooksResponse:
        response: pb.SyncQuickBooksResponse = await self.api.SyncQuickBooks(
            pb.SyncQuickBooksRequest(force=True), metadata=self.user.md()
        )
        assert not response.skipped, response.skip_reason
        return response

    async def state(self) -> pb.SyncState:
        return (await integration(self.api, self.user, "quickbooks")).sync

    def listed(self, entity: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.fake.listed(entity, self.realm)
        return rows

    def qbo_invoice(self, number: str) -> dict[str, Any]:
        return next(i for i in self.listed("invoices") if i["DocNumber"] == number)

    def oauth_state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.fake.base_url}/_control/oauth/state", timeout=10).json()
        return state

    def requests(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.fake.base_url}/_control/requests", timeout=10).json()
        return [r for r in answer["requests"] if f"/v3/company/{self.realm}/" in r["path"]]


async def setup(integrations: Any, billing_proc: Any, fake: Any, make_org: Any, channels: list[Any]) -> Setup:
    org = await make_org()
    user = owner_of(org)
    company = fake.control("companies", {"name": f"Books of {org.org_id[:8]}"})
    integrations_channel = testkit.signing_channel(integrations.target)
    billing_channel = testkit.signing_channel(billing_proc.target)
    channels.extend([integrations_channel, billing_channel])
    api = stub(integrations_channel)
    connected = await connect(api, user, "quickbooks")
    assert connected.account_id == company["realm_id"] and connected.account_name == company["name"]
    return Setup(user, company["realm_id"], api, billing_pb2_grpc.BillingServiceStub(billing_channel), fake)


async def close(channels: list[Any]) -> None:
    for channel in channels:
        await channel.close()


async def test_issued_invoices_are_pushed_with_customer_lines_and_snapshot_tax(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        first = await s.invoice(HST_LINE, EXEMPT_LINE)
        second = await s.invoice(HST_LINE)  # the same client: one customer
        other = await s.invoice(HST_LINE, name="Bo Client", email="bo@example.com")
        draft = await s.invoice(HST_LINE, issue=False)
        odd = await s.invoice(ODD_LINE, name="Cy Client", email="cy@example.com")

        done = await s.sync()
        assert done.counts["invoices_created"] == 3
        assert done.counts["customers_created"] == 2  # Cy's invoice is skipped before its customer
        assert done.counts["invoices_skipped"] == 1 and done.counts["errors"] == 1

        customers = s.listed("customers")
        assert sorted((c["DisplayName"], c["PrimaryEmailAddr"]["Address"]) for c in customers) == [
            ("Ada Client", "ada@example.com"),
            ("Bo Client", "bo@example.com"),
        ]
        ada = next(c["Id"] for c in customers if c["DisplayName"] == "Ada Client")
        pushed = s.qbo_invoice(first.number)
        assert pushed["CustomerRef"]["value"] == ada
        assert s.qbo_invoice(second.number)["CustomerRef"]["value"] == ada
        lines = [line for line in pushed["Line"] if line["DetailType"] == "SalesItemLineDetail"]
        assert [
            (
                line["Description"],
                line["Amount"],
                line["SalesItemLineDetail"]["Qty"],
                line["SalesItemLineDetail"]["UnitPrice"],
                line["SalesItemLineDetail"]["TaxCodeRef"]["value"],
            )
            for line in lines
        ] == [("Deep clean", 135, 3, 45, "7"), ("Supplies", 10, 1, 10, "9")]
        # The tax is the invoice's snapshot, not QuickBooks' own arithmetic.
        assert Decimal(str(pushed["TxnTaxDetail"]["TotalTax"])) == Decimal(first.tax_cents) / 100
        assert Decimal(str(pushed["TotalAmt"])) == Decimal(first.total_cents) / 100
        assert pushed["GlobalTaxCalculation"] == "TaxExcluded" and pushed["CurrencyRef"]["value"] == "CAD"
        assert first.id in pushed["PrivateNote"] and pushed["DueDate"] == first.due_date
        numbers = {i["DocNumber"] for i in s.listed("invoices")}
        assert numbers == {first.number, second.number, other.number}
        assert draft.id and odd.number not in numbers

        state = await s.state()
        assert odd.number in state.last_error and "7 %" in state.last_error
        assert state.cursor and state.HasField("last_success_at")

        # Nothing changed: the next pass sends nothing.
        before = len([r for r in s.requests() if r["method"] == "POST"])
        # The skipped invoice holds the cursor at its last change: every pass tries it again.
        assert state.cursor == odd.updated_at.ToDatetime(tzinfo=UTC).isoformat()
        again = await s.sync()
        assert again.counts["invoices_created"] == 0 and again.counts.get("customers_created", 0) == 0
        assert again.counts["invoices_skipped"] == 1
        assert len([r for r in s.requests() if r["method"] == "POST"]) == before
        assert len(s.listed("invoices")) == 3 and len(s.listed("customers")) == 2

        # A void here voids the pushed invoice there.
        await s.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(invoice_id=other.id), metadata=s.finance())
        voided = await s.sync()
        assert voided.counts["invoices_voided"] == 1
        assert s.qbo_invoice(other.number)["TotalAmt"] == 0
    finally:
        await close(channels)


async def test_an_accountants_payment_is_applied_once_and_audited(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await s.sync()
        qbo_id = s.qbo_invoice(invoice.number)["Id"]
        partial = s.fake.control("payments", {"realm_id": s.realm, "invoice_id": qbo_id, "amount": 50})
        applied = await s.sync()
        assert applied.counts["payments_applied"] == 1
        after_partial = await s.get(invoice.id)
        assert (after_partial.status, after_partial.paid_cents) == ("PARTIAL", 5000)
        rest = s.fake.control("payments", {"realm_id": s.realm, "invoice_id": qbo_id})  # the balance
        await s.sync()
        await s.sync()  # and once more: nothing is applied twice
        paid = await s.get(invoice.id)
        assert (paid.status, paid.paid_cents, paid.outstanding_cents) == ("PAID", invoice.total_cents, 0)
        refs = sorted(p.provider_ref for p in paid.payments)
        assert refs == sorted(f"qbo:{s.realm}:{p['Payment']['Id']}:{invoice.id}" for p in (partial, rest))
        assert {p.provider for p in paid.payments} == {"quickbooks"}
        rows = await testkit.sql(
            stack.admin_url,
            "SELECT outcome, amount_cents FROM integrations.qbo_payments WHERE org_id = %s ORDER BY amount_cents",
            (s.user.org_id,),
        )
        assert rows == [("applied", 5000), ("applied", invoice.total_cents - 5000)]
        audits = await testkit.sql(
            stack.admin_url,
            "SELECT payload FROM billing.event_outbox WHERE org_id = %s AND subject = 'cws.billing.audit.recorded' "
            "ORDER BY created_at, id",
            (s.user.org_id,),
        )
        recorded = [audit_pb2.AdminAuditRecorded.FromString(bytes(p)) for (p,) in audits]
        external = [r for r in recorded if r.action == "billing.RecordExternalPayment"]
        assert [r.after["status"] for r in external] == ["PARTIAL", "PAID"]
        assert {r.actor for r in external} == {"service:integrations"}
    finally:
        await close(channels)


async def test_a_payment_above_the_balance_due_is_skipped_with_its_reason(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await s.sync()
        # Finance took cash here; the accountant records the whole invoice as paid in QuickBooks.
        await s.billing.RecordManualPayment(
            billing_pb2.RecordManualPaymentRequest(invoice_id=invoice.id, amount_cents=1000, method="cash"),
            metadata=s.finance(),
        )
        qbo_id = s.qbo_invoice(invoice.number)["Id"]
        s.fake.control("payments", {"realm_id": s.realm, "invoice_id": qbo_id})
        done = await s.sync()
        assert done.counts["payments_skipped"] == 1 and not done.counts.get("payments_applied")
        found = await s.get(invoice.id)
        assert (found.status, found.paid_cents) == ("PARTIAL", 1000)
        # The cash payment went up too (test_qbo_payments); the accountant's one was skipped.
        assert done.counts["payments_pushed"] == 1
        rows = await testkit.sql(
            stack.admin_url,
            "SELECT outcome, detail FROM integrations.qbo_payments WHERE org_id = %s ORDER BY outcome",
            (s.user.org_id,),
        )
        [(pushed, _), (outcome, detail)] = rows
        assert pushed == "pushed" and outcome == "skipped" and "above the balance due" in detail
        assert "above the balance due" in (await s.state()).last_error
        again = await s.sync()
        assert not again.counts.get("payments_skipped") and not again.counts.get("errors")
    finally:
        await close(channels)


async def test_a_lost_answer_then_a_rerun_creates_no_second_invoice_or_customer(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        # QuickBooks creates the customer, then the invoice, and both answers are lost (a timeout
        # after the work was done): each pass fails, and the next picks up what exists.
        s.fake.control(
            "faults", {"status": 503, "count": 1, "after": True, "method": "POST", "path": "/customer"}
        )
        await testkit.rpc_error(
            s.api.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md()),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert len(s.listed("customers")) == 1 and s.listed("invoices") == []
        cursor = (await s.state()).cursor
        s.fake.control(
            "faults", {"status": 503, "count": 1, "after": True, "method": "POST", "path": "/invoice"}
        )
        await testkit.rpc_error(
            s.api.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md()),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert len(s.listed("invoices")) == 1
        state = await s.state()
        assert state.cursor == cursor and "unavailable" in state.last_error.lower()
        await asyncio.sleep(1.1)  # the breaker (2 failures, 1 s) lets the next pass through
        done = await s.sync()
        assert done.counts.get("invoices_created", 0) == 0 and done.counts["invoices_adopted"] == 1
        assert len(s.listed("invoices")) == 1 and len(s.listed("customers")) == 1
        assert s.qbo_invoice(invoice.number)["CustomerRef"]["value"] == s.listed("customers")[0]["Id"]
        again = await s.sync()
        assert again.counts["invoices_unchanged"] == 1 and len(s.listed("invoices")) == 1
    finally:
        await close(channels)


async def test_retry_after_is_honoured_and_a_long_one_ends_the_pass_with_its_cursor_kept(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        await s.invoice(HST_LINE)
        s.fake.control("faults", {"status": 429, "count": 2, "retry_after": 1})
        started = time.monotonic()
        done = await s.sync()
        assert time.monotonic() - started >= 2  # two waits of the second QuickBooks asked for
        assert done.counts["invoices_created"] == 1
        assert [r["status"] for r in s.requests()[-20:]].count(429) == 2
        cursor = (await s.state()).cursor
        # Longer than INTEGRATIONS_MAX_RETRY_AFTER_SECONDS (5 here): the pass ends, the cursor stays.
        await s.invoice(HST_LINE)
        s.fake.control("faults", {"status": 429, "count": 1, "retry_after": 60})
        error = await testkit.rpc_error(
            s.api.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md()),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert error.retry_after_seconds == 60
        state = await s.state()
        assert state.cursor == cursor and "rate limited" in state.last_error
        await asyncio.sleep(1.1)  # the breaker's reset
        assert (await s.sync()).counts["invoices_created"] == 1
    finally:
        await close(channels)


async def test_an_expired_access_token_is_refreshed_once_and_the_pass_goes_on(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        await s.invoice(HST_LINE)
        before = s.oauth_state()
        refreshes = sum(1 for r in before["token_requests"] if r["grant_type"] == "refresh_token")
        s.fake.control("expire-tokens")
        done = await s.sync()
        assert done.counts["invoices_created"] == 1
        after = s.oauth_state()
        assert sum(1 for r in after["token_requests"] if r["grant_type"] == "refresh_token") == refreshes + 1
        assert [r["status"] for r in s.requests()].count(401) == 1
    finally:
        await close(channels)


async def test_payments_are_read_a_page_at_a_time(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await s.sync()
        qbo_id = s.qbo_invoice(invoice.number)["Id"]
        # More than a page of 100: 105 payments of a cent each.
        s.fake.control(
            "payments", {"realm_id": s.realm, "invoice_id": qbo_id, "amount": "0.01", "count": 105}
        )
        done = await s.sync()
        assert done.counts["payments_applied"] == 105
        found = await s.get(invoice.id)
        assert found.paid_cents == 105 and len(found.payments) == 105
        queries = [r["query"]["query"] for r in s.requests() if "FROM Payment" in r["query"].get("query", "")]
        assert any("STARTPOSITION 1 MAXRESULTS 100" in q for q in queries)
        assert any("STARTPOSITION 101 MAXRESULTS 100" in q for q in queries)
    finally:
        await close(channels)


async def test_the_first_pass_reads_the_initial_window_only(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any, stack: Any
) -> None:
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        old = await s.invoice(HST_LINE)
        recent = await s.invoice(HST_LINE)
        # The old one last changed 40 days ago (QBO_SYNC_INITIAL_DAYS is 30).
        await testkit.sql(
            stack.admin_url,
            "UPDATE billing.invoices SET updated_at = now() - interval '40 days' WHERE id = %s",
            (old.id,),
        )
        await s.sync()
        assert [i["DocNumber"] for i in s.listed("invoices")] == [recent.number]
    finally:
        await close(channels)


async def test_a_pass_killed_mid_create_then_rerun_makes_no_duplicates(
    integrations: Any,
    billing: Any,
    fake_quickbooks: Any,
    fake_google: Any,
    make_org: Any,
    stack: Any,
    iam: Any,
    booking: Any,
    notify: Any,
) -> None:
    """A second integrations process of our own, SIGKILLed while QuickBooks holds the invoice create's
    answer (the invoice exists there, our mapping row does not), then started again for the rerun."""
    from conftest import integrations_env
    from tools.processes import service_proc

    env = integrations_env(
        stack, iam, booking, billing, notify, fake_google.base_url, fake_quickbooks.base_url
    )
    channels: list[Any] = []
    own = service_proc("integrations", env, stack.work_dir / "logs", label="integrations-qbo-kill")
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        invoice = await s.invoice(HST_LINE)
        await own.start().wait_ready_async()
        s.fake.control("delay", {"seconds": 30, "count": 1, "method": "POST", "path": "/invoice"})
        async with testkit.signing_channel(own.target) as channel:
            killed: Any = stub(channel)
            call = asyncio.ensure_future(
                killed.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md())
            )
            await testkit.eventually(lambda: len(s.listed("invoices")) == 1, timeout=20)
            own.kill()
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call
        assert len(s.listed("invoices")) == 1 and len(s.listed("customers")) == 1
        own = service_proc("integrations", env, stack.work_dir / "logs", label="integrations-qbo-kill")
        await own.start().wait_ready_async()
        async with testkit.signing_channel(own.target) as channel:
            rerun: Any = stub(channel)
            done = await rerun.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md())
        assert not done.skipped, done.skip_reason
        assert done.counts["invoices_adopted"] == 1 and done.counts.get("invoices_created", 0) == 0
        assert [i["DocNumber"] for i in s.listed("invoices")] == [invoice.number]
        assert len(s.listed("customers")) == 1
    finally:
        own.stop()
        await close(channels)


async def test_a_grant_revoked_at_intuit_ends_the_pass_as_revoked(
    integrations: Any, billing: Any, fake_quickbooks: Any, make_org: Any
) -> None:
    """The API answers 401, the one refresh answers invalid_grant: the connection is marked revoked and
    nothing is pushed (the runner tells the owner; test_connections covers that part)."""
    channels: list[Any] = []
    try:
        s = await setup(integrations, billing, fake_quickbooks, make_org, channels)
        await s.invoice(HST_LINE)
        s.fake.control("revoke-grants")
        response = await s.api.SyncQuickBooks(pb.SyncQuickBooksRequest(force=True), metadata=s.user.md())
        assert response.skipped and response.skip_reason == "revoked"
        assert s.listed("invoices") == []
        assert (await integration(s.api, s.user, "quickbooks")).status == "revoked"
    finally:
        await close(channels)
