"""Public endpoints (seed 004 smoke tests): the estimator and lead intake. They act for the org the
caller names with X-Org-Key or the host's subdomain, else DEFAULT_ORG_ID."""

from __future__ import annotations

from typing import Annotated, Any

from cws.booking.v1 import booking_pb2
from fastapi import APIRouter, Header, Request
from fastapi.responses import ORJSONResponse

from gateway.access import OPEN_IN_READ_ONLY, PUBLIC
from gateway.principal import client_ip_of
from gateway.resources import CaptchaVerifier, Settings
from gateway.routes import convert
from gateway.schemas import EstimateIn, LeadIn
from gateway.settings import GatewaySettings
from gateway.stubs import Booking

router = APIRouter(tags=["public"], dependencies=[PUBLIC])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
OrgKey = Annotated[str | None, Header(alias="X-Org-Key", max_length=64)]


def org_key(request: Request, settings: GatewaySettings, header: str | None) -> str:
    """The org a public caller names: X-Org-Key, else the subdomain of PUBLIC_BASE_DOMAIN, else ''."""
    if header:
        return header.strip().lower()
    domain = settings.public_base_domain.lower()
    host = request.headers.get("host", "").split(":")[0].lower()
    if domain and host.endswith("." + domain):
        sub = host[: -len(domain) - 1]
        if sub and "." not in sub and sub not in ("www", "api"):
            return sub
    return ""


@router.post(
    "/v1/estimate",
    summary="Price a cleaning from beds, baths and cleaning type",
    dependencies=[OPEN_IN_READ_ONLY],
)
async def estimate(
    body: EstimateIn, request: Request, booking: Booking, settings: Settings, x_org_key: OrgKey = None
) -> dict[str, Any]:
    response = await booking.Estimate(
        booking_pb2.EstimateRequest(
            org_key=org_key(request, settings, x_org_key),
            beds=body.beds,
            baths=body.baths,
            cleaning_type=body.cleaning_type,
        )
    )
    return convert.estimate(response)


@router.post(
    "/v1/leads",
    status_code=201,
    summary="Submit a lead with its estimate inputs",
    dependencies=[OPEN_IN_READ_ONLY],
)
async def create_lead(
    body: LeadIn,
    request: Request,
    booking: Booking,
    settings: Settings,
    captcha: CaptchaVerifier,
    x_org_key: OrgKey = None,
    idempotency_key: IdempotencyKey = None,
    cf_turnstile_response: Annotated[
        str | None, Header(alias="CF-Turnstile-Response", max_length=4096)
    ] = None,
) -> ORJSONResponse:
    await captcha.verify(body.captcha_token or cf_turnstile_response, client_ip_of(request))
    inputs = body.structured_inputs
    response = await booking.CreateLead(
        booking_pb2.CreateLeadRequest(
            org_key=org_key(request, settings, x_org_key),
            name=body.name,
            phone=body.phone,
            email=body.email,
            postal_code=body.postal_code,
            notes=body.notes,
            structured_inputs=booking_pb2.StructuredInputs(
                beds=inputs.beds, baths=inputs.baths, cleaning_type=inputs.cleaning_type
            ),
            idempotency_key=idempotency_key or "",
        )
    )
    headers = {"Idempotent-Replayed": "true"} if response.replayed else None
    return ORJSONResponse(convert.lead(response.lead), status_code=201, headers=headers)
