"""Billing at the edge (services/billing): invoices, payments, refunds, Checkout links, the invoices
queue, reconcile and the Stripe events view for finance staff; the public invoice view by token; the
Stripe webhook; the client portal's invoices.

Roles (seed 002): invoices, payments, reconcile and the queue need finance credentials or higher
(OWNER, ADMIN, FINANCE; Basic Auth's accountant pair signs in as FINANCE); a deposit link, which
dispatch sends with a booking, also DISPATCHER. Billing checks every role again, and confines every
call to the caller's org: another org's ids answer 404.

The webhook, `POST /v1/webhooks/stripe`, hands billing the body exactly as received: its signature
covers those bytes, so nothing here parses, re-encodes or even decodes them."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from cws.billing.v1 import billing_pb2
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import ORJSONResponse, Response
from pydantic import AwareDatetime, Field, field_validator

from gateway.access import ADMIN, PORTAL, PUBLIC
from gateway.deps import require_roles
from gateway.portal_auth import require_client
from gateway.principal import Principal
from gateway.problems import ProblemError
from gateway.routes.convert import optional_time
from gateway.schemas import Email, Strict
from gateway.stubs import Billing
from libs.common.convert import to_ts
from libs.common.roles import DISPATCH, FINANCE_STAFF, MANAGERS

router = APIRouter(tags=["billing"])
Id = Annotated[str, Path(max_length=64)]
# A public link's token: 43 URL-safe base64 characters (services/billing/links.py).
Token = Annotated[str, Path(max_length=64, description="the token of an emailed invoice link")]
Cents = Annotated[
    int, Field(ge=1, le=10_000_000_000, description="integer cents, above 0 (at most 100 million)")
]
MAX_WEBHOOK_BYTES = 256 * 1024
FINANCE = Depends(require_roles(*FINANCE_STAFF))
LINK = Depends(require_roles(*dict.fromkeys((*DISPATCH, *FINANCE_STAFF))))


class LineIn(Strict):
    description: Annotated[str, Field(min_length=1, max_length=500)]
    quantity: Annotated[str, Field(min_length=1, max_length=20, description='decimal, e.g. "1.5"')]
    unit_price_cents: Annotated[int, Field(ge=0, le=10_000_000)]
    tax_rate: Annotated[str, Field(min_length=1, max_length=10, description='percent, e.g. "13" or "9.975"')]

    @field_validator("quantity", "tax_rate", mode="before")
    @classmethod
    def _decimal_text(cls, value: object) -> object:
        # JSON numbers are accepted as written ("quantity": 2); billing parses the decimal.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Lines = Annotated[list[LineIn], Field(min_length=1, max_length=100)]


class InvoiceIn(Strict):
    client_name: Annotated[str, Field(min_length=1, max_length=200)]
    client_email: Email
    items: Lines
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    due_date: date | None = None
    booking_id: Annotated[str, Field(max_length=64)] | None = None


class ItemsIn(Strict):
    items: Lines


class PaymentIn(Strict):
    amount_cents: Cents
    method: Literal["cash", "etransfer", "cheque", "other"]
    reference: Annotated[str, Field(max_length=200)] = ""
    received_at: AwareDatetime | None = None


class RefundIn(Strict):
    # Omitted: the whole refundable amount.
    amount_cents: Cents | None = None
    reason: Annotated[str, Field(max_length=200)] = ""


class BillingSettingsIn(Strict):
    tax_rate: Annotated[str, Field(min_length=1, max_length=10)] | None = None
    payment_terms_days: Annotated[int, Field(ge=0, le=365)] | None = None
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = None


def _lines(items: list[LineIn]) -> list[billing_pb2.LineItem]:
    return [
        billing_pb2.LineItem(
            description=i.description,
            quantity=i.quantity,
            unit_price_cents=i.unit_price_cents,
            tax_rate=i.tax_rate,
        )
        for i in items
    ]


def invoice_view(message: billing_pb2.Invoice, *, for_client: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": message.id,
        "number": message.number or None,
        "status": message.status,
        "currency": message.currency,
        "client_name": message.client_name,
        "client_email": message.client_email,
        "booking_id": message.booking_id or None,
        "issued_at": optional_time(message, "issued_at"),
        "due_date": message.due_date or None,
        "sent_at": optional_time(message, "sent_at"),
        "subtotal_cents": message.subtotal_cents,
        "taxable_subtotal_cents": message.taxable_subtotal_cents,
        "tax_cents": message.tax_cents,
        "tax_rate_basis": message.tax_rate_basis,
        "total_cents": message.total_cents,
        "paid_cents": message.paid_cents,
        "outstanding_cents": message.outstanding_cents,
        "items": [
            {
                "description": i.description,
                "quantity": i.quantity,
                "unit_price_cents": i.unit_price_cents,
                "tax_rate": i.tax_rate,
                "amount_cents": i.amount_cents,
            }
            for i in message.items
        ],
        "payments": [
            {
                "id": p.id,
                "provider": p.provider,
                "method": p.method,
                "amount_cents": p.amount_cents,
                "currency": p.currency,
                "status": p.status,
                "received_at": optional_time(p, "received_at"),
                **({} if for_client else {"reference": p.reference, "provider_ref": p.provider_ref or None}),
            }
            for p in message.payments
        ],
        "refunds": [
            {
                "id": r.id,
                "amount_cents": r.amount_cents,
                "status": r.status,
                "created_at": optional_time(r, "created_at"),
                **(
                    {}
                    if for_client
                    else {
                        "stripe_refund_id": r.stripe_refund_id,
                        "payment_intent_id": r.payment_intent_id,
                        "reason": r.reason,
                    }
                ),
            }
            for r in message.refunds
        ],
    }
    if not for_client:
        view["created_at"] = optional_time(message, "created_at")
    return view


def checkout_view(message: billing_pb2.Checkout) -> dict[str, Any]:
    return {
        "checkout_url": message.checkout_url,
        "session_id": message.session_id,
        "amount_cents": message.amount_cents,
        "currency": message.currency,
    }


def pdf_response(message: billing_pb2.Pdf) -> Response:
    return Response(
        message.content,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{message.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


PDF: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {}}, "description": "the invoice as a PDF"}
}

# --- finance: invoices -------------------------------------------------------------------------------


@router.post("/v1/admin/invoices", status_code=201, dependencies=[ADMIN, FINANCE], summary="A DRAFT invoice")
async def create_invoice(body: InvoiceIn, billing: Billing) -> dict[str, Any]:
    response = await billing.CreateInvoice(
        billing_pb2.CreateInvoiceRequest(
            client_name=body.client_name,
            client_email=body.client_email,
            items=_lines(body.items),
            currency=body.currency or "",
            due_date=body.due_date.isoformat() if body.due_date else "",
            booking_id=body.booking_id or "",
        )
    )
    return invoice_view(response.invoice)


@router.get("/v1/admin/invoices", dependencies=[ADMIN, FINANCE], summary="The org's invoices, newest first")
async def list_invoices(
    billing: Billing,
    status: Literal["DRAFT", "SENT", "PARTIAL", "PAID", "OVERDUE", "VOID"] | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    response = await billing.ListInvoices(
        billing_pb2.ListInvoicesRequest(status=status or "", limit=limit, offset=offset)
    )
    return {"total": response.total, "items": [invoice_view(i) for i in response.invoices]}


@router.get("/v1/admin/invoices/{invoice_id}", dependencies=[ADMIN, FINANCE], summary="One invoice")
async def get_invoice(invoice_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.GetInvoice(billing_pb2.GetInvoiceRequest(invoice_id=invoice_id))
    return invoice_view(response.invoice)


@router.put(
    "/v1/admin/invoices/{invoice_id}/items",
    dependencies=[ADMIN, FINANCE],
    summary="Replace a DRAFT's items; its totals are recomputed (409 invoice_not_draft otherwise)",
)
async def replace_items(invoice_id: Id, body: ItemsIn, billing: Billing) -> dict[str, Any]:
    response = await billing.ReplaceInvoiceItems(
        billing_pb2.ReplaceInvoiceItemsRequest(invoice_id=invoice_id, items=_lines(body.items))
    )
    return invoice_view(response.invoice)


@router.post(
    "/v1/admin/invoices/{invoice_id}/issue",
    dependencies=[ADMIN, FINANCE],
    summary="DRAFT → SENT: the org's next number, the tax snapshot frozen",
)
async def issue_invoice(invoice_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(invoice_id=invoice_id))
    return invoice_view(response.invoice)


@router.post(
    "/v1/admin/invoices/{invoice_id}/send",
    dependencies=[ADMIN, FINANCE],
    summary="Email the client a link to the issued invoice (through notify's outbox)",
)
async def send_invoice(invoice_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.SendInvoice(billing_pb2.SendInvoiceRequest(invoice_id=invoice_id))
    return {**invoice_view(response.invoice), "outbox_event_id": response.outbox_event_id}


@router.post(
    "/v1/admin/invoices/{invoice_id}/void",
    dependencies=[ADMIN, FINANCE],
    summary="Cancel an invoice nobody has paid (DRAFT, SENT or OVERDUE); its number stays taken",
)
async def void_invoice(invoice_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(invoice_id=invoice_id))
    return invoice_view(response.invoice)


@router.get(
    "/v1/admin/invoices/{invoice_id}/pdf",
    dependencies=[ADMIN, FINANCE],
    response_class=Response,
    responses=PDF,
    summary="The issued invoice as a PDF (409 invoice_not_issued for a DRAFT)",
)
async def invoice_pdf(invoice_id: Id, billing: Billing) -> Response:
    return pdf_response(
        (await billing.GetInvoicePdf(billing_pb2.GetInvoicePdfRequest(invoice_id=invoice_id))).pdf
    )


@router.post(
    "/v1/admin/invoices/{invoice_id}/payments",
    status_code=201,
    dependencies=[ADMIN, FINANCE],
    summary="Record a manual payment (cash, e-transfer, cheque); at most the outstanding balance",
)
async def record_payment(invoice_id: Id, body: PaymentIn, billing: Billing) -> dict[str, Any]:
    message = billing_pb2.RecordManualPaymentRequest(
        invoice_id=invoice_id, amount_cents=body.amount_cents, method=body.method, reference=body.reference
    )
    if body.received_at is not None:
        message.received_at.CopyFrom(to_ts(body.received_at))
    response = await billing.RecordManualPayment(message)
    return invoice_view(response.invoice)


@router.post(
    "/v1/admin/invoices/{invoice_id}/payments/{payment_id}/refund",
    dependencies=[ADMIN, FINANCE],
    summary="Refund a Stripe payment, in full or in part, through Stripe",
)
async def refund_payment(
    invoice_id: Id, payment_id: Id, billing: Billing, body: RefundIn | None = None
) -> dict[str, Any]:
    body = body or RefundIn()
    response = await billing.RefundPayment(
        billing_pb2.RefundPaymentRequest(
            invoice_id=invoice_id,
            payment_id=payment_id,
            amount_cents=body.amount_cents or 0,
            reason=body.reason,
        )
    )
    return invoice_view(response.invoice)


@router.post(
    "/v1/admin/invoices/{invoice_id}/checkout",
    dependencies=[ADMIN, FINANCE],
    summary="A Stripe Checkout link for the outstanding balance (503 with Retry-After while Stripe is away)",
)
async def invoice_checkout(invoice_id: Id, billing: Billing) -> dict[str, Any]:
    return checkout_view(
        (
            await billing.CreateInvoiceCheckout(
                billing_pb2.CreateInvoiceCheckoutRequest(invoice_id=invoice_id)
            )
        ).checkout
    )


@router.post(
    "/v1/admin/bookings/{booking_id}/deposit/checkout",
    dependencies=[ADMIN, LINK],
    summary="A Stripe Checkout link for a booking's deposit (DEPOSITS_ENABLED)",
)
async def deposit_checkout(booking_id: Id, billing: Billing) -> dict[str, Any]:
    return checkout_view(
        (
            await billing.CreateDepositCheckout(
                billing_pb2.CreateDepositCheckoutRequest(booking_id=booking_id)
            )
        ).checkout
    )


@router.post(
    "/v1/admin/invoices/backfill",
    dependencies=[ADMIN, Depends(require_roles(*MANAGERS))],
    summary="Draft invoices for completed bookings that have none (bookings from before billing ran)",
)
async def backfill(billing: Billing, since: AwareDatetime | None = None) -> dict[str, int]:
    message = billing_pb2.BackfillFromBookingsRequest()
    if since is not None:
        message.since.CopyFrom(to_ts(since))
    response = await billing.BackfillFromBookings(message)
    return {"scanned": response.scanned, "created": response.created}


@router.get("/v1/admin/queue/invoices", dependencies=[ADMIN, FINANCE], summary="Overdue and unpaid invoices")
async def invoices_queue(
    billing: Billing,
    status: Literal["overdue", "unpaid", "all"] = "all",
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    response = await billing.InvoiceQueue(
        billing_pb2.InvoiceQueueRequest(status=status, limit=limit, offset=offset)
    )
    return {"status": status, "total": response.total, "items": [invoice_view(i) for i in response.invoices]}


@router.get(
    "/v1/admin/finance/settings", dependencies=[ADMIN, FINANCE], summary="The org's invoicing defaults"
)
async def get_settings(billing: Billing) -> dict[str, Any]:
    return _settings_view(
        (await billing.GetBillingSettings(billing_pb2.GetBillingSettingsRequest())).settings
    )


@router.put(
    "/v1/admin/finance/settings",
    dependencies=[ADMIN, FINANCE],
    summary="Change the org's tax rate, payment terms and currency for invoices made from now on",
)
async def put_settings(body: BillingSettingsIn, billing: Billing) -> dict[str, Any]:
    message = billing_pb2.BillingSettings(
        tax_rate=body.tax_rate or "",
        tax_rate_set=body.tax_rate is not None,
        payment_terms_days=body.payment_terms_days or 0,
        payment_terms_days_set=body.payment_terms_days is not None,
        currency=body.currency or "",
        currency_set=body.currency is not None,
    )
    response = await billing.UpdateBillingSettings(billing_pb2.UpdateBillingSettingsRequest(settings=message))
    return _settings_view(response.settings)


def _settings_view(message: billing_pb2.BillingSettings) -> dict[str, Any]:
    return {
        "tax_rate": message.tax_rate,
        "payment_terms_days": message.payment_terms_days,
        "currency": message.currency,
        "tax_rate_is_default": not message.tax_rate_set,
        "payment_terms_days_is_default": not message.payment_terms_days_set,
        "currency_is_default": not message.currency_set,
    }


# --- finance: reconcile (seed 002) -----------------------------------------------------------------


@router.get(
    "/v1/admin/finance/reconcile/invoices",
    dependencies=[ADMIN, FINANCE],
    summary="Invoices whose status and payments disagree (status=mismatch) or all issued ones",
)
async def reconcile_list(
    billing: Billing,
    status: Literal["mismatch", "all"] = "mismatch",
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    response = await billing.ListReconcileInvoices(
        billing_pb2.ListReconcileInvoicesRequest(status=status, limit=limit, offset=offset)
    )
    return {
        "status": status,
        "total": response.total,
        "items": [
            {
                "invoice_id": row.invoice_id,
                "invoice_number": row.number or None,
                "status": row.status,
                "expected_status": row.expected_status,
                "mismatch": row.mismatch,
                "total_cents": row.total_cents,
                "paid_cents": row.paid_cents,
                "outstanding_cents": row.outstanding_cents,
                "succeeded_payments_count": row.succeeded_payments,
                "manual_payments_count": row.manual_payments,
                "stripe_payments_count": row.stripe_payments,
                "last_payment_at": optional_time(row, "last_payment_at"),
                "actions": {"reconcile": f"/v1/admin/finance/invoices/{row.invoice_id}/reconcile"},
            }
            for row in response.invoices
        ],
    }


@router.post(
    "/v1/admin/finance/invoices/{invoice_id}/reconcile",
    dependencies=[ADMIN, FINANCE],
    summary="Recompute an invoice's status from its succeeded payments (idempotent; audited before/after)",
)
async def reconcile_invoice(invoice_id: Id, billing: Billing) -> dict[str, Any]:
    response = await billing.ReconcileInvoice(billing_pb2.ReconcileInvoiceRequest(invoice_id=invoice_id))

    def settlement(value: billing_pb2.Settlement) -> dict[str, Any]:
        return {
            "status": value.status,
            "paid_cents": value.paid_cents,
            "outstanding_cents": value.outstanding_cents,
            "succeeded_payments_count": value.succeeded_payments,
        }

    return {
        "invoice": invoice_view(response.invoice),
        "before": settlement(response.before),
        "after": settlement(response.after),
        "changed": response.changed,
    }


@router.get(
    "/v1/admin/finance/reconcile/stripe-events",
    dependencies=[ADMIN, FINANCE],
    summary="Stripe webhook events received for the org, newest first (never the payload)",
)
async def stripe_events(
    billing: Billing,
    invoice_id: Annotated[str, Query(max_length=64)] = "",
    booking_id: Annotated[str, Query(max_length=64)] = "",
    status: Literal["pending", "processed", "failed", "ignored"] | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> dict[str, Any]:
    response = await billing.ListStripeEvents(
        billing_pb2.ListStripeEventsRequest(
            invoice_id=invoice_id, booking_id=booking_id, status=status or "", limit=limit, offset=offset
        )
    )
    return {
        "total": response.total,
        "items": [
            {
                "event_id": e.event_id,
                "type": e.type,
                "created_at": optional_time(e, "created_at"),
                "org_id": e.org_id,
                "invoice_id": e.invoice_id or None,
                "booking_id": e.booking_id or None,
                "processed_status": e.processed_status,
                "last_error": e.last_error or None,
            }
            for e in response.events
        ],
    }


# --- public: an emailed link, and Stripe's webhook --------------------------------------------------


@router.get("/v1/public/invoices/{token}", dependencies=[PUBLIC], summary="An invoice by its emailed link")
async def public_invoice(token: Token, billing: Billing) -> dict[str, Any]:
    response = await billing.GetPublicInvoice(billing_pb2.GetPublicInvoiceRequest(token=token))
    return invoice_view(response.invoice, for_client=True)


@router.get(
    "/v1/public/invoices/{token}/pdf",
    dependencies=[PUBLIC],
    response_class=Response,
    responses=PDF,
    summary="The PDF of an invoice by its emailed link",
)
async def public_invoice_pdf(token: Token, billing: Billing) -> Response:
    return pdf_response(
        (await billing.GetPublicInvoicePdf(billing_pb2.GetPublicInvoicePdfRequest(token=token))).pdf
    )


@router.post(
    "/v1/public/invoices/{token}/checkout",
    dependencies=[PUBLIC],
    summary="Pay an invoice by its emailed link: a Stripe Checkout link for what is owed",
)
async def public_invoice_checkout(token: Token, billing: Billing) -> dict[str, Any]:
    return checkout_view(
        (
            await billing.CreatePublicInvoiceCheckout(
                billing_pb2.CreatePublicInvoiceCheckoutRequest(token=token)
            )
        ).checkout
    )


@router.post(
    "/v1/webhooks/stripe",
    dependencies=[PUBLIC],
    summary="Stripe's webhook endpoint: the event is verified (Stripe-Signature) and stored before 200",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    },
)
async def stripe_webhook(
    request: Request,
    billing: Billing,
    stripe_signature: Annotated[str, Header(max_length=2048)] = "",
) -> ORJSONResponse:
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ProblemError(413, "payload_too_large", f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes")
    if not stripe_signature:
        raise ProblemError(
            400,
            "webhook_rejected",
            "the Stripe-Signature header is missing",
            errors=[{"field": "Stripe-Signature", "message": "is required"}],
        )
    response = await billing.AcceptStripeWebhook(
        billing_pb2.AcceptStripeWebhookRequest(payload=body, signature=stripe_signature)
    )
    return ORJSONResponse(
        {
            "received": True,
            "event_id": response.event_id,
            "duplicate": response.duplicate,
            "outcome": response.outcome,
        }
    )


# --- the client portal -----------------------------------------------------------------------------

CLIENT_AUTH = "Client portal session: the `client_session` cookie or `Authorization: Bearer <session>`."


@router.get(
    "/v1/client/portal/invoices",
    dependencies=[PORTAL],
    description=CLIENT_AUTH,
    summary="The signed-in client's invoices (issued ones), newest first",
)
async def client_invoices(
    billing: Billing,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
    client: Principal = Depends(require_client),
) -> dict[str, Any]:
    response = await billing.ListClientInvoices(
        billing_pb2.ListClientInvoicesRequest(limit=limit, offset=offset)
    )
    return {
        "total": response.total,
        "invoices": [invoice_view(i, for_client=True) for i in response.invoices],
    }


@router.get(
    "/v1/client/portal/invoices/{invoice_id}",
    dependencies=[PORTAL],
    description=CLIENT_AUTH,
    summary="One of the signed-in client's invoices",
)
async def client_invoice(
    invoice_id: Id, billing: Billing, client: Principal = Depends(require_client)
) -> dict[str, Any]:
    response = await billing.GetClientInvoice(billing_pb2.GetClientInvoiceRequest(invoice_id=invoice_id))
    return invoice_view(response.invoice, for_client=True)


@router.get(
    "/v1/client/portal/invoices/{invoice_id}/pdf",
    dependencies=[PORTAL],
    description=CLIENT_AUTH,
    response_class=Response,
    responses=PDF,
    summary="The PDF of one of the signed-in client's invoices",
)
async def client_invoice_pdf(
    invoice_id: Id, billing: Billing, client: Principal = Depends(require_client)
) -> Response:
    return pdf_response(
        (await billing.GetClientInvoicePdf(billing_pb2.GetClientInvoicePdfRequest(invoice_id=invoice_id))).pdf
    )


@router.post(
    "/v1/client/portal/invoices/{invoice_id}/checkout",
    dependencies=[PORTAL],
    description=CLIENT_AUTH,
    summary="Pay one of the signed-in client's invoices: a Stripe Checkout link",
)
async def client_invoice_checkout(
    invoice_id: Id, billing: Billing, client: Principal = Depends(require_client)
) -> dict[str, Any]:
    return checkout_view(
        (
            await billing.CreateInvoiceCheckout(
                billing_pb2.CreateInvoiceCheckoutRequest(invoice_id=invoice_id)
            )
        ).checkout
    )


@router.post(
    "/v1/client/portal/bookings/{booking_id}/deposit/checkout",
    dependencies=[PORTAL],
    description=CLIENT_AUTH,
    summary="Pay the deposit of one of the signed-in client's bookings (DEPOSITS_ENABLED)",
)
async def client_deposit_checkout(
    booking_id: Id, billing: Billing, client: Principal = Depends(require_client)
) -> dict[str, Any]:
    return checkout_view(
        (
            await billing.CreateDepositCheckout(
                billing_pb2.CreateDepositCheckoutRequest(booking_id=booking_id)
            )
        ).checkout
    )
