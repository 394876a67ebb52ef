"""The invoice part of the billing servicer: create, list, read, edit items, issue, send, void, PDF,
the invoices queue and the org's invoicing settings. Finance roles (OWNER, ADMIN, FINANCE) only."""

from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import grpc
from cws.billing.v1 import billing_pb2
from cws.notify.v1 import notify_pb2
from google.protobuf import struct_pb2
from sqlalchemy import func, update

from libs.common import context as request_context
from libs.common.context import service_context
from libs.common.convert import from_ts_or_none, page, parse_id
from libs.common.db import Database, UnitOfWork, unit_of_work
from libs.common.errors import FailedPrecondition, FieldViolation, NotFound, invalid
from libs.common.grpc_client import acting_as, peer_answers
from libs.common.money import format_cents
from libs.common.roles import FINANCE_STAFF
from services.billing import invoices, links, orgs, payments, protos
from services.billing.events import INVOICE_ISSUED, INVOICE_SENT, INVOICE_VOIDED
from services.billing.models import invoices as invoices_table
from services.billing.pdf import render_invoice_pdf
from services.billing.peers import Peers
from services.billing.settings import BillingSettings
from services.billing.status import InvoiceStatus, as_status

SENDABLE = frozenset({InvoiceStatus.SENT, InvoiceStatus.PARTIAL, InvoiceStatus.OVERDUE, InvoiceStatus.PAID})


def parse_date(value: str, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise invalid(field, "must be a date, YYYY-MM-DD") from None


def items_of(request_items: Any) -> list[dict[str, Any]]:
    return [
        {
            "description": item.description,
            "quantity": item.quantity,
            "unit_price_cents": item.unit_price_cents,
            "tax_rate": item.tax_rate,
        }
        for item in request_items
    ]


async def invoice_message(
    uow: UnitOfWork, invoice: invoices.Invoice, *, detail: bool = True
) -> billing_pb2.Invoice:
    summary = (await payments.summaries(uow, [invoice.id])).get(invoice.id)
    paid, refunded = await payments.payments_of(uow, invoice.id) if detail else ([], [])
    message = protos.invoice(invoice, summary, paid, refunded)
    message.org_id = str(uow.org_id)
    return message


async def page_messages(uow: UnitOfWork, found: list[invoices.Invoice]) -> list[billing_pb2.Invoice]:
    summaries = await payments.summaries(uow, [i.id for i in found])
    listed = []
    for invoice in found:
        message = protos.invoice(invoice, summaries.get(invoice.id))
        message.org_id = str(uow.org_id)
        listed.append(message)
    return listed


async def client_invoice(uow: UnitOfWork, invoice_id: str, email: str) -> invoices.Invoice:
    """One of the signed-in client's issued invoices. Another client's invoice, or a draft, answers as if
    it did not exist, so ids cannot be probed."""
    found = await invoices.get(uow, parse_id(invoice_id, "invoice_id"))
    if found.client_email.lower() != email.lower() or found.status is InvoiceStatus.DRAFT:
        raise NotFound("invoice not found", code="invoice_not_found")
    return found


@dataclass(frozen=True)
class PdfJob:
    invoice: invoices.Invoice
    org_name: str
    paid_cents: int
    outstanding_cents: int
    time_zone: str

    async def render(self) -> billing_pb2.Pdf:
        # About 0.15 s of CPU (fpdf2 parses and subsets the font each time): in a worker thread, so the
        # event loop keeps answering webhooks and other calls meanwhile instead of stalling for it.
        document = await asyncio.to_thread(
            functools.partial(
                render_invoice_pdf,
                self.invoice,
                org_name=self.org_name,
                paid_cents=self.paid_cents,
                outstanding_cents=self.outstanding_cents,
                time_zone=self.time_zone,
            )
        )
        return billing_pb2.Pdf(content=document, filename=f"{self.invoice.number or 'invoice'}.pdf")


class InvoicesApi:
    db: Database
    settings: BillingSettings
    peers: Peers

    async def CreateInvoice(
        self, request: billing_pb2.CreateInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateInvoiceResponse:
        request_context.require_role(*FINANCE_STAFF)
        due = parse_date(request.due_date, "due_date")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await invoices.create_draft(
                uow,
                request.currency or (await orgs.get(uow, self.settings, self.peers)).currency,
                request.client_name,
                request.client_email,
                items_of(request.items),
                due_date=due,
                booking_id=request.booking_id or None,
            )
            return billing_pb2.CreateInvoiceResponse(invoice=await invoice_message(uow, invoice))

    async def ListInvoices(
        self, request: billing_pb2.ListInvoicesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListInvoicesResponse:
        request_context.require_role(*FINANCE_STAFF)
        limit, offset = page(request.limit, request.offset)
        statuses = (as_status(request.status.upper()),) if request.status else ()
        since = from_ts_or_none(request.updated_since) if request.HasField("updated_since") else None
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, total = await invoices.list_page(
                uow, statuses=statuses, limit=limit, offset=offset, updated_since=since
            )
            return billing_pb2.ListInvoicesResponse(invoices=await page_messages(uow, found), total=total)

    async def InvoiceQueue(
        self, request: billing_pb2.InvoiceQueueRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.InvoiceQueueResponse:
        request_context.require_role(*FINANCE_STAFF)
        limit, offset = page(request.limit, request.offset)
        statuses = invoices.queue_statuses(request.status or "all")
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, total = await invoices.list_page(
                uow, statuses=statuses, limit=limit, offset=offset, oldest_due_first=True
            )
            return billing_pb2.InvoiceQueueResponse(invoices=await page_messages(uow, found), total=total)

    async def GetInvoice(
        self, request: billing_pb2.GetInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetInvoiceResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await invoices.get(uow, request.invoice_id)
            return billing_pb2.GetInvoiceResponse(invoice=await invoice_message(uow, invoice))

    async def ReplaceInvoiceItems(
        self, request: billing_pb2.ReplaceInvoiceItemsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReplaceInvoiceItemsResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await invoices.replace_items(uow, request.invoice_id, items_of(request.items))
            return billing_pb2.ReplaceInvoiceItemsResponse(invoice=await invoice_message(uow, invoice))

    async def IssueInvoice(
        self, request: billing_pb2.IssueInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.IssueInvoiceResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await invoices.issue(
                uow, request.invoice_id, await orgs.today(uow, self.settings, self.peers)
            )
            paid = invoice.totals.total_cents if invoice.status is InvoiceStatus.PAID else 0
            uow.add_event(
                INVOICE_ISSUED,
                invoices.changed_message(
                    invoice, uow.org_id, paid_cents=paid, outstanding_cents=invoice.totals.total_cents - paid
                ),
            )
            return billing_pb2.IssueInvoiceResponse(invoice=await invoice_message(uow, invoice))

    async def VoidInvoice(
        self, request: billing_pb2.VoidInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.VoidInvoiceResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await invoices.void(uow, request.invoice_id)
            uow.add_event(
                INVOICE_VOIDED,
                invoices.changed_message(invoice, uow.org_id, paid_cents=0, outstanding_cents=0),
            )
            return billing_pb2.VoidInvoiceResponse(invoice=await invoice_message(uow, invoice))

    async def SendInvoice(
        self, request: billing_pb2.SendInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.SendInvoiceResponse:
        """Three steps, so a failure anywhere leaves nothing that lies: (1) a new public link is stored;
        (2) notify takes the email (durably, in its outbox; the dedupe key holds the link's hash, so a
        retried call with the same link is one email); (3) the invoice is marked sent. If (2) fails the
        caller gets the error and an unused link stays behind, harmless; a retry mints another."""
        request_context.require_role(*FINANCE_STAFF)
        org_id = request_context.current_org_id()
        async with unit_of_work(self.db, org_id) as uow:
            invoice = await invoices.get(uow, request.invoice_id)
            if invoice.status not in SENDABLE:
                raise FailedPrecondition(
                    f"cannot send an invoice that is {invoice.status}; issue it first"
                    if invoice.status is InvoiceStatus.DRAFT
                    else f"cannot send an invoice that is {invoice.status}",
                    code="invoice_not_sendable",
                    violations=[FieldViolation("status", f"is {invoice.status}")],
                )
            org = await orgs.get(uow, self.settings, self.peers)
            summary = (await payments.summaries(uow, [invoice.id]))[invoice.id]
            token = await links.mint(uow, invoice.id)
        url = self.settings.invoice_public_url.replace("{token}", token)
        email = invoice_email(invoice, org.name, url, summary.outstanding_cents)
        with (
            peer_answers("notify"),
            acting_as(service_context("billing", str(org_id), request_context.current().request_id)),
        ):
            enqueued = await self.peers.notify.stub.Enqueue(
                notify_pb2.EnqueueRequest(
                    kind="email",
                    # Structured (kind, then ":invoice:<id>"): notify's part of an invoice's timeline
                    # finds its outbox rows by that segment, never by a LIKE on the bare id.
                    dedupe_key=(
                        f"email:invoice_sent:invoice:{invoice.id}:{links.token_hash(token).hex()[:16]}"
                    ),
                    payload=email,
                )
            )
        async with unit_of_work(self.db, org_id) as uow:
            await uow.session.execute(
                update(invoices_table)
                .where(invoices_table.c.id == invoice.id)
                .values(sent_at=func.now(), updated_at=func.now())
            )
            sent = await invoices.get(uow, invoice.id)
            uow.add_event(
                INVOICE_SENT,
                invoices.changed_message(
                    sent,
                    uow.org_id,
                    paid_cents=summary.paid_cents,
                    outstanding_cents=summary.outstanding_cents,
                ),
            )
            return billing_pb2.SendInvoiceResponse(
                invoice=await invoice_message(uow, sent), outbox_event_id=enqueued.event.id
            )

    async def GetInvoicePdf(
        self, request: billing_pb2.GetInvoicePdfRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetInvoicePdfResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            job = await self.pdf_job(uow, parse_id(request.invoice_id, "invoice_id"))
        return billing_pb2.GetInvoicePdfResponse(pdf=await job.render())

    async def pdf_job(self, uow: UnitOfWork, invoice_id: uuid.UUID) -> PdfJob:
        """What an invoice's PDF is drawn from, read in the caller's transaction; drawn after it ends
        (`render`), so no connection is held while fpdf2 works."""
        invoice = await invoices.get(uow, invoice_id)
        org = await orgs.get(uow, self.settings, self.peers)
        summary = (await payments.summaries(uow, [invoice.id]))[invoice.id]
        return PdfJob(invoice, org.name, summary.paid_cents, summary.outstanding_cents, org.time_zone)

    async def GetBillingSettings(
        self, request: billing_pb2.GetBillingSettingsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetBillingSettingsResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            return billing_pb2.GetBillingSettingsResponse(
                settings=self._settings_message(await orgs.get(uow, self.settings, self.peers))
            )

    async def UpdateBillingSettings(
        self, request: billing_pb2.UpdateBillingSettingsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.UpdateBillingSettingsResponse:
        request_context.require_role(*FINANCE_STAFF)
        wanted = request.settings
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found = await orgs.update(
                uow,
                self.settings,
                self.peers,
                tax_rate=wanted.tax_rate if wanted.tax_rate_set else None,
                payment_terms_days=wanted.payment_terms_days if wanted.payment_terms_days_set else None,
                currency=wanted.currency if wanted.currency_set else None,
            )
            return billing_pb2.UpdateBillingSettingsResponse(settings=self._settings_message(found))

    def _settings_message(self, found: orgs.OrgBilling) -> billing_pb2.BillingSettings:
        return billing_pb2.BillingSettings(
            tax_rate=str(found.tax_rate),
            payment_terms_days=found.payment_terms_days,
            currency=found.currency,
            tax_rate_set=found.tax_rate_set,
            payment_terms_days_set=found.payment_terms_days_set,
            currency_set=found.currency_set,
        )


def invoice_email(
    invoice: invoices.Invoice, org_name: str, url: str, outstanding_cents: int
) -> struct_pb2.Struct:
    """The email send enqueues: who, the number, what is owed, and the link (no attachment: the PDF is
    one click away behind the same link)."""
    sender = org_name or "Your cleaning company"
    due = f" by {invoice.due_date.isoformat()}" if invoice.due_date and outstanding_cents > 0 else ""
    owed = (
        f"Amount due: {format_cents(outstanding_cents, invoice.currency)}{due}."
        if outstanding_cents > 0
        else "This invoice is paid in full. Thank you."
    )
    payload = struct_pb2.Struct()
    payload.update(
        {
            "to": invoice.client_email,
            "subject": f"Invoice {invoice.number} from {sender}",
            "text": (
                f"Hello {invoice.client_name},\n\n"
                f"{sender} has sent you invoice {invoice.number} for "
                f"{format_cents(invoice.totals.total_cents, invoice.currency)}.\n{owed}\n\n"
                f"View, download or pay it here:\n{url}\n"
            ),
            "email_type": "invoice_sent",
        }
    )
    return payload
