"""The billing process through its gRPC API, against real Postgres, NATS, booking, notify and the local
Stripe: the service answers, roles are enforced, and the invoice lifecycle works end to end."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from cws.billing.v1 import billing_pb2, billing_pb2_grpc

from tools.testkit import as_role, rpc_error, signing_channel

LINE = billing_pb2.LineItem(description="Deep clean", quantity="3", unit_price_cents=4500, tax_rate="13")


async def test_finance_creates_issues_and_pays_an_invoice_by_hand(billing: Any) -> None:
    org = str(uuid.uuid4())
    async with signing_channel(billing.target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        created = await stub.CreateInvoice(
            billing_pb2.CreateInvoiceRequest(
                client_name="Ada Client", client_email="ada@example.com", items=[LINE]
            ),
            metadata=as_role(org, "FINANCE"),
        )
        invoice = created.invoice
        assert (invoice.status, invoice.currency, invoice.total_cents, invoice.tax_cents) == (
            "DRAFT",
            "CAD",
            15255,
            1755,
        )
        issued = await stub.IssueInvoice(
            billing_pb2.IssueInvoiceRequest(invoice_id=invoice.id), metadata=as_role(org, "FINANCE")
        )
        assert issued.invoice.number == "INV-000001" and issued.invoice.status == "SENT"
        paid = await stub.RecordManualPayment(
            billing_pb2.RecordManualPaymentRequest(invoice_id=invoice.id, amount_cents=15255, method="cash"),
            metadata=as_role(org, "FINANCE"),
        )
        assert (paid.invoice.status, paid.invoice.paid_cents, paid.invoice.outstanding_cents) == (
            "PAID",
            15255,
            0,
        )
        assert [p.method for p in paid.invoice.payments] == ["cash"]
        # A dispatcher is not finance; another org does not see the invoice at all.
        await rpc_error(
            stub.GetInvoice(
                billing_pb2.GetInvoiceRequest(invoice_id=invoice.id), metadata=as_role(org, "DISPATCHER")
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await rpc_error(
            stub.GetInvoice(
                billing_pb2.GetInvoiceRequest(invoice_id=invoice.id),
                metadata=as_role(str(uuid.uuid4()), "OWNER"),
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        pdf = await stub.GetInvoicePdf(
            billing_pb2.GetInvoicePdfRequest(invoice_id=invoice.id), metadata=as_role(org, "FINANCE")
        )
        assert pdf.pdf.content.startswith(b"%PDF") and pdf.pdf.filename == "INV-000001.pdf"
