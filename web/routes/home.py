"""The landing page (also the health check seed 003 gives the web: GET / answers 200) and /healthz."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from web.pages import render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def landing(request: Request) -> HTMLResponse:
    return render(request, "landing.html")


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> PlainTextResponse:
    # Liveness only: the web holds no state; whether the gateway answers is the gateway's readiness.
    return PlainTextResponse("ok")
