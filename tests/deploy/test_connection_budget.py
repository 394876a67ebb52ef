"""The connection budget (docs/operations.md "Connection budget", tools/connection_budget.py): the
deploy files fit Postgres' max_connections, the arithmetic is right, and the processes a test session
runs hold no more connections than the budget gives each of them, under the names it documents."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from tools import connection_budget
from tools.connection_budget import EXTRA, Budget, Line


def test_the_deploy_files_fit_max_connections() -> None:
    for budget in (connection_budget.kubernetes(), connection_budget.compose()):
        assert budget.needed <= budget.available, budget.table()
    assert connection_budget.main([]) == 0


def test_the_budget_adds_pools_listeners_locks_and_the_reserve() -> None:
    budget = Budget("x", [Line("notify", 2, 4, 1), Line("jobs", 3, 5, 2)], 100)
    # notify: 2 x (4 + 1 + relay and delivery LISTEN); jobs: 3 x (5 + 2 + LISTEN + lock connection)
    assert budget.needed == 2 * (4 + 1 + 2) + 3 * (5 + 2 + 2) + connection_budget.OPS_RESERVE
    assert budget.available == 97
    over = connection_budget.what_if(3, 5, 2, 100)
    assert over.needed > over.available
    assert connection_budget.main(["--replicas", "3"]) == 1
    assert connection_budget.main(["--replicas", "3", "--pool-size", "2", "--max-overflow", "1"]) == 0


async def _by_process(admin_url: str, pids: dict[str, int]) -> dict[str, Counter[str]]:
    """Each process's Postgres connections by application_name: its sockets to the server matched
    with pg_stat_activity's client ports (processes of other tests may share a name)."""
    pg_port = conninfo_to_dict(admin_url).get("port") or "5432"
    ports: dict[int, str] = {}
    for service, pid in pids.items():
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == int(pg_port):
                ports[conn.laddr.port] = service
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as db:
        cursor = await db.execute(
            "SELECT application_name, client_port FROM pg_stat_activity WHERE datname = current_database()"
        )
        rows = await cursor.fetchall()
    found: dict[str, Counter[str]] = {service: Counter() for service in pids}
    for name, port in rows:
        if port in ports:
            found[ports[port]][name] += 1
    return found


async def test_the_session_s_processes_stay_within_their_share(
    stack: Any, iam: Any, booking: Any, notify: Any
) -> None:
    pool_most = connection_budget._default("database_pool_size") + connection_budget._default(
        "database_max_overflow"
    )
    pids = {name: proc.process.pid for name, proc in (("iam", iam), ("booking", booking), ("notify", notify))}
    seen: dict[str, Counter[str]] = {service: Counter() for service in pids}
    for _ in range(20):  # a second of samples while the processes do their background work
        for service, names in (await _by_process(stack.admin_url, pids)).items():
            seen[service] |= names  # the most of each name seen at once
        await asyncio.sleep(0.05)
    # Notify's relay and delivery loop each LISTEN on a connection of their own, the others' relay.
    assert seen["notify"]["cws-notify-listen"] == EXTRA["notify"], seen
    for service, names in seen.items():
        assert set(names) <= {f"cws-{service}", f"cws-{service}-listen"}, seen
        assert names[f"cws-{service}-listen"] <= EXTRA[service], seen
        # The pool never has more than pool_most checked out; a connection whose call was cancelled
        # mid-query (a caller's deadline) is replaced at once but its socket closes only when it is
        # collected, so one more may be seen for a moment (a full `make test` showed 8 at a pool of 7).
        assert 1 <= names[f"cws-{service}"] <= pool_most + 1, seen
