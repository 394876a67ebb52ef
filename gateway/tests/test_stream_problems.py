"""The gateway's Problem+JSON mapping for client-streaming calls (media's upload), against a real
grpc.aio server in this process behind the real ContextInterceptor: a typed refusal of a stream
reaches the route as the ProblemError for its reason (413, 415, 404), and an answer comes through
as the response."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from cws.media.v1 import media_pb2, media_pb2_grpc

from gateway.clients import make_backend
from gateway.problems import ProblemError
from gateway.settings import GatewaySettings
from libs.common.call_signing import CallVerifier
from libs.common.context import RequestContext
from libs.common.errors import InvalidArgument, NotFound, PayloadTooLarge
from libs.common.grpc_client import acting_as
from libs.common.grpc_server import ContextInterceptor
from tools.processes import DEV_KEYRING, DEV_SECRETS
from tools.testkit import JWT

REFUSALS = {
    "big": PayloadTooLarge("too big"),
    "html": InvalidArgument("not an image", code="unsupported_media_type"),
    "elsewhere": NotFound("no such booking", code="booking_not_found"),
}


class Uploads(media_pb2_grpc.MediaServiceServicer):
    async def UploadPhoto(
        self, request_iterator: AsyncIterator[media_pb2.UploadPhotoRequest], context: grpc.aio.ServicerContext
    ) -> media_pb2.UploadPhotoResponse:
        booking = ""
        size = 0
        async for message in request_iterator:
            booking = booking or message.metadata.booking_id
            size += len(message.chunk)
        if booking in REFUSALS:
            raise REFUSALS[booking]
        return media_pb2.UploadPhotoResponse(photo=media_pb2.Photo(booking_id=booking, bytes=size))


def dispatcher() -> RequestContext:
    return RequestContext(
        org_id=str(uuid.uuid4()),
        principal_id=str(uuid.uuid4()),
        role="DISPATCHER",
        auth_method=JWT,  # type: ignore[arg-type]
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        session_id=str(uuid.uuid4()),
    )


@pytest.fixture
async def target() -> AsyncIterator[str]:
    gateway_key = DEV_KEYRING.signer("gateway")
    verifier = CallVerifier({"gateway": (gateway_key.key.public_key(),)}, max_age_seconds=60)
    server = grpc.aio.server(interceptors=[ContextInterceptor("media", verifier)])
    media_pb2_grpc.add_MediaServiceServicer_to_server(Uploads(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def messages(booking: str) -> AsyncIterator[media_pb2.UploadPhotoRequest]:
    yield media_pb2.UploadPhotoRequest(metadata=media_pb2.UploadMetadata(booking_id=booking))
    for _ in range(3):
        yield media_pb2.UploadPhotoRequest(chunk=b"x" * 1000)


@pytest.mark.parametrize(
    ("booking", "status", "code"),
    [
        ("big", 413, "payload_too_large"),
        ("html", 415, "unsupported_media_type"),
        ("elsewhere", 404, "booking_not_found"),
    ],
)
async def test_a_refused_stream_is_the_problem_of_its_reason(
    target: str, booking: str, status: int, code: str
) -> None:
    settings = GatewaySettings(
        app_env="test",
        redis_url="",
        media_grpc_target=target,
        **{k.lower(): v for k, v in DEV_SECRETS.items()},
        **{k.lower(): v for k, v in DEV_KEYRING.env_for("gateway").items()},
    )
    backend = make_backend("media", target, media_pb2_grpc.MediaServiceStub, settings)
    try:
        with acting_as(dispatcher()), pytest.raises(ProblemError) as refused:
            await backend.stub.UploadPhoto(messages(booking))
        assert (refused.value.status, refused.value.code) == (status, code)
        with acting_as(dispatcher()):
            answer = await backend.stub.UploadPhoto(messages("fine"))
        assert (answer.photo.booking_id, answer.photo.bytes) == ("fine", 3000)
    finally:
        await backend.close()
