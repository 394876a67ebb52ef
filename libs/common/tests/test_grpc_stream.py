"""Client-streaming calls (media's upload) through the same machinery as unary ones, against a real
grpc.aio server in this process: the client's SigningInterceptor signs them and applies the deadline,
the server's ContextInterceptor verifies the signature before the servicer reads a message, makes the
context current and maps typed errors to statuses; a stream without a valid signature never reaches
the servicer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from cws.media.v1 import media_pb2, media_pb2_grpc

from libs.common import context as request_context
from libs.common import status as rich_status
from libs.common.call_signing import CallVerifier
from libs.common.context import RequestContext
from libs.common.errors import PayloadTooLarge
from libs.common.grpc_client import MissingCallContext, Peer, acting_as, open_peer
from libs.common.grpc_server import ContextInterceptor
from libs.common.internal_keys import CallSigner
from tools.testkit import GATEWAY, JWT

UPLOAD = "/cws.media.v1.MediaService/UploadPhoto"


@dataclass
class Uploads(media_pb2_grpc.MediaServiceServicer):
    """Counts the chunks of each upload and answers with who the call acted as."""

    seen: list[tuple[str, str, int, float | None]] = field(default_factory=list)
    limit: int = 1 << 30

    async def UploadPhoto(
        self, request_iterator: AsyncIterator[media_pb2.UploadPhotoRequest], context: grpc.aio.ServicerContext
    ) -> media_pb2.UploadPhotoResponse:
        ctx = request_context.current()  # verified before the first message is read
        total = 0
        booking = ""
        async for message in request_iterator:
            if message.WhichOneof("part") == "metadata":
                booking = message.metadata.booking_id
            total += len(message.chunk)
            if total > self.limit:
                raise PayloadTooLarge(f"more than {self.limit} bytes")
        self.seen.append((ctx.principal_id, booking, total, context.time_remaining()))
        return media_pb2.UploadPhotoResponse(
            photo=media_pb2.Photo(id=str(uuid.uuid4()), booking_id=booking, bytes=total, org_id=ctx.org_id)
        )


@dataclass
class Server:
    target: str
    uploads: Uploads


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    uploads = Uploads(limit=6 * 1024 * 1024)
    verifier = CallVerifier({"gateway": (GATEWAY.key.public_key(),)}, max_age_seconds=60)
    grpc_server = grpc.aio.server(interceptors=[ContextInterceptor("media", verifier)])
    media_pb2_grpc.add_MediaServiceServicer_to_server(uploads, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield Server(f"127.0.0.1:{port}", uploads)
    finally:
        await grpc_server.stop(None)


def dispatcher(org_id: str) -> RequestContext:
    return RequestContext(
        org_id=org_id,
        principal_id=str(uuid.uuid4()),
        role="DISPATCHER",
        auth_method=JWT,  # type: ignore[arg-type]
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        session_id=str(uuid.uuid4()),
    )


async def messages(
    booking_id: str, size: int, chunk: int = 256 * 1024
) -> AsyncIterator[media_pb2.UploadPhotoRequest]:
    yield media_pb2.UploadPhotoRequest(metadata=media_pb2.UploadMetadata(booking_id=booking_id))
    sent = 0
    while sent < size:
        part = min(chunk, size - sent)
        yield media_pb2.UploadPhotoRequest(chunk=b"\xab" * part)
        sent += part


def peer_of(
    server: Server, signer: CallSigner | None = GATEWAY
) -> Peer[media_pb2_grpc.MediaServiceAsyncStub]:
    return open_peer(
        "media", server.target, media_pb2_grpc.MediaServiceStub, signer=signer, deadline_seconds=7
    )


async def test_a_stream_past_the_default_message_size_arrives_signed_with_its_deadline(
    server: Server,
) -> None:
    peer = peer_of(server)
    ctx = dispatcher(str(uuid.uuid4()))
    booking = str(uuid.uuid4())
    size = 5 * 1024 * 1024  # past gRPC's 4 MiB message limit, in 20 messages
    try:
        with acting_as(ctx):
            answer = await peer.stub.UploadPhoto(messages(booking, size))
    finally:
        await peer.close()
    assert (answer.photo.booking_id, answer.photo.bytes, answer.photo.org_id) == (booking, size, ctx.org_id)
    [(principal, got_booking, total, remaining)] = server.uploads.seen
    assert (principal, got_booking, total) == (ctx.principal_id, booking, size)
    assert remaining is not None and 5 < remaining <= 7.05, "the peer's default deadline reached the server"


async def test_a_typed_error_of_a_stream_is_its_status_with_the_reason(server: Server) -> None:
    peer = peer_of(server)
    try:
        with acting_as(dispatcher(str(uuid.uuid4()))), pytest.raises(grpc.aio.AioRpcError) as failed:
            await peer.stub.UploadPhoto(messages(str(uuid.uuid4()), 7 * 1024 * 1024))
    finally:
        await peer.close()
    assert failed.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert rich_status.decode(failed.value).reason == "payload_too_large"


async def test_a_stream_signed_by_an_unknown_key_never_reaches_the_servicer(server: Server) -> None:
    peer = peer_of(server, signer=CallSigner.new("gateway"))
    try:
        with acting_as(dispatcher(str(uuid.uuid4()))), pytest.raises(grpc.aio.AioRpcError) as refused:
            await peer.stub.UploadPhoto(messages(str(uuid.uuid4()), 1024))
    finally:
        await peer.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.uploads.seen == []


async def test_an_unsigned_stream_is_refused(server: Server) -> None:
    channel = grpc.aio.insecure_channel(server.target)
    try:
        stub = media_pb2_grpc.MediaServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UploadPhoto(messages(str(uuid.uuid4()), 1024), timeout=5)
    finally:
        await channel.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.uploads.seen == []


async def test_a_stream_outside_acting_as_is_refused_before_anything_is_sent(server: Server) -> None:
    peer = peer_of(server)
    try:
        with pytest.raises(MissingCallContext, match="UploadPhoto"):
            await peer.stub.UploadPhoto(messages(str(uuid.uuid4()), 1024))
    finally:
        await peer.close()
    assert server.uploads.seen == []
