"""Fixtures the notify tests share (the suite-wide ones are in the root conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cws.notify.v1 import notify_pb2_grpc

from services.notify.peers import Peers, open_peers
from services.notify.settings import NotifySettings
from tools.devstack import free_port
from tools.processes import DEV_KEYRING
from tools.testkit import signing_channel

if TYPE_CHECKING:
    from cws.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub


@pytest.fixture
async def peers(iam: Any, booking: Any) -> AsyncIterator[Peers]:
    """Notify's clients of IAM and booking, as the consumers and the scheduled RPCs use them."""
    settings = NotifySettings(  # type: ignore[call-arg]
        _env_file=None,
        internal_signing_key=DEV_KEYRING.private["notify"],
        iam_grpc_target=iam.target,
        booking_grpc_target=booking.target,
    )
    opened = open_peers(settings)
    yield opened
    await opened.close()


@pytest.fixture
async def peers_without_iam(booking: Any) -> AsyncIterator[Peers]:
    """The same clients with IAM unreachable (nothing listens on its port)."""
    settings = NotifySettings(  # type: ignore[call-arg]
        _env_file=None,
        internal_signing_key=DEV_KEYRING.private["notify"],
        iam_grpc_target=f"127.0.0.1:{free_port()}",
        booking_grpc_target=booking.target,
    )
    opened = open_peers(settings)
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
async def notify_at() -> AsyncIterator[Callable[[str], NotifyServiceAsyncStub]]:
    """`notify_at(target)`: the typed stub of the notify process at `target` (the session's, or a
    test's own), one channel per target for the session. Calls pass their signed context as
    metadata (tools.testkit.as_role / as_service), signed per call by the channel."""
    channels: dict[str, grpc.aio.Channel] = {}

    def stub(target: str) -> NotifyServiceAsyncStub:
        if target not in channels:
            channels[target] = signing_channel(target)
        return notify_pb2_grpc.NotifyServiceStub(channels[target])

    yield stub
    for channel in channels.values():
        await channel.close()


@pytest.fixture
def stub(notify: Any, notify_at: Callable[[str], NotifyServiceAsyncStub]) -> NotifyServiceAsyncStub:
    """The session notify's typed stub."""
    return notify_at(notify.target)
