"""gRPC clients: typed stubs over channels opened once at start-up inside the running loop.

Callers use the generated stubs directly (`await booking.CreateLead(request)`); what every call
needs is added by `SigningInterceptor`: the request context of whoever the caller acts as, signed
with this process's own key together with the method and the request (libs/common/call_signing.py),
and a deadline. Who that is comes from `acting_as` (a context variable), so a method name is never
a string and a reader can jump from any call to the servicer method it reaches.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from libs.common import tracing
from libs.common.call_signing import sign_call
from libs.common.context import RequestContext
from libs.common.errors import InvalidArgument, NotFound, Unavailable
from libs.common.internal_keys import CallSigner

StubT = TypeVar("StubT")

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # A channel that saw its service down retries on a doubling backoff, by default up to two minutes:
    # calls to a service restarted a moment ago kept failing fast with UNAVAILABLE long after it was
    # back (the erasure driver's next run, the gateway's next request). Two seconds at most costs a
    # down service one connection attempt every two seconds per channel.
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

_outgoing: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "cws_outgoing_context", default=None
)


def set_outgoing(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    """Calls made from here on in this task (and tasks it starts) act as `ctx`. The gateway sets it
    once per request in its stub dependencies; see `acting_as` for a scoped form."""
    return _outgoing.set(ctx)


@contextmanager
def acting_as(ctx: RequestContext) -> Iterator[RequestContext]:
    """Calls inside the block act as `ctx`: a service acting on its own (`service_context(...)`),
    or the gateway's middleware before a route runs."""
    token = _outgoing.set(ctx)
    try:
        yield ctx
    finally:
        _outgoing.reset(token)


class MissingCallContext(RuntimeError):
    """A call was made without saying who it acts as: a programming error, never a caller's."""


class MissingSigningKey(RuntimeError):
    """This process has no INTERNAL_SIGNING_KEY, so it cannot call other services (prod refuses to
    start so; dev and test processes started by tools/processes.py always get one)."""


# A client-streaming call (media's upload) is signed before its first message is sent, so its body
# cannot be hashed into the signature without buffering the whole stream: the signature covers the
# caller, the method, the context and this digest of an empty body instead, and the server verifies
# the same (libs/common/grpc_server.py). The caller and what it acts as stay proven; the messages are
# as trustworthy as the channel they travel on.
STREAM_BODY = b""


class _Signer:
    """What both signing interceptors add to a call's details. Two classes, because grpc.aio files
    each interceptor under the first call shape it implements only (a class implementing two shapes
    would intercept just one of them)."""

    def __init__(self, signer: CallSigner | None, deadline_seconds: float) -> None:
        self.signer = signer
        self.deadline_seconds = deadline_seconds

    def _signed(
        self, client_call_details: grpc.aio.ClientCallDetails, body: bytes
    ) -> grpc.aio.ClientCallDetails:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        ctx = _outgoing.get()
        if ctx is None:
            raise MissingCallContext(f"{name} was called outside acting_as()/set_outgoing()")
        if self.signer is None:
            raise MissingSigningKey(f"INTERNAL_SIGNING_KEY is not set: this process cannot call {name}")
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        for key, value in sign_call(ctx, self.signer, name, body):
            metadata.add(key, value)
        return grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout or self.deadline_seconds,
            metadata=metadata,
            credentials=client_call_details.credentials,
            wait_for_ready=False,
        )


class SigningInterceptor(_Signer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the signed context of `acting_as`/`set_outgoing` and the default deadline to each call.

    The body digest is taken over `request.SerializeToString()`, the serializer the generated stub
    itself uses (`request_serializer=...Request.SerializeToString`); the same message object
    serialized twice by the same protobuf runtime gives the same bytes, so the service hashes exactly
    what was signed. This must stay the outermost interceptor that could change a request."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._signed(client_call_details, request.SerializeToString()), request)


class StreamSigningInterceptor(_Signer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """The same for client-streaming calls, signed over STREAM_BODY (above)."""

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._signed(client_call_details, STREAM_BODY), request_iterator)


class UnaryStreamSigningInterceptor(_Signer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """The same for server-streaming calls (media's OpenPhotoLink): one request, so it is signed over
    the request's bytes exactly as a unary call is."""

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._signed(client_call_details, request.SerializeToString()), request)


def open_channel(target: str, interceptors: Sequence[Any] = ()) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=list(interceptors))


@dataclass
class Peer(Generic[StubT]):
    """One service as seen by a caller: its typed stub over a signing channel, plus a plain channel
    for the health and ops probes, which carry no context."""

    name: str
    target: str
    stub: StubT
    channel: grpc.aio.Channel
    plain_channel: grpc.aio.Channel

    async def close(self) -> None:
        await self.channel.close(grace=None)
        await self.plain_channel.close(grace=None)


def open_peer(
    name: str,
    target: str,
    stub_class: Callable[[grpc.aio.Channel], StubT],
    *,
    signer: CallSigner | None,
    deadline_seconds: float,
    interceptors: Sequence[Any] = (),
) -> Peer[StubT]:
    """`stub_class` is the generated `...ServiceStub`; typed callers annotate the result with the
    generated `...ServiceAsyncStub` (mypy-protobuf), which is what a stub over an aio channel is.
    `signer` is the calling process's identity (settings.call_signer)."""
    signing = [
        SigningInterceptor(signer, deadline_seconds),
        StreamSigningInterceptor(signer, deadline_seconds),
        UnaryStreamSigningInterceptor(signer, deadline_seconds),
    ]
    # The tracing interceptors (tracing on) put the trace context in the call's metadata.
    channel = open_channel(target, [*tracing.grpc_client_interceptors(), *signing, *interceptors])
    return Peer(name, target, stub_class(channel), channel, open_channel(target))


@contextmanager
def peer_answers(service: str, *, refused_means_not_found: bool = False) -> Iterator[None]:
    """A peer's refusal as the caller's own answer, never an unexpected error (a 502 at the gateway):
    NOT_FOUND stays not found; INVALID_ARGUMENT is a 422 naming the peer's reason, or not found where
    the caller passed on an id the peer could not read (`refused_means_not_found`); anything else
    (down, timed out) is UNAVAILABLE, which callers may retry."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        code = error.code()
        if code == grpc.StatusCode.NOT_FOUND or (
            refused_means_not_found and code == grpc.StatusCode.INVALID_ARGUMENT
        ):
            raise NotFound(f"not found by the {service} service", code=f"{service}_not_found") from None
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidArgument(
                f"the {service} service refused it: {error.details()}", code=f"{service}_refused"
            ) from None
        raise Unavailable(
            f"the {service} service is unavailable; try again shortly", code=f"{service}_unavailable"
        ) from None
