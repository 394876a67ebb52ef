"""Schemathesis over the gateway's own OpenAPI document (GET /openapi.json of a real gateway in front of
the real services): every operation, valid and invalid input, as the OWNER of a test org and without
credentials. Every answer must be no 5xx, match the schema the document declares for its status, and
be Problem+JSON when it is a 4xx.

`make test` runs a few examples per operation with a fixed seed (the same requests every run, well
under a minute); `make fuzz` sets FUZZ_MAX_EXAMPLES for a longer run with fresh random input. A failure
names the operation and prints a curl command that reproduces it.

Nothing is excluded: the fuzzed org is the test's own, and the operator routes (cleanup, retention,
e-mail scan, replays) act in the caller's org only. The operations that end the caller's own session
(logout, TOTP disable/verify, password change) do, when they succeed, leave the run's token revoked:
the run then signs in again, so the operations after them are still fuzzed signed in."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tools.testkit import PROBLEM_FIELDS, assert_problem, owner

LONG_RUN = bool(os.environ.get("FUZZ_MAX_EXAMPLES"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES") or 6)
ANONYMOUS_EXAMPLES = max(2, MAX_EXAMPLES // 3)  # most of these stop at a 401: fewer are enough

# Answered 2xx, these leave the caller's session (or all of the user's sessions) ended.
SESSION_ENDING = {
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/2fa/disable"),
    ("POST", "/v1/auth/2fa/verify"),
    ("POST", "/v1/auth/change-password"),
}


def problem_json(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is RFC 9457 Problem+JSON with our fields, tied to the request by its id."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} answered as {content_type!r}: {response.text[:300]}"
    )
    body = response.json()
    assert isinstance(body, dict) and body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == response.status_code, body
    # The detail only: `instance` echoes the path, which the fuzzer fills with anything.
    assert "Traceback" not in body["detail"] and "sqlalchemy" not in body["detail"].lower(), body
    return None


CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    problem_json,
]


@dataclass
class Run:
    base_url: str
    headers: Callable[[], dict[str, str]]
    relogin: Callable[[], None] = lambda: None
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


def sender(run: Run, session: requests.Session, key: tuple[str, str]) -> Callable[[Any], None]:
    def send(case: schemathesis.Case) -> None:
        response = case.call(base_url=run.base_url, session=session, headers=run.headers(), timeout=15)
        run.calls += 1
        run.statuses[response.status_code] += 1
        if key in SESSION_ENDING and response.status_code < 300:
            run.relogin()
        case.validate_response(response, checks=CHECKS)

    return send


def fuzz(schema: Any, run: Run, max_examples: int) -> None:
    """Every operation of `schema`, `max_examples` valid and as many invalid cases each."""
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        strategy = st.one_of(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )

        one = hypothesis.settings(
            max_examples=max_examples * 2,
            deadline=None,
            database=None,
            derandomize=not LONG_RUN,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )(hypothesis.given(case=strategy)(sender(run, session, key)))
        try:
            one()
        except (Exception, BaseExceptionGroup) as error:  # one failure per operation, then the next
            run.failures.append(f"{key[0]} {key[1]}: {error}")


async def test_fuzz_as_owner_and_anonymous(gateway, make_org) -> None:
    org = await make_org("Fuzz Org")
    # Schemathesis sends with requests (blocking): the whole run goes to a worker thread.
    await asyncio.to_thread(fuzz_org, gateway.url, org)


def fuzz_org(url: str, org: Any) -> None:
    started = time.monotonic()
    token = {"value": ""}

    def sign_in() -> None:
        answer = httpx.post(
            f"{url}/v1/auth/login",
            json={"email": org.owner_email, "password": org.owner_password},
            timeout=15,
        )
        assert answer.status_code == 200, answer.text
        token["value"] = answer.json()["access_token"]

    sign_in()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    # X-Test-Org points the public routes (estimate, leads, portal login) at the test's org.
    owner_run = Run(
        url, lambda: {"Authorization": f"Bearer {token['value']}", "X-Test-Org": org.org_id}, relogin=sign_in
    )
    fuzz(schema, owner_run, MAX_EXAMPLES)
    anonymous_run = Run(url, lambda: {"X-Test-Org": org.org_id})
    fuzz(schema, anonymous_run, ANONYMOUS_EXAMPLES)

    elapsed = time.monotonic() - started
    statuses = sorted((owner_run.statuses + anonymous_run.statuses).items())
    print(
        f"fuzz: {owner_run.calls} calls as owner, {anonymous_run.calls} anonymous, {elapsed:.1f}s; {statuses}"
    )
    failures = owner_run.failures + [f"(anonymous) {f}" for f in anonymous_run.failures]
    if failures:
        pytest.fail(f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures), pytrace=False)


pytestmark = pytest.mark.timeout(900 if LONG_RUN else 180)


# --- what the fuzzer found, each pinned by a focused test -------------------------------------------


async def test_a_nul_character_in_any_text_is_a_422_naming_the_field(gateway, http, make_org) -> None:
    """Postgres text cannot hold NUL (0x00): a query filter or a body field carrying one reached the
    database and came back as a 502. Every service now refuses it before the handler runs."""
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    response = await http.get(
        f"{gateway.url}/v1/admin/audit-logs", params={"action": "a\x00b"}, headers=headers
    )
    assert {"field": "action", "message": "must not contain NUL (0x00) characters"} in assert_problem(
        response, 422
    )["errors"]
    response = await http.post(f"{gateway.url}/v1/admin/teams", json={"name": "Team\x00"}, headers=headers)
    assert {"field": "name", "message": "must not contain NUL (0x00) characters"} in assert_problem(
        response, 422
    )["errors"]
    # The same name without it is fine: the check is on the character, not the field.
    assert (
        await http.post(f"{gateway.url}/v1/admin/teams", json={"name": "Team"}, headers=headers)
    ).status_code == 201


async def test_an_offset_past_the_paging_bound_is_a_422_not_a_500(gateway, http, make_org) -> None:
    """An offset beyond int32 overflowed while the gateway built the gRPC request (a 500)."""
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    for path in ("/v1/admin/leads", "/v1/admin/bookings"):
        response = await http.get(f"{gateway.url}{path}", params={"offset": 21699802887318}, headers=headers)
        assert "query.offset" in {e["field"] for e in assert_problem(response, 422)["errors"]}, path
        ok = await http.get(f"{gateway.url}{path}", params={"offset": 1_000_000}, headers=headers)
        assert ok.status_code == 200, ok.text


async def test_a_schedule_window_near_year_one_is_a_422_not_a_502(gateway, http, make_org) -> None:
    """Booking compares a window with bookings that began up to a day earlier; near year 1 that
    date overflowed and the service failed (a 502)."""
    org = await make_org()
    headers = await owner(http, gateway.url, org)
    window = {"starts_at": "0001-01-01T01:09:00+00:01", "ends_at": "0001-01-01T01:09:00Z"}
    for path in ("/v1/admin/schedule/suggestions", "/v1/admin/schedule/conflicts"):
        response = await http.get(f"{gateway.url}{path}", params=window, headers=headers)
        assert "starts_at" in {e["field"] for e in assert_problem(response, 422)["errors"]}, path
