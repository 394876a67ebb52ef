"""The billing servicer: proto in, domain call, proto out. No SQL and no business rules here.

It is assembled from per-area parts (grpc_invoices.py: invoices, the queue, settings; grpc_payments.py:
payments, refunds, Checkout, reconcile, Stripe events and the webhook; grpc_accounting.py: the
accounting CSV and export; grpc_finance.py: expenses, instalments and tax reports;
grpc_subscription.py: plans, pause and resume; grpc_usage.py: the usage report); this module adds the public
view by token, the client portal, and the scheduled calls of the jobs service."""

from __future__ import annotations

import asyncio

import grpc
from cws.billing.v1 import billing_pb2, billing_pb2_grpc
from cws.booking.v1 import booking_pb2

from libs.common import context as request_context
from libs.common.context import AuthMethod, service_context
from libs.common.convert import page
from libs.common.db import Database, unit_of_work
from libs.common.errors import PermissionDenied, Unauthenticated
from libs.common.grpc_client import acting_as, peer_answers
from libs.common.roles import MANAGERS
from services.billing import checkout, from_bookings, invoices, links, orgs
from services.billing.events import INVOICE_OVERDUE
from services.billing.grpc_accounting import AccountingApi
from services.billing.grpc_finance import FinanceApi
from services.billing.grpc_invoices import (
    InvoicesApi,
    client_invoice,
    invoice_message,
    page_messages,
)
from services.billing.grpc_payments import PaymentsApi, checkout_message
from services.billing.grpc_subscription import SubscriptionApi
from services.billing.grpc_usage import UsageApi
from services.billing.peers import Peers
from services.billing.settings import BillingSettings
from services.billing.status import as_status
from services.billing.stripe_api import StripeApi

CLIENT = AuthMethod.Value("AUTH_METHOD_CLIENT_PORTAL")
SERVICE = AuthMethod.Value("AUTH_METHOD_SERVICE")
BACKFILL_PAGE = 200


class BillingServicer(
    InvoicesApi,
    PaymentsApi,
    AccountingApi,
    FinanceApi,
    SubscriptionApi,
    UsageApi,
    billing_pb2_grpc.BillingServiceServicer,
):
    def __init__(
        self,
        db: Database,
        settings: BillingSettings,
        peers: Peers,
        stripe: StripeApi | None,
        webhook_arrived: asyncio.Event,
    ) -> None:
        self.db = db
        self.settings = settings
        self.peers = peers
        self.stripe = stripe
        self.webhook_arrived = webhook_arrived

    # --- public, by the token of an emailed link ---------------------------------------------------

    async def GetPublicInvoice(
        self, request: billing_pb2.GetPublicInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetPublicInvoiceResponse:
        async with unit_of_work(self.db) as uow:
            invoice = await invoices.get(uow, await links.resolve(uow, request.token))
            message = await invoice_message(uow, invoice)
            return billing_pb2.GetPublicInvoiceResponse(invoice=_for_client(message))

    async def GetPublicInvoicePdf(
        self, request: billing_pb2.GetPublicInvoicePdfRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetPublicInvoicePdfResponse:
        async with unit_of_work(self.db) as uow:
            job = await self.pdf_job(uow, await links.resolve(uow, request.token))
        return billing_pb2.GetPublicInvoicePdfResponse(pdf=await job.render())

    async def CreatePublicInvoiceCheckout(
        self, request: billing_pb2.CreatePublicInvoiceCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreatePublicInvoiceCheckoutResponse:
        async with unit_of_work(self.db) as uow:
            invoice_id = await links.resolve(uow, request.token)
            org_id = uow.org_id
        assert org_id is not None
        found = await checkout.for_invoice(self.db, org_id, self.stripe, self.settings, invoice_id)
        return billing_pb2.CreatePublicInvoiceCheckoutResponse(checkout=checkout_message(found))

    # --- the client portal ------------------------------------------------------------------------

    def _client_email(self) -> str:
        ctx = request_context.current()
        if ctx.auth_method != CLIENT:
            raise PermissionDenied("only a signed-in client may call this", code="client_only")
        if not ctx.principal_id:
            raise Unauthenticated("portal credential names nobody", code="invalid_portal_token")
        return ctx.principal_id

    async def ListClientInvoices(
        self, request: billing_pb2.ListClientInvoicesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListClientInvoicesResponse:
        email = self._client_email()
        limit, offset = page(request.limit, request.offset)
        statuses = (as_status(request.status.upper()),) if request.status else ()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            found, total = await invoices.list_page(
                uow, statuses=statuses, client_email=email, exclude_drafts=True, limit=limit, offset=offset
            )
            listed = billing_pb2.ListClientInvoicesResponse(
                invoices=await page_messages(uow, found), total=total
            )
        for message in listed.invoices:
            _for_client(message)
        return listed

    async def GetClientInvoice(
        self, request: billing_pb2.GetClientInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetClientInvoiceResponse:
        email = self._client_email()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await client_invoice(uow, request.invoice_id, email)
            return billing_pb2.GetClientInvoiceResponse(
                invoice=_for_client(await invoice_message(uow, invoice))
            )

    async def GetClientInvoicePdf(
        self, request: billing_pb2.GetClientInvoicePdfRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetClientInvoicePdfResponse:
        email = self._client_email()
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            invoice = await client_invoice(uow, request.invoice_id, email)
            job = await self.pdf_job(uow, invoice.id)
        return billing_pb2.GetClientInvoicePdfResponse(pdf=await job.render())

    # --- scheduled (the jobs service, per org) ----------------------------------------------------

    async def MarkOverdue(
        self, request: billing_pb2.MarkOverdueRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.MarkOverdueResponse:
        request_context.require_role(*MANAGERS)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            today = await orgs.today(uow, self.settings, self.peers)
            marked = await invoices.mark_overdue(uow, today)
            for invoice in marked:
                uow.add_event(
                    INVOICE_OVERDUE,
                    invoices.changed_message(
                        invoice, uow.org_id, paid_cents=0, outstanding_cents=invoice.totals.total_cents
                    ),
                )
        return billing_pb2.MarkOverdueResponse(marked=len(marked))

    async def BackfillFromBookings(
        self, request: billing_pb2.BackfillFromBookingsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.BackfillFromBookingsResponse:
        """Drafts for every completed booking that has no invoice, read page by page from booking's API
        (as billing, in the caller's org). Each page is its own transaction: a backfill cut short keeps
        what it made, and the next run (or the event) skips it."""
        ctx = request_context.require_role(*MANAGERS)
        org_id = request_context.current_org_id()
        scanned = created = 0
        offset = 0
        while True:
            query = booking_pb2.ListBookingsRequest(
                status=from_bookings.COMPLETED, limit=BACKFILL_PAGE, offset=offset
            )
            if request.HasField("since"):
                query.from_time.CopyFrom(request.since)
            with peer_answers("booking"), acting_as(service_context("billing", str(org_id), ctx.request_id)):
                listed = await self.peers.booking.stub.ListBookings(query)
            async with unit_of_work(self.db, org_id) as uow:
                org = await orgs.get(uow, self.settings, self.peers)
                for booking in listed.bookings:
                    scanned += 1
                    made = await from_bookings.draft_for_booking(
                        uow, booking, org, orgs.today_in(booking.time_zone or org.time_zone)
                    )
                    created += made is not None
            offset += len(listed.bookings)
            if len(listed.bookings) < BACKFILL_PAGE or offset >= listed.total:
                break
        return billing_pb2.BackfillFromBookingsResponse(scanned=scanned, created=created)


def _for_client(message: billing_pb2.Invoice) -> billing_pb2.Invoice:
    """What a client sees of an invoice: no payment references (cheque numbers, Stripe ids) and no
    refund ids, which are finance's business."""
    for paid in message.payments:
        paid.reference = ""
        paid.provider_ref = ""
    for refund in message.refunds:
        refund.stripe_refund_id = ""
        refund.payment_intent_id = ""
    return message
