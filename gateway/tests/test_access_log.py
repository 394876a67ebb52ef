"""The gateway's access line per request, with seed 003's fields where an operator greps for them
(request id, org, user and role, method, path, status, latency), and no token in it: a path
parameter that is a credential is redacted, and the query string is never logged."""

from __future__ import annotations

import json
import secrets
from typing import Any

from tools.testkit import eventually, owner


def access_lines(log_text: str, request_id: str) -> list[dict[str, Any]]:
    lines = []
    for raw in log_text.splitlines():
        if request_id not in raw:
            continue
        line = json.loads(raw)
        if line.get("event") == "http_request":
            lines.append(line)
    return lines


async def test_each_request_logs_who_what_and_how_long(gateway, http, make_org):
    org = await make_org("Access Log Cleaning")
    headers = await owner(http, gateway.url, org)
    request_id = f"access-{secrets.token_hex(6)}"
    r = await http.get(f"{gateway.url}/v1/iam/users", headers={**headers, "X-Request-ID": request_id})
    assert r.status_code == 200, r.text

    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = access_lines(gateway.log_path.read_text(errors="replace"), request_id)
        return bool(found)

    await eventually(logged, timeout=5, message="the request's access line")
    (line,) = found
    assert line["method"] == "GET"
    assert line["path"] == "/v1/iam/users"
    assert line["status_code"] == 200
    assert isinstance(line["latency_ms"], float | int) and line["latency_ms"] >= 0
    assert line["org_id"] == org.org_id
    assert line["user_id"] == org.owner_id
    assert line["role"] == "OWNER"
    assert line["service"] == "gateway"


async def test_tokens_in_paths_and_query_strings_stay_out_of_the_log(gateway, http):
    secret = secrets.token_urlsafe(24)
    request_ids = {}
    for name, url in {
        "invoice link": f"{gateway.url}/v1/public/invoices/{secret}",
        "photo link": f"{gateway.url}/v1/public/photos/{secret}?sig={secret}",
        "query token": f"{gateway.url}/v1/estimate?token={secret}&access_token={secret}",
    }.items():
        request_ids[name] = f"token-log-{secrets.token_hex(6)}"
        r = await http.get(url, headers={"X-Request-ID": request_ids[name]})
        assert r.status_code < 500, (name, r.status_code, r.text)

    def all_logged() -> bool:
        text = gateway.log_path.read_text(errors="replace")
        return all(access_lines(text, rid) for rid in request_ids.values())

    await eventually(all_logged, timeout=5, message="every request's access line")
    text = gateway.log_path.read_text(errors="replace")
    lines = {name: access_lines(text, rid)[0] for name, rid in request_ids.items()}
    assert lines["invoice link"]["path"] == "/v1/public/invoices/[redacted]"
    assert lines["photo link"]["path"] == "/v1/public/photos/[redacted]"
    assert lines["query token"]["path"] == "/v1/estimate"
    assert secret not in text
