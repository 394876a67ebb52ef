"""The circuit breaker's state machine, on a fake clock (no sleeps), and the metrics it exports."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from libs.common.circuit import CircuitBreaker, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(threshold: int = 3, reset: float = 30.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    name = f"test-{uuid.uuid4().hex[:8]}"
    return CircuitBreaker(name, failure_threshold=threshold, reset_seconds=reset, clock=clock), clock


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"breaker": name})


def opened(name: str) -> float:
    return REGISTRY.get_sample_value("circuit_breaker_opened_total", {"breaker": name}) or 0.0


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    cb, _ = breaker(threshold=3)
    assert cb.state is State.CLOSED and gauge(cb.name) == 0
    cb.record_failure()
    cb.record_failure()
    assert cb.state is State.CLOSED and cb.allow()
    cb.record_failure()
    assert cb.state is State.OPEN and not cb.allow()
    assert gauge(cb.name) == 1 and opened(cb.name) == 1


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    cb, _ = breaker(threshold=3)
    cb.record_failure()
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    cb.record_failure()
    assert cb.state is State.CLOSED


def test_half_opens_after_the_reset_time_and_lets_one_trial_through() -> None:
    cb, clock = breaker(threshold=1, reset=30)
    cb.record_failure()
    clock.advance(29.9)
    assert cb.state is State.OPEN and not cb.allow()
    assert abs(cb.retry_after() - 0.1) < 1e-9
    clock.advance(0.1)
    assert cb.state is State.HALF_OPEN and gauge(cb.name) == 2
    assert cb.retry_after() == 0
    assert cb.allow()  # the trial
    assert not cb.allow()  # only one at a time


def test_a_successful_trial_closes_it() -> None:
    cb, clock = breaker(threshold=1, reset=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    cb.record_success()
    assert cb.state is State.CLOSED and gauge(cb.name) == 0
    assert cb.allow() and cb.allow()


def test_a_failed_trial_opens_it_again_for_a_full_reset_period() -> None:
    cb, clock = breaker(threshold=2, reset=10)
    cb.record_failure()
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    cb.record_failure()  # one failure is enough in half-open
    assert cb.state is State.OPEN and opened(cb.name) == 2
    assert cb.retry_after() == 10
    clock.advance(9)
    assert not cb.allow()


def test_a_neutral_outcome_frees_the_trial_without_changing_state() -> None:
    cb, clock = breaker(threshold=1, reset=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow() and not cb.allow()
    cb.record_neutral()
    assert cb.state is State.HALF_OPEN and cb.allow()


def test_a_trial_that_never_reports_back_stops_blocking_after_the_reset_time() -> None:
    cb, clock = breaker(threshold=1, reset=10)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    clock.advance(5)
    assert not cb.allow()
    clock.advance(5)
    assert cb.allow()


def test_the_gauge_shows_half_open_once_the_reset_time_passed_without_any_call() -> None:
    """An idle breaker must not report "open" forever (the alert fires on open for 2 minutes)."""
    cb, clock = breaker(threshold=1, reset=30)
    cb.record_failure()
    assert gauge(cb.name) == State.OPEN
    clock.advance(31)
    assert gauge(cb.name) == State.HALF_OPEN
