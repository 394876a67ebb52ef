"""Server-streaming calls (media's OpenPhotoLink) through the same machinery as unary ones, against a
real grpc.aio server in this process: the client's UnaryStreamSigningInterceptor signs the request,
the server's ContextInterceptor verifies it before the servicer's generator runs, makes the context
current for the whole stream and maps a typed error (before or after the first message) to its
status; the gateway's ServerStreamProblemInterceptor turns that status into a ProblemError. A request
changed after signing, or not signed, never reaches the servicer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from cws.media.v1 import media_pb2, media_pb2_grpc

from gateway.clients import ServerStreamProblemInterceptor
from gateway.problems import ProblemError
from libs.common import context as request_context
from libs.common import status as rich_status
from libs.common.call_signing import CallVerifier
from libs.common.context import RequestContext
from libs.common.errors import NotFound
from libs.common.grpc_client import Peer, acting_as, open_peer
from libs.common.grpc_server import ContextInterceptor
from tools.testkit import GATEWAY

ANONYMOUS = request_context.AuthMethod.Value("AUTH_METHOD_ANONYMOUS")
CHUNKS = 40
CHUNK = b"\x5a" * 64 * 1024  # 2.5 MiB in all


@dataclass
class Links(media_pb2_grpc.MediaServiceServicer):
    seen: list[tuple[str, str]] = field(default_factory=list)

    async def OpenPhotoLink(
        self, request: media_pb2.OpenPhotoLinkRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.OpenPhotoLinkResponse]:
        ctx = request_context.current()  # verified before the generator runs
        self.seen.append((ctx.request_id, request.token))
        if request.token == "missing":
            raise NotFound("photo not found", code="photo_link_invalid")
        yield media_pb2.OpenPhotoLinkResponse(
            head=media_pb2.PhotoHead(mime="image/jpeg", bytes=CHUNKS * len(CHUNK))
        )
        for index in range(CHUNKS):
            if request.token == "breaks" and index == 3:
                raise NotFound("gone mid-stream", code="photo_not_found")
            # The context stays current for the whole stream, not just its start.
            assert request_context.current().request_id == ctx.request_id
            yield media_pb2.OpenPhotoLinkResponse(chunk=CHUNK)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Links]]:
    links = Links()
    verifier = CallVerifier({"gateway": (GATEWAY.key.public_key(),)}, max_age_seconds=60)
    grpc_server = grpc.aio.server(interceptors=[ContextInterceptor("media", verifier)])
    media_pb2_grpc.add_MediaServiceServicer_to_server(links, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield f"127.0.0.1:{port}", links
    finally:
        await grpc_server.stop(None)


def anonymous() -> RequestContext:
    return RequestContext(
        org_id=str(uuid.uuid4()), auth_method=ANONYMOUS, request_id=f"req-{uuid.uuid4().hex[:8]}"
    )


def peer(target: str, *, problems: bool = False) -> Peer[media_pb2_grpc.MediaServiceAsyncStub]:
    return open_peer(
        "media",
        target,
        media_pb2_grpc.MediaServiceStub,
        signer=GATEWAY,
        deadline_seconds=7,
        interceptors=[ServerStreamProblemInterceptor("media")] if problems else [],
    )


async def read_all(
    stub: media_pb2_grpc.MediaServiceAsyncStub, token: str
) -> list[media_pb2.OpenPhotoLinkResponse]:
    return [message async for message in stub.OpenPhotoLink(media_pb2.OpenPhotoLinkRequest(token=token))]


async def test_a_signed_stream_arrives_whole(server: tuple[str, Links]) -> None:
    target, links = server
    client = peer(target)
    ctx = anonymous()
    try:
        with acting_as(ctx):
            messages = await read_all(client.stub, "good")
    finally:
        await client.close()
    assert messages[0].head.bytes == CHUNKS * len(CHUNK)
    assert b"".join(m.chunk for m in messages[1:]) == CHUNK * CHUNKS
    assert links.seen == [(ctx.request_id, "good")]


async def test_typed_errors_before_and_during_a_stream_are_statuses(server: tuple[str, Links]) -> None:
    target, _ = server
    client = peer(target)
    try:
        with acting_as(anonymous()), pytest.raises(grpc.aio.AioRpcError) as before:
            await read_all(client.stub, "missing")
        with acting_as(anonymous()), pytest.raises(grpc.aio.AioRpcError) as during:
            await read_all(client.stub, "breaks")
    finally:
        await client.close()
    assert before.value.code() == during.value.code() == grpc.StatusCode.NOT_FOUND
    assert rich_status.decode(before.value).reason == "photo_link_invalid"
    assert rich_status.decode(during.value).reason == "photo_not_found"


async def test_the_gateway_reads_a_streams_error_as_a_problem(server: tuple[str, Links]) -> None:
    target, _ = server
    client = peer(target, problems=True)
    try:
        with acting_as(anonymous()), pytest.raises(ProblemError) as problem:
            await read_all(client.stub, "missing")
        with acting_as(anonymous()):
            call = client.stub.OpenPhotoLink(media_pb2.OpenPhotoLinkRequest(token="good"))
            stream = call.__aiter__()
            first = await anext(stream)
            call.cancel()  # the HTTP client went away after the head: the call ends, nothing hangs
    finally:
        await client.close()
    assert (problem.value.status, problem.value.code) == (404, "photo_link_invalid")
    assert first.head.mime == "image/jpeg"


async def test_an_unsigned_stream_never_reaches_the_servicer(server: tuple[str, Links]) -> None:
    target, links = server
    channel = grpc.aio.insecure_channel(target)
    try:
        stub = media_pb2_grpc.MediaServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await read_all(stub, "good")
    finally:
        await channel.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert links.seen == []
