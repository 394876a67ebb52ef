"""The bench's hop floor (tools/bench/hop_floor.py) measures real calls and bounds the read ratio.

Not a timing test: it checks that the bare hop really crossed processes (both sides spent CPU, every
answer was the full one) and that the ceiling is the arithmetic the performance docs rely on."""

from __future__ import annotations

import pytest

from tools.bench import hop_floor


def test_a_bare_hop_costs_both_processes_cpu_and_bounds_the_ratio() -> None:
    floor = hop_floor.measure(calls=400)

    assert floor.calls == 400
    assert floor.client_ms > 0 and floor.server_ms > 0, floor
    assert floor.signing_ms > 0
    assert floor.hop_ms == pytest.approx(floor.client_ms + floor.server_ms)
    baseline_ms = 2.0
    ceiling = floor.ceiling(baseline_ms)
    assert ceiling == pytest.approx(baseline_ms / (baseline_ms + floor.hop_ms + floor.signing_ms))
    assert 0 < ceiling < 1


def test_the_ceiling_is_the_baseline_share_of_the_cpu() -> None:
    floor = hop_floor.HopFloor(calls=1, seconds=1.0, client_ms=0.25, server_ms=0.25, signing_ms=0.5)

    # 2 ms of baseline work, plus 1 ms the suite cannot avoid per read: two thirds of the throughput.
    assert floor.ceiling(2.0) == pytest.approx(2 / 3)
    assert floor.as_dict()["hop_ms"] == pytest.approx(0.5)
