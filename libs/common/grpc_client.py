"""gRPC clients: one channel per target, created at start-up inside the running loop and reused;
every call carries the signed request context and a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from libs.common.context import RequestContext, signed_metadata

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class ServiceClient:
    """A stub plus what every call needs: the internal secret to sign contexts and a deadline."""

    def __init__(
        self,
        target: str,
        stub_factory: Callable[[grpc.aio.Channel], Any],
        *,
        secret: str,
        deadline_seconds: float,
    ) -> None:
        self.target = target
        self.channel = open_channel(target)
        self.stub = stub_factory(self.channel)
        self.secret = secret
        self.deadline_seconds = deadline_seconds

    async def call(
        self, method: str, request: Any, ctx: RequestContext, *, timeout: float | None = None
    ) -> Any:
        rpc: Callable[..., Awaitable[Any]] = getattr(self.stub, method)
        return await rpc(
            request,
            metadata=signed_metadata(ctx, self.secret),
            timeout=timeout or self.deadline_seconds,
            wait_for_ready=False,
        )

    async def close(self) -> None:
        await self.channel.close(grace=None)
