"""The photo review queue: approve, or ask for a retake, with every image shown through a signed link.

Media decides consent and mints the links; another org's photo is the gateway's 404, shown as the
web's 404 page."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from web.api import ApiError, gateway_of
from web.pages import (
    fetch_one,
    form_error,
    public_photo_url,
    read_form,
    redirect,
    render,
    session_of,
    status_of,
)

router = APIRouter(prefix="/console")

# A screenful, oldest first: reviewing works down the queue (an approved photo leaves it), and every
# photo shown costs a signed link minted at media, so a page of 50 cost 4x the server time (make bench).
PAGE = 12
PHOTO_FILTERS = ("all", "pending", "needs_retake")
# Signing links for a page of photos: a few at a time, so one page does not flood media.
SIGN_CONCURRENCY = 8


async def _signed(request: Request, photo_id: str, limit: asyncio.Semaphore) -> dict[str, str]:
    """{"src": link} to show the photo, or {"reason": why not} (no consent, media away)."""
    async with limit:
        try:
            signed = await gateway_of(request).call(
                request, "GET", f"/v1/admin/photos/{quote(photo_id, safe='')}/signed_url"
            )
        except ApiError as error:
            if error.code == "photo_consent_required":
                return {"reason": "Not shown: the client has not given photo consent for this booking."}
            return {"reason": f"Not shown: {error.detail}"}
    return {"src": public_photo_url(request, str(signed.get("url") or ""))}


@router.get("/photos", response_class=HTMLResponse)
async def photos(request: Request, status: str = "all") -> HTMLResponse:
    status = status if status in PHOTO_FILTERS else "all"
    found = await gateway_of(request).call(
        request, "GET", "/v1/admin/queue/photos", params={"status": status, "limit": PAGE}
    )
    # The queue call above has rotated the access token if it was due, so these share a fresh one.
    limit = asyncio.Semaphore(SIGN_CONCURRENCY)
    links = await asyncio.gather(*(_signed(request, p["photo_id"], limit) for p in found))
    return render(
        request,
        "photos_queue.html",
        photos=list(zip(found, links, strict=True)),
        values={"status": status},
        page=PAGE,
    )


async def _photo_page(request: Request, photo_id: str, status: int = 200, **context: Any) -> Response:
    photo = await fetch_one(request, f"/v1/admin/photos/{quote(photo_id, safe='')}", "photo")
    link = await _signed(request, photo_id, asyncio.Semaphore(1))
    return render(request, "photos_detail.html", status=status, photo=photo, link=link, **context)


@router.get("/photos/{photo_id}", response_class=HTMLResponse)
async def photo(request: Request, photo_id: str) -> Response:
    return await _photo_page(request, photo_id)


def _back_to_queue(form: dict[str, Any]) -> str:
    status = form.get("status")
    return "/console/photos" + (f"?status={status}" if status in PHOTO_FILTERS[1:] else "")


@router.post("/photos/{photo_id}/approve", response_model=None)
async def approve(request: Request, photo_id: str) -> Response:
    form = await read_form(request)
    try:
        await gateway_of(request).call(
            request, "POST", f"/v1/admin/photos/{quote(photo_id, safe='')}/approve"
        )
    except ApiError as error:
        if error.status == 404:
            raise
        return await _photo_page(request, photo_id, status=status_of(error), **form_error(error))
    session_of(request).flash("Photo approved.")
    return redirect(_back_to_queue(form))


@router.post("/photos/{photo_id}/retake", response_model=None)
async def retake(request: Request, photo_id: str) -> Response:
    form = await read_form(request)
    note = str(form.get("note") or "").strip()
    if not note:
        return await _photo_page(
            request, photo_id, status=422, errors={"note": "Say what to retake and why"}, values=form
        )
    path = f"/v1/admin/photos/{quote(photo_id, safe='')}/needs-retake"
    try:
        done = await gateway_of(request).call(request, "POST", path, json={"note": note})
    except ApiError as error:
        if error.status == 404:
            raise
        return await _photo_page(request, photo_id, status=status_of(error), values=form, **form_error(error))
    told = " The worker who took it was emailed." if done.get("worker_notified") else ""
    session_of(request).flash("Retake requested." + told)
    return redirect(_back_to_queue(form))
