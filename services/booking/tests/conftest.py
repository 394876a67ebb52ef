"""Fixtures of the booking tests that need more than the suite's own processes.

Following a magic link needs the token, which normally only reaches the client by email; the portal
tests run a second IAM process with CLIENT_MAGIC_LINK_IN_RESPONSE=true (and a gateway in front of
it), and check with the suite's ordinary IAM that the link is absent by default."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tools.processes import GatewayProc, ServiceProc, gateway_proc, service_proc


@dataclass(frozen=True)
class MagicStack:
    gateway: GatewayProc
    iam: ServiceProc


@pytest.fixture(scope="session")
def magic(gateways: Any, stack: Any) -> Iterator[MagicStack]:
    logs = stack.work_dir / "logs-portal"
    iam = service_proc("iam", {**stack.env(), "CLIENT_MAGIC_LINK_IN_RESPONSE": "true"}, logs).start()
    gateway = gateway_proc(
        {**gateways.base_env(), "IAM_GRPC_TARGET": iam.target}, logs, label="gateway-portal"
    )
    gateway.start()  # in parallel with IAM: the gateway needs no backend to come up
    try:
        iam.wait_ready()
        yield MagicStack(gateway.wait_ready(), iam)
    finally:
        gateway.stop()
        iam.stop()


@pytest.fixture
def magic_gateway(magic: MagicStack) -> GatewayProc:
    return magic.gateway
