"""The money part of the billing servicer: manual payments, Stripe refunds and Checkout, reconcile and
the Stripe events view (finance roles), and the Stripe webhook (public; its signature is the
credential)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from cws.billing.v1 import billing_pb2
from cws.booking.v1 import booking_pb2

from libs.common import context as request_context
from libs.common.context import service_context
from libs.common.convert import from_ts_or_none, page, parse_id, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    invalid,
)
from libs.common.grpc_client import acting_as, peer_answers
from libs.common.logs import get_logger
from libs.common.roles import DISPATCH, FINANCE_STAFF
from services.billing import checkout, orgs, payments, protos, reconcile, webhooks
from services.billing.grpc_invoices import client_invoice, invoice_message
from services.billing.invoices import get as get_invoice
from services.billing.peers import Peers
from services.billing.settings import BillingSettings
from services.billing.stripe_api import StripeApi, WebhookRejected

log = get_logger(__name__)
MAX_REASON = 200
CLIENT = request_context.AuthMethod.Value("AUTH_METHOD_CLIENT_PORTAL")


class PaymentsApi:
    db: Database
    settings: BillingSettings
    peers: Peers
    stripe: StripeApi | None
    webhook_arrived: asyncio.Event

    async def RecordManualPayment(
        self, request: billing_pb2.RecordManualPaymentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RecordManualPaymentResponse:
        ctx = request_context.require_role(*FINANCE_STAFF)
        received = from_ts_or_none(request.received_at) if request.HasField("received_at") else None
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            today = await orgs.today(uow, self.settings, self.peers)
            await payments.record_manual_payment(
                uow,
                request.invoice_id,
                request.amount_cents,
                request.method,
                request.reference,
                received,
                ctx.principal_id,
                today,
            )
            return billing_pb2.RecordManualPaymentResponse(
                invoice=await invoice_message(uow, await get_invoice(uow, request.invoice_id))
            )

    async def RecordExternalPayment(
        self, request: billing_pb2.RecordExternalPaymentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RecordExternalPaymentResponse:
        """A payment from an outside ledger (integrations' qbo-sync, as a suite service): applied like a
        manual payment, once per provider_ref (the same ref again answers created=false). A write is
        audited as every admin write is, with the settlement before and after."""
        ctx = request_context.require_service()
        received = from_ts_or_none(request.received_at) if request.HasField("received_at") else None
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            today = await orgs.today(uow, self.settings, self.peers)
            result = await payments.record_external_payment(
                uow,
                invoice_id=request.invoice_id,
                amount_cents=request.amount_cents,
                currency=request.currency,
                provider=request.provider,
                provider_ref=request.provider_ref,
                received_at=received,
                recorded_by=ctx.principal_id,
                today=today,
            )
            if result.created:
                uow.audit_change(
                    {**protos.settlement_dict(result.before), "provider_ref": request.provider_ref},
                    {**protos.settlement_dict(result.after), "provider_ref": request.provider_ref},
                )
            return billing_pb2.RecordExternalPaymentResponse(
                invoice=await invoice_message(uow, await get_invoice(uow, request.invoice_id)),
                created=result.created,
            )

    async def RefundPayment(
        self, request: billing_pb2.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RefundPaymentResponse:
        """Stripe first (no transaction open meanwhile), then the refund row and the invoice's status in
        one transaction. The idempotency key counts the refunds already recorded for the payment, so a
        retry after a timeout gets the same refund and a second partial refund is a new one. Should the
        recording fail after Stripe refunded, Stripe's refund event records it when it arrives."""
        ctx = request_context.require_role(*FINANCE_STAFF)
        api = checkout.stripe_or_unavailable(self.stripe)
        org_id = request_context.current_org_id()
        if request.amount_cents < 0:
            raise invalid("amount_cents", "must be above 0 (or 0 for the whole refundable amount)")
        reason = request.reason.strip()
        if len(reason) > MAX_REASON:
            raise invalid("reason", f"must be at most {MAX_REASON} characters")
        async with unit_of_work(self.db, org_id) as uow:
            payment, remaining = await payments.refundable(uow, request.invoice_id, request.payment_id)
            _, refunds = await payments.payments_of(uow, payment.invoice_id)
        amount = request.amount_cents or remaining
        if remaining <= 0:
            raise FailedPrecondition("this payment is fully refunded", code="payment_not_refundable")
        if amount > remaining:
            raise invalid("amount_cents", f"must not exceed the refundable {remaining} cents")
        already = sum(1 for r in refunds if r.payment_intent_id == payment.provider_ref)
        refund = await api.create_refund(
            payment_intent_id=payment.provider_ref,
            amount_cents=amount,
            metadata={"org_id": str(org_id), "invoice_id": str(payment.invoice_id), "purpose": "invoice"},
            idempotency_key=f"refund:{payment.id}:{already}:{amount}",
        )
        async with unit_of_work(self.db, org_id) as uow:
            today = await orgs.today(uow, self.settings, self.peers)
            await payments.record_refund(
                uow,
                invoice_id=payment.invoice_id,
                stripe_refund_id=refund.id,
                payment_intent_id=payment.provider_ref,
                amount_cents=refund.amount_cents or amount,
                currency=payment.currency,
                status=refund.status
                if refund.status in ("pending", "succeeded", "failed", "canceled")
                else "pending",
                reason=reason,
                requested_by=ctx.principal_id,
                today=today,
            )
            return billing_pb2.RefundPaymentResponse(
                invoice=await invoice_message(uow, await get_invoice(uow, payment.invoice_id))
            )

    async def CreateInvoiceCheckout(
        self, request: billing_pb2.CreateInvoiceCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateInvoiceCheckoutResponse:
        ctx = request_context.current()
        if ctx.auth_method == CLIENT:
            # The client portal: only the signed-in client's own, issued invoice (else NotFound).
            async with unit_of_work(self.db, request_context.current_org_id()) as uow:
                await client_invoice(uow, request.invoice_id, ctx.principal_id)
        else:
            request_context.require_role(*FINANCE_STAFF)
        found = await checkout.for_invoice(
            self.db,
            request_context.current_org_id(),
            self.stripe,
            self.settings,
            parse_id(request.invoice_id, "invoice_id"),
        )
        return billing_pb2.CreateInvoiceCheckoutResponse(checkout=checkout_message(found))

    async def CreateDepositCheckout(
        self, request: billing_pb2.CreateDepositCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateDepositCheckoutResponse:
        """Staff (dispatch or finance) or the booking's own client: the booking is read from booking (as
        billing, in the caller's org), and a client gets NotFound for another client's booking."""
        ctx = request_context.current()
        if ctx.auth_method != CLIENT:
            request_context.require_role(*set(DISPATCH) | set(FINANCE_STAFF))
        if not self.settings.deposits_enabled:
            raise FailedPrecondition("deposits are off (DEPOSITS_ENABLED=false)", code="deposits_disabled")
        booking_id = parse_id(request.booking_id, "booking_id")
        org_id = request_context.current_org_id()
        found = await self.booking_of(org_id, booking_id, ctx.request_id)
        # A client pays only for their own booking; another's answers as if it did not exist.
        if ctx.auth_method == CLIENT and found.client_email.lower() != ctx.principal_id.lower():
            raise NotFound("booking not found", code="booking_not_found")
        if not found.deposit_required or found.deposit_paid:
            raise FailedPrecondition(
                "this booking does not wait for a deposit"
                if not found.deposit_required
                else "the deposit is paid",
                code="deposit_not_due",
            )
        if found.status not in ("pending", "confirmed"):
            raise FailedPrecondition(f"the booking is {found.status}", code="deposit_not_due")
        if found.total_before_tax_cents <= 0 or not found.client_email:
            raise FailedPrecondition("the booking has no price or client email", code="deposit_not_due")
        created = await checkout.for_deposit(
            self.db,
            org_id,
            self.stripe,
            self.settings,
            booking_id=booking_id,
            amount_cents=checkout.deposit_amount(found.total_before_tax_cents, self.settings),
            currency=found.currency or self.settings.invoice_default_currency,
            client_email=found.client_email,
            client_name=found.client_name,
        )
        return billing_pb2.CreateDepositCheckoutResponse(checkout=checkout_message(created))

    async def booking_of(
        self, org_id: uuid.UUID, booking_id: uuid.UUID, request_id: str
    ) -> booking_pb2.Booking:
        """The booking as booking's API gives it, asked as billing in the caller's org (billing never
        speaks for a user: only the gateway does). Its refusals become billing's own answers."""
        with peer_answers("booking"), acting_as(service_context("billing", str(org_id), request_id)):
            response = await self.peers.booking.stub.GetBooking(
                booking_pb2.GetBookingRequest(booking_id=str(booking_id))
            )
        return response.booking

    async def ListReconcileInvoices(
        self, request: billing_pb2.ListReconcileInvoicesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListReconcileInvoicesResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            today = await orgs.today(uow, self.settings, self.peers)
            rows, total = await reconcile.list_invoices(
                uow, request.status or "mismatch", request.limit, request.offset, today
            )
        listed = []
        for row in rows:
            message = billing_pb2.ReconcileRow(
                invoice_id=str(row.id),
                number=row.number or "",
                status=row.status.value,
                expected_status=row.expected_status.value,
                total_cents=row.total_cents,
                paid_cents=row.paid_cents,
                outstanding_cents=row.outstanding_cents,
                succeeded_payments=row.succeeded_payments,
                manual_payments=row.manual_payments,
                stripe_payments=row.stripe_payments,
                mismatch=row.mismatch,
            )
            if row.last_payment_at:
                message.last_payment_at.CopyFrom(to_ts(row.last_payment_at))
            listed.append(message)
        return billing_pb2.ListReconcileInvoicesResponse(invoices=listed, total=total)

    async def ReconcileInvoice(
        self, request: billing_pb2.ReconcileInvoiceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReconcileInvoiceResponse:
        request_context.require_role(*FINANCE_STAFF)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            today = await orgs.today(uow, self.settings, self.peers)
            result = await reconcile.reconcile(uow, request.invoice_id, today)
            # The audit row of this write carries what it changed (seed 002).
            uow.audit_change(protos.settlement_dict(result.before), protos.settlement_dict(result.after))
            invoice = await get_invoice(uow, request.invoice_id)
            return billing_pb2.ReconcileInvoiceResponse(
                invoice=await invoice_message(uow, invoice),
                before=protos.settlement(result.before),
                after=protos.settlement(result.after),
                changed=result.changed,
            )

    async def ListStripeEvents(
        self, request: billing_pb2.ListStripeEventsRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ListStripeEventsResponse:
        request_context.require_role(*FINANCE_STAFF)
        limit, offset = page(request.limit, request.offset)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            rows, total = await webhooks.list_events(
                uow,
                invoice_id=request.invoice_id or None,
                booking_id=request.booking_id or None,
                status=request.status or None,
                limit=limit,
                offset=offset,
            )
        listed = []
        for row in rows:
            message = billing_pb2.StripeEvent(
                event_id=row.event_id,
                type=row.type,
                created_at=to_ts(row.created_at),
                org_id=str(row.org_id),
                invoice_id=str(row.invoice_id) if row.invoice_id else "",
                booking_id=str(row.booking_id) if row.booking_id else "",
                processed_status=row.processed_status,
                last_error=row.last_error or "",
                attempts=row.attempts,
            )
            if row.processed_at:
                message.processed_at.CopyFrom(to_ts(row.processed_at))
            listed.append(message)
        return billing_pb2.ListStripeEventsResponse(events=listed, total=total)

    async def AcceptStripeWebhook(
        self, request: billing_pb2.AcceptStripeWebhookRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.AcceptStripeWebhookResponse:
        """Verify, store, answer: the event's row is committed before the answer, and the work it asks
        for runs after, in the processing loop (webhook_loop.py), so the endpoint answers fast and a
        crash after the answer loses nothing."""
        secret = self.settings.stripe_webhook_secret
        if not secret or self.stripe is None:
            raise Unavailable(
                "Stripe webhooks are not set up here (STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET)",
                code="stripe_not_configured",
            )
        try:
            event = self.stripe.construct_event(
                request.payload, request.signature, secret, self.settings.stripe_webhook_tolerance_seconds
            )
        except WebhookRejected as rejected:
            field = "body" if "JSON" in rejected.reason else "Stripe-Signature"
            raise InvalidArgument(
                f"the webhook was refused: {rejected.reason}",
                code="webhook_rejected",
                violations=[FieldViolation(field, rejected.reason)],
            ) from None
        stored = webhooks.extract(event)
        if stored is None:
            log.info(
                "stripe_event_ignored", event_id=str(event.get("id", "")), type=str(event.get("type", ""))
            )
            return billing_pb2.AcceptStripeWebhookResponse(
                event_id=str(event.get("id", "")), outcome="ignored"
            )
        async with unit_of_work(self.db, stored.org_id) as uow:
            new = await webhooks.store(uow, stored)
        if new:
            self.webhook_arrived.set()
        return billing_pb2.AcceptStripeWebhookResponse(
            event_id=stored.event_id, duplicate=not new, outcome="stored"
        )


def checkout_message(found: checkout.Checkout) -> billing_pb2.Checkout:
    return billing_pb2.Checkout(
        checkout_url=found.url,
        session_id=found.session_id,
        amount_cents=found.amount_cents,
        currency=found.currency,
    )
