"""Asking several services the same question at once, where the answer needs all of them (issue 13:
the metrics, the funnel, a person's export). The timelines do not use this: a timeline is answered
without a service that fails (gateway/routes/timeline.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from gateway.problems import ProblemError

T = TypeVar("T")
# Refusals of the caller (its role, its input, an id not of its org): answered as the service said,
# since asking again will not change them.
CALLER_STATUSES = frozenset({401, 403, 404, 422})


async def all_of(calls: Mapping[str, Awaitable[T]], could_not: str) -> dict[str, T]:
    """Every service's answer, by name, asked in parallel; else a Problem. A refusal of the caller is
    raised as it is; any other failure is a 503 naming the services that failed ("the billing
    service could not {could_not}"), since an answer silently lacking one service's share would be
    read as complete."""
    names = list(calls)
    answers = await asyncio.gather(*calls.values(), return_exceptions=True)
    failed: list[str] = []
    found: dict[str, T] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, ProblemError) and answer.status in CALLER_STATUSES:
            raise answer
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer  # cancellation and the like are not a service's failure
            failed.append(name)
            continue
        found[name] = answer
    if failed:
        plural = len(failed) > 1
        raise ProblemError(
            503,
            "service_unavailable",
            f"the {', '.join(failed)} service{'s' if plural else ''} could not {could_not}; try again shortly",
            headers={"Retry-After": "5"},
        )
    return found
