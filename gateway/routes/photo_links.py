"""Photo consent and signed delivery (issue 12, seed 002 "Client portal v1 usage").

- Consent per booking: `GET`/`PUT /v1/admin/bookings/{booking_id}/photo-consent` (any staff reads,
  DISPATCHER or higher records; audited) and `GET`/`PUT /v1/client/portal/bookings/{booking_id}/photo-consent`
  (the booking's own client).
- Links, minted by media only: `GET /v1/admin/photos/{photo_id}/signed_url` (staff; active consent
  required, else 409 `photo_consent_required`), `GET /v1/orders/{order_id}/photos/{photo_id}/signed-download`
  (the booking's own client: a 302 to the link) and `GET /v1/public/photos/{token}` (anyone holding
  the link: a 302 to the backend's own short-lived URL, or the local file streamed).
- `GET /v1/client/portal/bookings/{booking_id}/photos`: the client's list (metadata, a download path
  per photo, the consent state).

Media decides everything (roles, the client's own booking, consent, the token); the gateway only
shapes HTTP. Another org's or another client's ids are 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from cws.media.v1 import media_pb2
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import ORJSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import StrictBool

from gateway.access import ADMIN, PORTAL, PUBLIC
from gateway.deps import require_roles
from gateway.portal_auth import require_client
from gateway.principal import Principal
from gateway.routes.convert import optional_time
from gateway.routes.portal import CLIENT_AUTH
from gateway.schemas import Strict
from gateway.stubs import Media
from libs.common.roles import DISPATCH, STAFF

router = APIRouter(tags=["photos"])
ANY_STAFF = Depends(require_roles(*STAFF))
RECORDER = Depends(require_roles(*DISPATCH))
Id = Annotated[str, Path(max_length=64)]
# services/media/links.py MAX_TOKEN_CHARS: longer is no link of ours (refused before media is asked).
Token = Annotated[str, Path(min_length=1, max_length=1024)]
# A User-Agent is only hashed into a bound link; a longer one is no browser's.
MAX_USER_AGENT = 1024
# Streaming a photo to a slow client may take longer than the usual call deadline.
STREAM_SECONDS = 120.0
# Links and photos are for the one who asked: no shared cache keeps them, no Referer carries the token.
PRIVATE = {"Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer"}
PHOTO_HEADERS = {
    **PRIVATE,
    "X-Content-Type-Options": "nosniff",
    # An image is shown, never run: nothing it could embed may load or script.
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


class ConsentIn(Strict):
    # Strictly true or false: "yes" or 1 is a mistake to report, not a consent to record.
    granted: StrictBool


def consent_view(message: media_pb2.PhotoConsent, *, staff: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "booking_id": message.booking_id,
        "granted": message.granted,
        "recorded": message.recorded,
        "source": message.source or None,
        "granted_at": optional_time(message, "granted_at"),
        "withdrawn_at": optional_time(message, "withdrawn_at"),
    }
    if staff:  # a staff user's id is nothing a client needs
        view["granted_by"] = message.granted_by or None
    return view


def _user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:MAX_USER_AGENT]


def download_path(booking_id: str, photo_id: str) -> str:
    return f"/v1/orders/{booking_id}/photos/{photo_id}/signed-download"


# --- consent ---------------------------------------------------------------------------------------


@router.get(
    "/v1/admin/bookings/{booking_id}/photo-consent",
    dependencies=[ADMIN, ANY_STAFF],
    summary="A booking's photo consent: granted or not, by whom, when, withdrawn when",
)
async def admin_consent(booking_id: Id, media: Media) -> dict[str, Any]:
    response = await media.GetPhotoConsent(media_pb2.GetPhotoConsentRequest(booking_id=booking_id))
    return consent_view(response.consent, staff=True)


@router.put(
    "/v1/admin/bookings/{booking_id}/photo-consent",
    dependencies=[ADMIN, RECORDER],
    summary="Record (granted true) or withdraw (false) a booking's photo consent; dispatcher or higher, audited",
)
async def admin_set_consent(booking_id: Id, body: ConsentIn, media: Media) -> dict[str, Any]:
    response = await media.SetPhotoConsent(
        media_pb2.SetPhotoConsentRequest(booking_id=booking_id, granted=body.granted)
    )
    return consent_view(response.consent, staff=True)


@router.get(
    "/v1/client/portal/bookings/{booking_id}/photo-consent",
    description=CLIENT_AUTH,
    summary="The photo consent of one of the signed-in client's bookings",
    dependencies=[PORTAL],
)
async def client_consent(
    booking_id: Id, media: Media, client: Principal = Depends(require_client)
) -> dict[str, Any]:
    response = await media.GetPhotoConsent(media_pb2.GetPhotoConsentRequest(booking_id=booking_id))
    return consent_view(response.consent, staff=False)


@router.put(
    "/v1/client/portal/bookings/{booking_id}/photo-consent",
    description=CLIENT_AUTH,
    summary="Give (granted true) or withdraw (false) photo consent for one's own booking",
    dependencies=[PORTAL],
)
async def client_set_consent(
    booking_id: Id, body: ConsentIn, media: Media, client: Principal = Depends(require_client)
) -> dict[str, Any]:
    response = await media.SetPhotoConsent(
        media_pb2.SetPhotoConsentRequest(booking_id=booking_id, granted=body.granted)
    )
    return consent_view(response.consent, staff=False)


# --- the client's photos ---------------------------------------------------------------------------


@router.get(
    "/v1/client/portal/bookings/{booking_id}/photos",
    description=CLIENT_AUTH,
    summary="The photos of one of the signed-in client's bookings (metadata and a download path each)",
    dependencies=[PORTAL],
)
async def client_photos(
    booking_id: Id, media: Media, client: Principal = Depends(require_client)
) -> dict[str, Any]:
    response = await media.ListClientPhotos(media_pb2.ListClientPhotosRequest(booking_id=booking_id))
    booking = response.consent.booking_id or booking_id
    return {
        "booking_id": booking,
        "consent": consent_view(response.consent, staff=False),
        "photos": [
            {
                "photo_id": photo.id,
                "mime": photo.mime,
                "bytes": photo.bytes,
                "width": photo.width,
                "height": photo.height,
                "created_at": optional_time(photo, "created_at"),
                "download": download_path(booking, photo.id),
            }
            for photo in response.photos
        ],
    }


# --- links -----------------------------------------------------------------------------------------


@router.get(
    "/v1/admin/photos/{photo_id}/signed_url",
    dependencies=[ADMIN, ANY_STAFF],
    summary="A short-lived signed link to one photo (PHOTO_URL_TTL_SECONDS); needs active photo consent",
    responses={409: {"description": "photo_consent_required: no active consent for the photo's booking"}},
)
async def signed_url(photo_id: Id, request: Request, media: Media) -> Response:
    signed = await media.SignPhotoUrl(
        media_pb2.SignPhotoUrlRequest(photo_id=photo_id, user_agent=_user_agent(request))
    )
    body = {
        "url": str(request.url_for("open_photo_link", token=signed.token)),
        "expires_at": signed.expires_at.ToJsonString(),
    }
    return ORJSONResponse(body, headers=PRIVATE)


@router.get(
    "/v1/orders/{order_id}/photos/{photo_id}/signed-download",
    description=CLIENT_AUTH,
    summary="The signed-in client's photo of their booking: a 302 to a short-lived signed link",
    status_code=302,
    response_class=RedirectResponse,
    dependencies=[PORTAL],
)
async def signed_download(
    order_id: Id, photo_id: Id, request: Request, media: Media, client: Principal = Depends(require_client)
) -> RedirectResponse:
    signed = await media.SignClientPhotoUrl(
        media_pb2.SignClientPhotoUrlRequest(
            booking_id=order_id, photo_id=photo_id, user_agent=_user_agent(request)
        )
    )
    return RedirectResponse(
        str(request.url_for("open_photo_link", token=signed.token)), status_code=302, headers=PRIVATE
    )


@router.get(
    "/v1/public/photos/{token}",
    name="open_photo_link",
    summary="Open a signed photo link: a 302 to the storage's short-lived URL, or the photo itself",
    responses={
        200: {"description": "the photo (local storage)", "content": {"image/*": {}}},
        302: {"description": "to the storage's own short-lived URL"},
        404: {"description": "no such link (forged, tampered, another browser) or photo"},
        410: {"description": "photo_link_expired, or photo_link_used (one-time links)"},
    },
    dependencies=[PUBLIC],
)
async def open_photo_link(token: Token, request: Request, media: Media) -> Response:
    call: Any = media.OpenPhotoLink(
        media_pb2.OpenPhotoLinkRequest(token=token, user_agent=_user_agent(request)), timeout=STREAM_SECONDS
    )
    messages: AsyncIterator[media_pb2.OpenPhotoLinkResponse] = call.__aiter__()
    try:
        first = await anext(messages)
    except BaseException:
        call.cancel()
        raise
    head = first.head
    if head.redirect_url:
        call.cancel()
        return RedirectResponse(head.redirect_url, status_code=302, headers=PRIVATE)
    mime = head.mime if head.mime.startswith("image/") else "application/octet-stream"

    async def body() -> AsyncIterator[bytes]:
        try:
            async for message in messages:
                yield message.chunk
        finally:
            call.cancel()

    return StreamingResponse(
        body(),
        media_type=mime,
        headers={**PHOTO_HEADERS, "Content-Length": str(head.bytes), "Content-Disposition": "inline"},
    )
