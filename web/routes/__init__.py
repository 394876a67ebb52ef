"""The web's routers: one module per area, the same shape in each (GET renders, POST reads the form,
calls the gateway, and redirects or re-renders with the gateway's errors)."""

from __future__ import annotations

from fastapi import APIRouter

from web.routes import (
    account,
    bookings,
    client_portal,
    clients,
    finance,
    home,
    integrations,
    operations,
    people,
    photos,
    worker_portal,
)

ROUTERS: list[APIRouter] = [
    home.router,
    account.router,
    bookings.router,
    clients.router,
    finance.router,
    photos.router,
    people.router,
    operations.router,
    integrations.router,
    client_portal.router,
    worker_portal.router,
]
