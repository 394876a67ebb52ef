"""Retry-After as both providers send it, read by one function (httpx's headers for QuickBooks and the
OAuth endpoints, httplib2's lower-case response for google-api-python-client)."""

import email.utils
import time

import httplib2
import httpx
import pytest

from services.integrations.oauth import retry_after_seconds


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("1.5", 1.5), ("0", 0.0), ("-3", 0.0)])
def test_delta_seconds(value: str, seconds: float) -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": value})) == seconds


def test_an_http_date_is_the_time_until_it() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(httpx.Headers({"Retry-After": when})) <= 30


def test_httplib2s_lower_case_response_is_read() -> None:
    response = httplib2.Response({"status": "429", "retry-after": "4"})
    assert retry_after_seconds(response) == 4.0


@pytest.mark.parametrize("headers", [{}, {"Retry-After": ""}, {"Retry-After": "soon"}])
def test_absent_or_unreadable_is_the_default(headers: dict[str, str]) -> None:
    assert retry_after_seconds(httpx.Headers(headers), default=2.5) == 2.5
