"""A circuit breaker for calls to a third party (an SMTP server, SendGrid, a webhook receiver, Stripe).

closed → open after `failure_threshold` consecutive failures → half-open once `reset_seconds` have
passed (one trial call at a time) → closed when the trial succeeds, open again when it fails.

Only failures that say the remote is unwell (refused connections, timeouts, 5xx, 429) should be
recorded as failures; a permanent refusal of one request (a bounced address, a 400) means the
remote answered, which is a success as far as the breaker is concerned.

The state is exported as `circuit_breaker_state{breaker}` (0 closed, 1 open, 2 half-open) and every
opening counts in `circuit_breaker_opened_total{breaker}`, for the alert on repeated opens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from prometheus_client import Counter, Gauge

STATE = Gauge("circuit_breaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open", ["breaker"])
OPENED = Counter("circuit_breaker_opened_total", "Times a circuit breaker opened", ["breaker"])


class State(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Not thread-safe; meant for one event loop, where check-then-act needs no lock."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None
        # Read at each scrape, through `state`: an open breaker turns half-open when its reset time has
        # passed even if nobody calls, so the alert on "open for 2 minutes" clears once the remote may
        # be tried again, instead of firing until the next payment attempt.
        STATE.labels(name).set_function(lambda: float(self.state))

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            self._set(State.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one trial at a time; a trial that never
        reported back (its caller crashed) stops blocking after `reset_seconds`."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.OPEN:
            return False
        now = self._clock()
        if self._trial_started is None or now - self._trial_started >= self.reset_seconds:
            self._trial_started = now
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until a call may be tried again (0 when one may go now or soon)."""
        if self.state is State.OPEN:
            return max(0.0, self._opened_at + self.reset_seconds - self._clock())
        return 0.0

    def record_success(self) -> None:
        self._failures = 0
        self._trial_started = None
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def record_failure(self) -> None:
        self._trial_started = None
        self._failures += 1
        if self.state is State.HALF_OPEN or (
            self._state is State.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open()

    def record_neutral(self) -> None:
        """The call told nothing about the remote (refused before it was made): free the trial."""
        self._trial_started = None

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(State.OPEN)
        OPENED.labels(self.name).inc()

    def _set(self, state: State) -> None:
        self._state = state
