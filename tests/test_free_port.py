"""tools.devstack.free_port: the ports the tests, `make dev` and the bench give their servers."""

from __future__ import annotations

import socket
from pathlib import Path

from tools.devstack import LOWEST_PORT, ephemeral_range, first_free, free_port


def test_ports_come_from_below_the_range_outgoing_connections_use() -> None:
    # A make dev test failed when gRPC could not bind a port the kernel had meanwhile given an
    # outgoing connection: such ports are never handed out.
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert all(LOWEST_PORT <= port < low for port in ports), ports
    assert len(set(ports)) == len(ports), "a port handed out twice"


def test_a_listener_s_port_and_a_connection_s_port_are_passed_over() -> None:
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client.connect(listener.getsockname())  # an outgoing connection, on a port the kernel chose
        accepted, _ = listener.accept()
        with accepted:
            listening, connected = listener.getsockname()[1], client.getsockname()[1]
            spare = free_port()
            _release(spare)
            assert first_free([listening, connected, spare]) == spare
            # Handed out once: the next server is not given it again.
            assert first_free([spare]) is None


def test_the_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    given = tmp_path / "range"
    given.write_text("40000\t50000\n")
    assert ephemeral_range(given) == (40000, 50000)
    assert ephemeral_range(tmp_path / "absent") == (32768, 60999)


def _release(port: int) -> None:
    """Let a port free_port handed out be handed out again (only this test does that)."""
    from tools import devstack

    devstack._HANDED_OUT.discard(port)
