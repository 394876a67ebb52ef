"""Invoices: list, detail, issue/send/void, manual payments, reconcile, PDF.

Every page is a client of the gateway's REST API: billing decides roles, statuses and amounts.
Another org's invoice is the gateway's 404, which
the app's ApiError handler shows as the web's 404 page, so nothing here checks ownership itself.

Invoices come to exist by themselves: billing drafts one from each booking.completed event (and the
backfill drafts those it missed), so the console's "new invoice" form is for work outside a booking."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from web.api import ApiError, gateway_of
from web.pages import fetch_one, form_error, read_form, redirect, render, session_of, status_of

router = APIRouter(prefix="/console")

PAGE = 50
INVOICE_STATUSES = ("DRAFT", "SENT", "PARTIAL", "PAID", "OVERDUE", "VOID")
QUEUES = ("overdue", "unpaid")
PAYMENT_METHODS = (("cash", "Cash"), ("etransfer", "E-transfer"), ("cheque", "Cheque"), ("other", "Other"))
# The gateway's Content-Disposition filename, kept only if it is plainly a file name.
SAFE_FILENAME = re.compile(r'filename="([A-Za-z0-9._-]{1,100})"')
# A form's field name for the gateway's field (amounts are typed in units, sent in cents).
FIELD_NAMES = {"amount_cents": "amount", "unit_price_cents": "unit_price", "received_at": "received_on"}


def _page(value: Any) -> int:
    try:
        return max(1, min(int(value), 20_000))
    except (TypeError, ValueError):
        return 1


def _cents(text: Any) -> int | None:
    """'152.55', '$1,200' or '40' as cents; None when it is not an amount of at most 2 decimals."""
    cleaned = str(text or "").strip().replace(",", "").lstrip("$").strip()
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        return None
    return int(amount * 100)


def _errors(error: ApiError) -> dict[str, Any]:
    """The gateway's errors under the names of this page's fields."""
    context = form_error(error)
    context["errors"] = {FIELD_NAMES.get(k, k): v for k, v in context["errors"].items()}
    return context


# --- invoices: the list ------------------------------------------------------------------------------


async def _queue_total(request: Request, queue: str) -> int | None:
    try:
        found = await gateway_of(request).call(
            request, "GET", "/v1/admin/queue/invoices", params={"status": queue, "limit": 1}
        )
    except ApiError:
        return None  # the counts are a convenience: the list still shows without them
    return int(found.get("total") or 0)


@router.get("/invoices", response_class=HTMLResponse)
async def invoices(request: Request, status: str = "", queue: str = "", page: str = "1") -> HTMLResponse:
    status = status.upper() if status.upper() in INVOICE_STATUSES else ""
    queue = queue if queue in QUEUES else ""
    number = _page(page)
    params = {"limit": PAGE, "offset": (number - 1) * PAGE}
    if queue:
        found = await gateway_of(request).call(
            request, "GET", "/v1/admin/queue/invoices", params={**params, "status": queue}
        )
    else:
        found = await gateway_of(request).call(
            request, "GET", "/v1/admin/invoices", params={**params, "status": status}
        )
    # One after another: the first call may rotate the access token, which must not happen twice at once.
    counts = {name: await _queue_total(request, name) for name in QUEUES}
    total = int(found.get("total") or 0)
    return render(
        request,
        "invoices_list.html",
        items=found.get("items") or [],
        total=total,
        counts=counts,
        values={"status": status},
        queue=queue,
        page=number,
        pages=max(1, -(-total // PAGE)),
    )


@router.post("/invoices/backfill", response_model=None)
async def backfill(request: Request) -> Response:
    await read_form(request)
    try:
        done = await gateway_of(request).call(request, "POST", "/v1/admin/invoices/backfill")
    except ApiError as error:
        session_of(request).flash(f"No invoices were drafted: {error.detail}")
        return redirect("/console/invoices")
    session_of(request).flash(
        f"Checked {done.get('scanned', 0)} completed bookings; drafted {done.get('created', 0)} invoices."
    )
    return redirect("/console/invoices?status=DRAFT")


# --- invoices: a new one by hand ---------------------------------------------------------------------


@router.get("/invoices/new", response_class=HTMLResponse)
async def new_invoice_page(request: Request, booking_id: str = "") -> HTMLResponse:
    try:
        defaults = await gateway_of(request).call(request, "GET", "/v1/admin/finance/settings")
    except ApiError:
        defaults = {}  # the form still works; the tax rate is then typed by hand
    values = {"booking_id": booking_id, "quantity": "1", "tax_rate": defaults.get("tax_rate", "")}
    return render(request, "invoices_new.html", values=values)


@router.post("/invoices/new", response_model=None)
async def new_invoice(request: Request) -> Response:
    form = await read_form(request)
    values = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    price = _cents(values.get("unit_price"))
    if price is None:
        return render(
            request,
            "invoices_new.html",
            status=422,
            values=values,
            errors={"unit_price": "Enter a price like 120.00"},
        )
    body: dict[str, Any] = {
        "client_name": values.get("client_name", ""),
        "client_email": values.get("client_email", ""),
        "items": [
            {
                "description": values.get("description", ""),
                "quantity": values.get("quantity") or "1",
                "unit_price_cents": price,
                "tax_rate": values.get("tax_rate", ""),
            }
        ],
        "booking_id": values.get("booking_id") or None,
        "due_date": values.get("due_date") or None,
    }
    try:
        created = await gateway_of(request).call(request, "POST", "/v1/admin/invoices", json=body)
    except ApiError as error:
        return render(request, "invoices_new.html", status=status_of(error), values=values, **_errors(error))
    session_of(request).flash("Draft invoice created.")
    return redirect(f"/console/invoices/{quote(created['id'])}")


# --- invoices: reconcile -----------------------------------------------------------------------------


@router.get("/invoices/reconcile", response_class=HTMLResponse)
async def reconcile_list(request: Request, status: str = "mismatch", page: str = "1") -> HTMLResponse:
    status = status if status in ("mismatch", "all") else "mismatch"
    number = _page(page)
    found = await gateway_of(request).call(
        request,
        "GET",
        "/v1/admin/finance/reconcile/invoices",
        params={"status": status, "limit": PAGE, "offset": (number - 1) * PAGE},
    )
    total = int(found.get("total") or 0)
    return render(
        request,
        "invoices_reconcile.html",
        items=found.get("items") or [],
        total=total,
        values={"status": status},
        page=number,
        pages=max(1, -(-total // PAGE)),
    )


# --- invoices: one ------------------------------------------------------------------------------------


async def _invoice_page(request: Request, invoice_id: str, status: int = 200, **context: Any) -> Response:
    invoice = await fetch_one(request, f"/v1/admin/invoices/{quote(invoice_id, safe='')}", "invoice")
    values = context.pop("values", None) or {"method": "cash"}
    return render(
        request,
        "invoices_detail.html",
        status=status,
        invoice=invoice,
        methods=PAYMENT_METHODS,
        values=values,
        **context,
    )


@router.get("/invoices/{invoice_id}", response_class=HTMLResponse)
async def invoice(request: Request, invoice_id: str) -> Response:
    return await _invoice_page(request, invoice_id)


@router.get("/invoices/{invoice_id}/pdf", response_model=None)
async def invoice_pdf(request: Request, invoice_id: str) -> Response:
    answer = await gateway_of(request).call(
        request, "GET", f"/v1/admin/invoices/{quote(invoice_id, safe='')}/pdf", raw=True
    )
    if not isinstance(answer.data, bytes) or not answer.data.startswith(b"%PDF"):
        raise ApiError(502, {"detail": "the invoice's PDF could not be made; try again in a moment"})
    named = SAFE_FILENAME.search(answer.headers.get("content-disposition", ""))
    filename = named.group(1) if named else "invoice.pdf"
    return Response(
        answer.data,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
        },
    )


# What each button does, and what the page says after it.
ACTIONS = {
    "issue": "Issued: the invoice has its number and its tax is frozen.",
    "send": "Sent: the client was emailed a link to the invoice.",
    "void": "Voided: the invoice is cancelled; its number stays taken.",
}


@router.post("/invoices/{invoice_id}/reconcile", response_model=None)
async def reconcile(request: Request, invoice_id: str) -> Response:
    form = await read_form(request)
    path = f"/v1/admin/finance/invoices/{quote(invoice_id, safe='')}/reconcile"
    try:
        done = await gateway_of(request).call(request, "POST", path)
    except ApiError as error:
        if error.status == 404:
            raise
        return await _invoice_page(request, invoice_id, status=status_of(error), **form_error(error))
    before, after = done.get("before") or {}, done.get("after") or {}
    if done.get("changed"):
        message = f"Reconciled: the status went from {before.get('status')} to {after.get('status')}."
    else:
        message = f"Reconciled: the status {after.get('status')} already agrees with the payments."
    session_of(request).flash(message)
    back = (
        "/console/invoices/reconcile"
        if form.get("back") == "reconcile"
        else f"/console/invoices/{quote(invoice_id)}"
    )
    return redirect(back)


@router.post("/invoices/{invoice_id}/payments", response_model=None)
async def record_payment(request: Request, invoice_id: str) -> Response:
    form = await read_form(request)
    values = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    errors: dict[str, str] = {}
    cents = _cents(values.get("amount"))
    if cents is None:
        errors["amount"] = "Enter the amount received, like 152.55"
    body: dict[str, Any] = {
        "amount_cents": cents,
        "method": values.get("method", ""),
        "reference": values.get("reference", ""),
    }
    received = values.get("received_on", "")
    if received:
        try:
            # A day is all a person knows of a cheque; noon UTC keeps it on that day in every zone
            # from UTC-11 to UTC+11.
            body["received_at"] = date.fromisoformat(received).isoformat() + "T12:00:00+00:00"
        except ValueError:
            errors["received_on"] = "Enter a date"
    if errors:
        return await _invoice_page(request, invoice_id, status=422, values=values, errors=errors)
    path = f"/v1/admin/invoices/{quote(invoice_id, safe='')}/payments"
    try:
        await gateway_of(request).call(request, "POST", path, json=body)
    except ApiError as error:
        if error.status == 404:
            raise
        return await _invoice_page(
            request, invoice_id, status=status_of(error), values=values, **_errors(error)
        )
    session_of(request).flash("Payment recorded.")
    return redirect(f"/console/invoices/{quote(invoice_id)}")


@router.post("/invoices/{invoice_id}/{action}", response_model=None)
async def invoice_action(request: Request, invoice_id: str, action: str) -> Response:
    form = await read_form(request)
    if action not in ACTIONS:
        raise ApiError(404, {"detail": "There is no such page."})
    if action == "void" and form.get("confirm") != "yes":
        return await _invoice_page(
            request, invoice_id, status=422, errors={"confirm": "Tick the box to confirm the void"}
        )
    path = f"/v1/admin/invoices/{quote(invoice_id, safe='')}/{action}"
    try:
        await gateway_of(request).call(request, "POST", path)
    except ApiError as error:
        if error.status == 404:
            raise
        return await _invoice_page(request, invoice_id, status=status_of(error), **form_error(error))
    session_of(request).flash(ACTIONS[action])
    return redirect(f"/console/invoices/{quote(invoice_id)}")
