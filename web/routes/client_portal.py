"""The client portal (issue 16): sign-in by emailed link, bookings with their photos and photo consent,
invoices with Pay and the PDF, the NPS survey, sign-out. Every page is a gateway call with the
client's portal session token; the gateway (booking, billing, media) confines it to the client's own
bookings and invoices and answers 404 for any other, which the pages show as the web's own 404.

The emailed link is `{CLIENT_PORTAL_BASE_URL}/client/login/callback?token=…` and deployments set
CLIENT_PORTAL_BASE_URL to this console's `/portal`. Opening it (a GET) uses nothing: the page's button
posts the token, which is when the link is used up (mail scanners prefetch links)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from web.api import ApiError, SignInRequired, gateway_of
from web.pages import form_error, read_form, redirect, render, session_of, settings_of

log = structlog.get_logger("web.client_portal")
router = APIRouter(prefix="/portal")

HOME = "/portal/client/"
Kind = Literal["client", "worker"]
# A booking page signs at most this many photo links (one gateway call each) per view.
MAX_PHOTOS = 24
# Invoice states a client can still pay (billing's ISSUED_STATUSES less PAID).
PAYABLE = frozenset({"SENT", "PARTIAL", "OVERDUE"})
# gateway/portal_auth.py MAX_TOKEN_LENGTH: longer is no link of ours.
MAX_LINK_TOKEN = 4096


# The path ids a portal route takes: a 422 naming only these is an id that names nothing.
ID_FIELDS = frozenset({"booking_id", "job_id", "invoice_id", "order_id", "photo_id"})


def not_found() -> HTTPException:
    """Another client's id, an unknown one and a malformed one look the same: the web's 404."""
    return HTTPException(404)


def names_no_such_object(error: ApiError, method: str) -> bool:
    """Whether a gateway refusal means "not yours or not there" (404, or 422 about the path's id)."""
    if error.status == 404:
        return True
    if error.status != 422:
        return False
    # A page's GET sends nothing but the id; a write's 422 may be about its body, so it must name the id.
    fields = set(error.field_errors)
    return method == "GET" or (bool(fields) and fields <= ID_FIELDS)


async def api(request: Request, method: str, path: str, **kwargs: Any) -> Any:
    """A client-portal call; another client's id (or a malformed one) becomes the web's 404."""
    try:
        return await gateway_of(request).call(request, method, path, auth="client", **kwargs)
    except ApiError as error:
        if names_no_such_object(error, method):
            raise not_found() from None
        raise


# --- signing in and out ------------------------------------------------------------------------


async def link_page(request: Request, kind: Kind, token: str) -> HTMLResponse:
    """The page a portal link opens: a button that posts the token. Shared by the client's and the
    worker's link (`kind`). The link is not checked here: the gateway's check takes the token in a
    URL, which the web's HTTP client logs; a used or expired link shows when the button is pressed."""
    template = f"{kind}_link.html"
    if not token or len(token) > MAX_LINK_TOKEN:
        return render(request, template, status=400, token="", invalid=True)
    return render(request, template, token=token, invalid=False)


async def confirm_link(request: Request, kind: Kind) -> Response:
    """Uses the link at the gateway (once) and keeps the portal session token in the cookie."""
    form = await read_form(request)
    token = str(form.get("token") or "").strip()
    template = f"{kind}_link.html"
    if not token:
        return render(request, template, status=400, token="", invalid=True)
    try:
        signed = await gateway_of(request).call(
            request, "POST", f"/{kind}/login/confirm", auth="none", json={"token": token}
        )
    except ApiError as error:
        if error.status in (401, 404, 410, 422):
            return render(request, template, status=error.status, token="", invalid=True)
        raise
    session = session_of(request)
    session.set(kind, str(signed["session_token"]))
    if kind == "client":
        session.set("client_email", str(signed.get("email") or ""))
    return redirect(f"/portal/{kind}/")


async def sign_out(request: Request, kind: Kind) -> None:
    """Ends the portal session at the gateway, then forgets it here whatever the gateway said."""
    await read_form(request)
    session = session_of(request)
    if session.get(kind):
        try:
            await gateway_of(request).call(request, "POST", f"/{kind}/logout", auth=kind)
        except (ApiError, SignInRequired) as error:
            # Signed out here either way; a session the gateway could not end expires by itself.
            log.info("portal_logout_not_confirmed", kind=kind, error=str(error))
    session.drop(kind, f"{kind}_email")
    session.flash("You are signed out.")


@router.get("/client/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, org: str = "") -> HTMLResponse:
    return render(request, "client_sign_in.html", org=org[:64], sent=False)


@router.post("/client/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> HTMLResponse:
    form = await read_form(request)
    email = str(form.get("email") or "").strip()
    org = str(form.get("org") or "").strip()[:64]
    body: dict[str, Any] = {"email": email}
    if org:
        body["org_key"] = org
    try:
        await gateway_of(request).call(request, "POST", "/client/login/request", auth="none", json=body)
    except ApiError as error:
        if error.status in (422, 429, 503):
            return render(
                request,
                "client_sign_in.html",
                status=error.status,
                org=org,
                sent=False,
                values={"email": email},
                **form_error(error),
            )
        # Anything else says nothing about the address either: the page answers as for any email.
        log.warning("client_login_request_refused", status=error.status, code=error.code)
    return render(request, "client_sign_in.html", org=org, sent=True, values={"email": email})


@router.get("/client/login/callback", response_class=HTMLResponse)
async def client_link(request: Request, token: str = "") -> HTMLResponse:
    return await link_page(request, "client", token)


@router.post("/client/login/confirm", response_model=None)
async def client_confirm(request: Request) -> Response:
    return await confirm_link(request, "client")


@router.post("/client/sign-out")
async def client_sign_out(request: Request) -> RedirectResponse:
    await sign_out(request, "client")
    return redirect("/portal/client/sign-in")


# --- bookings ----------------------------------------------------------------------------------


@router.get("/client/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    upcoming, everything = await asyncio.gather(
        api(request, "GET", "/v1/client/portal/bookings", params={"limit": 50}),
        api(request, "GET", "/v1/client/portal/bookings", params={"include_past": "true", "limit": 50}),
    )
    coming = upcoming.get("bookings") or []
    ahead = {b["id"] for b in coming}
    past = sorted(
        (b for b in everything.get("bookings") or [] if b["id"] not in ahead),
        key=lambda b: str(b.get("starts_at") or ""),
        reverse=True,
    )
    return render(
        request,
        "client_home.html",
        upcoming=coming,
        past=past,
        email=session_of(request).get("client_email") or "",
    )


@router.get("/client", include_in_schema=False)
async def home_without_slash() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=307)


async def photo_src(request: Request, download: str) -> str:
    """The browser's <img src> for one photo: the gateway's 302 to a short-lived signed link, rebased
    on the gateway's public address (the link names the address the web called it on)."""
    try:
        answer = await gateway_of(request).call(request, "GET", download, auth="client", raw=True)
    except ApiError as error:
        log.info("client_photo_unsigned", status=error.status, code=error.code)
        return ""
    location = answer.headers.get("location", "") if answer.status in (301, 302, 303, 307) else ""
    if not location:
        return ""
    parts = urlsplit(location)
    base = settings_of(request).web_gateway_public_url.rstrip("/")
    return base + parts.path + ("?" + parts.query if parts.query else "")


@router.get("/client/bookings/{booking_id}", response_class=HTMLResponse)
async def booking_page(request: Request, booking_id: str) -> HTMLResponse:
    path = f"/v1/client/portal/bookings/{quote(booking_id, safe='')}"
    booking = await api(request, "GET", path)
    listed = await api(request, "GET", path + "/photos")
    photos = list(listed.get("photos") or [])[:MAX_PHOTOS]
    sources = await asyncio.gather(*(photo_src(request, str(p.get("download") or "")) for p in photos))
    for photo, src in zip(photos, sources, strict=True):
        photo["src"] = src
    return render(
        request, "client_booking.html", booking=booking, photos=photos, consent=listed.get("consent") or {}
    )


@router.post("/client/bookings/{booking_id}/consent", response_model=None)
async def set_consent(request: Request, booking_id: str) -> Response:
    form = await read_form(request)
    granted = str(form.get("granted")) == "true"
    path = f"/v1/client/portal/bookings/{quote(booking_id, safe='')}/photo-consent"
    await api(request, "PUT", path, json={"granted": granted})
    session_of(request).flash(
        "Thank you: you allow us to use the photos of this cleaning."
        if granted
        else "Done: we no longer use the photos of this cleaning."
    )
    return redirect(f"/portal/client/bookings/{quote(booking_id, safe='')}")


# --- invoices ----------------------------------------------------------------------------------


@router.get("/client/invoices", response_class=HTMLResponse)
async def invoices(request: Request) -> HTMLResponse:
    listed = await api(request, "GET", "/v1/client/portal/invoices", params={"limit": 100})
    return render(request, "client_invoices.html", invoices=listed.get("invoices") or [])


def _invoice_path(invoice_id: str) -> str:
    return f"/v1/client/portal/invoices/{quote(invoice_id, safe='')}"


@router.get("/client/invoices/{invoice_id}", response_class=HTMLResponse)
async def invoice_page(request: Request, invoice_id: str) -> HTMLResponse:
    invoice = await api(request, "GET", _invoice_path(invoice_id))
    payable = invoice.get("status") in PAYABLE and int(invoice.get("outstanding_cents") or 0) > 0
    return render(request, "client_invoice.html", invoice=invoice, payable=payable)


@router.post("/client/invoices/{invoice_id}/pay", response_model=None)
async def pay(request: Request, invoice_id: str) -> Response:
    await read_form(request)
    try:
        checkout = await api(request, "POST", _invoice_path(invoice_id) + "/checkout")
    except ApiError as error:
        invoice = await api(request, "GET", _invoice_path(invoice_id))
        status = error.status if 400 <= error.status < 600 else 502
        return render(
            request, "client_invoice.html", status=status, invoice=invoice, payable=False, problem=error
        )
    url = str(checkout.get("checkout_url") or "")
    if urlsplit(url).scheme not in ("https", "http"):
        # Only a web page may follow; anything else from the gateway is a fault, not a destination.
        raise ApiError(502, {"detail": "the payment page could not be opened; try again"})
    return RedirectResponse(url, status_code=303)


@router.get("/client/invoices/{invoice_id}/pdf", response_model=None)
async def invoice_pdf(request: Request, invoice_id: str) -> Response:
    answer = await api(request, "GET", _invoice_path(invoice_id) + "/pdf", raw=True)
    disposition = answer.headers.get("content-disposition") or 'attachment; filename="invoice.pdf"'
    return Response(
        bytes(answer.data),
        media_type="application/pdf",
        headers={"Content-Disposition": disposition, "Cache-Control": "private, no-store"},
    )


@router.get("/invoices/{invoice_id}", include_in_schema=False)
async def emailed_invoice(invoice_id: str) -> RedirectResponse:
    # notify's dunning email links {CLIENT_PORTAL_BASE_URL}/invoices/{id}, i.e. /portal/invoices/{id}.
    return RedirectResponse(f"/portal/client/invoices/{quote(invoice_id, safe='')}", status_code=303)


# --- the NPS survey ----------------------------------------------------------------------------

SCORES = list(range(11))
MAX_COMMENT = 2000


@router.get("/nps/{token}", response_class=HTMLResponse)
async def nps_page(request: Request, token: str) -> HTMLResponse:
    # The API cannot tell a used token without using it: that shows on the answer.
    return render(request, "client_nps.html", token=token, scores=SCORES, state="ask")


@router.post("/nps/{token}", response_class=HTMLResponse)
async def nps_answer(request: Request, token: str) -> HTMLResponse:
    form = await read_form(request)
    values = {"score": str(form.get("score") or ""), "comment": str(form.get("comment") or "")}
    context: dict[str, Any] = {"token": token, "scores": SCORES, "values": values}
    if not values["score"].isdigit() or int(values["score"]) not in SCORES:
        errors = {"score": "Choose a number from 0 to 10."}
        return render(request, "client_nps.html", status=422, state="ask", errors=errors, **context)
    if len(values["comment"]) > MAX_COMMENT:
        errors = {"comment": f"Please keep it under {MAX_COMMENT} characters."}
        return render(request, "client_nps.html", status=422, state="ask", errors=errors, **context)
    body = {"score": int(values["score"]), "comment": values["comment"].strip()}
    try:
        await gateway_of(request).call(
            request, "POST", f"/v1/public/nps/{quote(token, safe='')}", auth="none", json=body
        )
    except ApiError as error:
        if error.status == 409:
            return render(request, "client_nps.html", status=409, state="used", **context)
        if error.status in (404, 422) and not error.field_errors.keys() & {"score", "comment"}:
            return render(request, "client_nps.html", status=404, state="unknown", **context)
        status = error.status if 400 <= error.status < 600 else 502
        return render(request, "client_nps.html", status=status, state="ask", **context, **form_error(error))
    return render(request, "client_nps.html", state="thanks", **context)
