"""Media's servicer part for consent and signed delivery: the edge of each call (who may, which ids),
the work in consent.py and delivery.py. A mixin of MediaServicer (grpc_api.py), as billing's parts are.

Who may:
- staff of the org read a booking's consent and sign staff links (consent required); DISPATCHER or
  higher record it (audited);
- a client portal user acts on their own bookings only: media asks booking for the booking (as
  itself, in the caller's org) and compares its client email with the portal session's, exactly as
  booking confines portal reads; any other booking is NOT_FOUND, so ids cannot be probed;
- anyone holding a link opens it (the token is the capability; the gateway calls anonymously)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
from cws.booking.v1 import booking_pb2
from cws.media.v1 import media_pb2
from redis.asyncio import Redis

from libs.common import context as request_context
from libs.common.context import RequestContext
from libs.common.convert import parse_id, to_ts
from libs.common.db import Database, unit_of_work
from libs.common.errors import NotFound, PermissionDenied
from libs.common.grpc_client import acting_as, peer_answers
from libs.common.roles import DISPATCH, STAFF, Role
from services.media import consent, delivery, links
from services.media.peers import Peers
from services.media.settings import MediaSettings
from services.media.storage.base import Storage

CLIENT_PORTAL = request_context.AuthMethod.Value("AUTH_METHOD_CLIENT_PORTAL")
# A User-Agent is hashed, never stored; a longer one is no browser's.
MAX_USER_AGENT = 1024


def consent_message(state: consent.Consent) -> media_pb2.PhotoConsent:
    message = media_pb2.PhotoConsent(
        booking_id=str(state.booking_id),
        recorded=state.recorded,
        granted=state.active,
        granted_by=state.granted_by,
        source=state.source,
    )
    if state.granted_at is not None:
        message.granted_at.CopyFrom(to_ts(state.granted_at))
    if state.withdrawn_at is not None:
        message.withdrawn_at.CopyFrom(to_ts(state.withdrawn_at))
    return message


def _is_client(ctx: RequestContext) -> bool:
    return ctx.auth_method == CLIENT_PORTAL and ctx.role == Role.CLIENT and bool(ctx.principal_id)


class DeliveryApi:
    db: Database
    settings: MediaSettings
    peers: Peers
    storage: Storage
    _link_store: Redis | None = None

    # --- who may -------------------------------------------------------------------------------

    async def _client_booking(self, ctx: RequestContext, booking_id: uuid.UUID) -> None:
        """The booking is the signed-in client's own, else NotFound (as booking answers a portal)."""
        org_id = request_context.current_org_id()
        with (
            acting_as(request_context.service_context("media", str(org_id))),
            peer_answers("booking", refused_means_not_found=True),
        ):
            found = await self.peers.booking.stub.GetBooking(
                booking_pb2.GetBookingRequest(booking_id=str(booking_id))
            )
        email = found.booking.client_email.strip().lower()
        if not email or email != ctx.principal_id.strip().lower():
            raise NotFound("no such booking in this organisation", code="booking_not_found")

    async def _booking_of_caller(self, booking_id: uuid.UUID, *, write: bool) -> tuple[RequestContext, str]:
        """Staff (DISPATCH to write) on a booking of their org, or the booking's own client; the
        consent source the caller speaks for."""
        ctx = request_context.current()
        if _is_client(ctx):
            await self._client_booking(ctx, booking_id)
            return ctx, consent.CLIENT_PORTAL
        request_context.require_role(*(DISPATCH if write else STAFF))
        await self.peers.booking_facts(request_context.current_org_id(), booking_id)
        return ctx, consent.STAFF

    def _store(self) -> Redis:
        # One client per process, made on first use inside the running loop (connects lazily).
        if self._link_store is None:
            self._link_store = links.store_client(self.settings.redis_url)
        return self._link_store

    # --- consent -------------------------------------------------------------------------------

    async def GetPhotoConsent(
        self, request: media_pb2.GetPhotoConsentRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.GetPhotoConsentResponse:
        booking_id = parse_id(request.booking_id, "booking_id")
        await self._booking_of_caller(booking_id, write=False)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            state = await consent.get(uow, booking_id)
        return media_pb2.GetPhotoConsentResponse(consent=consent_message(state))

    async def SetPhotoConsent(
        self, request: media_pb2.SetPhotoConsentRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.SetPhotoConsentResponse:
        booking_id = parse_id(request.booking_id, "booking_id")
        ctx, source = await self._booking_of_caller(booking_id, write=True)
        async with unit_of_work(self.db, request_context.current_org_id()) as uow:
            state = await consent.record(
                uow, booking_id, granted=request.granted, by=ctx.principal_id, source=source
            )
        return media_pb2.SetPhotoConsentResponse(consent=consent_message(state))

    # --- links ---------------------------------------------------------------------------------

    async def SignPhotoUrl(
        self, request: media_pb2.SignPhotoUrlRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.SignPhotoUrlResponse:
        request_context.require_role(*STAFF)
        signed = await delivery.sign_for_staff(
            self.db,
            self.settings,
            request_context.current_org_id(),
            parse_id(request.photo_id, "photo_id"),
            request.user_agent[:MAX_USER_AGENT],
        )
        return media_pb2.SignPhotoUrlResponse(token=signed.token, expires_at=to_ts(signed.expires_at))

    async def SignClientPhotoUrl(
        self, request: media_pb2.SignClientPhotoUrlRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.SignClientPhotoUrlResponse:
        ctx = self._require_client()
        booking_id = parse_id(request.booking_id, "booking_id")
        photo_id = parse_id(request.photo_id, "photo_id")
        await self._client_booking(ctx, booking_id)
        signed = await delivery.sign_for_client(
            self.db,
            self.settings,
            request_context.current_org_id(),
            booking_id,
            photo_id,
            request.user_agent[:MAX_USER_AGENT],
        )
        return media_pb2.SignClientPhotoUrlResponse(token=signed.token, expires_at=to_ts(signed.expires_at))

    async def ListClientPhotos(
        self, request: media_pb2.ListClientPhotosRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.ListClientPhotosResponse:
        ctx = self._require_client()
        booking_id = parse_id(request.booking_id, "booking_id")
        await self._client_booking(ctx, booking_id)
        rows, state = await delivery.client_photos(self.db, request_context.current_org_id(), booking_id)
        return media_pb2.ListClientPhotosResponse(
            photos=[
                media_pb2.ClientPhoto(
                    id=str(row.id),
                    mime=row.mime,
                    bytes=row.bytes,
                    width=row.width,
                    height=row.height,
                    created_at=to_ts(row.created_at),
                )
                for row in rows
            ],
            consent=consent_message(state),
        )

    async def OpenPhotoLink(
        self, request: media_pb2.OpenPhotoLinkRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.OpenPhotoLinkResponse]:
        opened = await delivery.open_link(
            self.db,
            self.settings,
            self.storage,
            self._store,
            request.token,
            request.user_agent[:MAX_USER_AGENT],
        )
        yield media_pb2.OpenPhotoLinkResponse(
            head=media_pb2.PhotoHead(
                redirect_url=opened.redirect_url or "", mime=opened.mime, bytes=opened.size
            )
        )
        if opened.chunks is not None:
            async for chunk in opened.chunks:
                yield media_pb2.OpenPhotoLinkResponse(chunk=chunk)

    @staticmethod
    def _require_client() -> RequestContext:
        ctx = request_context.current()
        if not _is_client(ctx):
            raise PermissionDenied("for the client portal only", code="forbidden_role")
        return ctx
