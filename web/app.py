"""The web process: FastAPI serving server-rendered pages and its own static files."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.common.logs import configure_logging
from web.api import ApiError, Gateway, SignInRequired
from web.pages import render
from web.routes import ROUTERS
from web.security import CsrfRefused, WebMiddleware
from web.settings import WebSettings

log = structlog.get_logger("web")

SIGN_IN_PAGES = {"staff": "/console/sign-in", "client": "/portal/client/sign-in", "worker": "/portal/worker/"}


def create_app(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    configure_logging("web", settings.log_level)
    # httpx logs every URL it requests at INFO: portal link and NPS tokens travel in some of them.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = Gateway(settings.gateway_url, settings.web_gateway_timeout_seconds)
        try:
            yield
        finally:
            await app.state.gateway.close()

    app = FastAPI(
        title="CleanWithSnapshot console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)
    _install_error_handlers(app)
    app.add_middleware(WebMiddleware, settings=settings)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def on_sign_in(request: Request, error: SignInRequired) -> Response:
        target = SIGN_IN_PAGES.get(error.kind, "/")
        if error.kind == "staff" and request.method == "GET":
            target += "?next=" + quote(
                request.url.path + ("?" + request.url.query if request.url.query else "")
            )
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def on_csrf(request: Request, error: CsrfRefused) -> Response:
        return render(request, "error.html", status=403, title="Refused", message=str(error))

    @app.exception_handler(ApiError)
    async def on_api(request: Request, error: ApiError) -> Response:
        if error.code == "password_change_required":
            return RedirectResponse("/console/password", status_code=303)
        status = error.status if 400 <= error.status < 600 else 502
        if status >= 500 and status != 503:
            status = 502
        return render(request, "error.html", status=status, title="That did not work", message=error.detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> Response:
        message = "There is no such page." if error.status_code == 404 else str(error.detail)
        return render(request, "error.html", status=error.status_code, title="Not here", message=message)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("web_unexpected_error", path=request.url.path)
        return HTMLResponse(
            "<!doctype html><title>Error</title><p>Something went wrong on our side; try again.</p>",
            status_code=500,
        )
