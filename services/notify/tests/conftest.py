"""Fixtures the notify tests share (the suite-wide ones are in the root conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.notify.peers import Peers, open_peers
from services.notify.settings import NotifySettings
from tools.processes import DEV_SECRETS


@pytest.fixture
async def peers(iam: Any, booking: Any) -> AsyncIterator[Peers]:
    """Notify's clients of IAM and booking, as the consumers and the scheduled RPCs use them."""
    settings = NotifySettings(  # type: ignore[call-arg]
        _env_file=None,
        internal_context_secret=DEV_SECRETS["INTERNAL_CONTEXT_SECRET"],
        iam_grpc_target=iam.target,
        booking_grpc_target=booking.target,
    )
    opened = open_peers(settings)
    yield opened
    await opened.close()
