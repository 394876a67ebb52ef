"""A stop that Python 3.11's asyncio.wait_for swallows is raised again (libs/common/cancellation.py).

Seen as a clean-clone CI failure: a consumer task cancelled at teardown kept running, and the test's
teardown waited for it until pytest's timeout. On 3.11 a cancel that arrives in the same turn of the
event loop as the awaited thing completes is dropped by wait_for (cpython gh-86296, fixed in 3.12)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from libs.common.cancellation import wait_woken

SWALLOWS = sys.version_info < (3, 12)


async def _wait_rounds(wake: asyncio.Event, rounds: list[int], check: bool) -> None:
    """A wake-or-timeout loop (relays, delivery, webhooks), with `wait_woken` or a bare wait_for."""
    while True:
        if check:
            await wait_woken(wake, 30)
        else:
            try:
                await asyncio.wait_for(wake.wait(), timeout=30)
            except TimeoutError:
                pass
        rounds.append(1)
        wake.clear()


async def _cancel_as_it_wakes(check: bool) -> tuple[asyncio.Task[None], list[int]]:
    wake, rounds = asyncio.Event(), []
    task = asyncio.create_task(_wait_rounds(wake, rounds, check))
    await asyncio.sleep(0.05)  # inside wait_for
    wake.set()
    task.cancel()  # the same turn: the wait completes as the cancel arrives
    await asyncio.sleep(0.2)
    return task, rounds


@pytest.mark.skipif(not SWALLOWS, reason="Python 3.12's wait_for keeps the cancel: nothing to show")
async def test_on_311_wait_for_drops_a_cancel_that_arrives_as_the_wait_completes() -> None:
    task, rounds = await _cancel_as_it_wakes(check=False)

    assert not task.done() and rounds == [1], "the loop went on as if never asked to stop"
    assert task.cancelling() == 1, "the task still counts the request"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_that_checks_after_each_wait_stops_when_asked() -> None:
    task, rounds = await _cancel_as_it_wakes(check=True)

    assert task.done() and task.cancelled()
    assert rounds == [], "the loop did not go another round"
