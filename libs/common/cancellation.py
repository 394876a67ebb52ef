"""A cancellation that Python 3.11's asyncio.wait_for lost, raised again by the loop that called it.

On 3.11, `asyncio.wait_for(awaitable, timeout)` returns the awaitable's result, and drops the
cancellation, when the task is cancelled in the same turn of the event loop as the awaitable
completes (python/cpython gh-86296, fixed in 3.12 by reimplementing wait_for). nats-py's `fetch` and
`next_msg` wait with it too. A background loop that waits that way again and again (a consumer, a
relay, a delivery loop) would then never see the cancel its service sent at shutdown: the stop hangs
until the process is killed. The task still counts the request (`Task.cancelling()`), so the loop
checks it after each wait and ends as cancelled: `wait_woken` for the wake-or-timeout loops,
`raise_if_cancelled` after any other wait."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop and the request was swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_woken(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set or `timeout` seconds pass, whichever is first; a stop asked meanwhile
    ends the caller even where wait_for dropped it."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
    raise_if_cancelled()
