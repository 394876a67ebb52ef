"""The connection budget (docs/operations.md "Connection budget", tools/connection_budget.py): the
deploy files fit Postgres' max_connections, the arithmetic is right, and the processes a test session
runs hold no more connections than the budget gives each of them, under the names it documents."""

from __future__ import annotations

import ast
import asyncio
import re
from collections import Counter
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from conftest import MAKE_DEV_POOL_SIZE, TEST_POOL_SIZE
from tools import connection_budget
from tools.connection_budget import EXTRA, ROOT, Budget, Line


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


def _session_processes() -> list[str]:
    """The service of each process a session-scoped fixture starts (it lives until the session ends):
    every conftest.py's fixture with scope="session" that calls service_proc("<service>", ...)."""
    found = []
    for path in sorted(ROOT.glob("**/conftest.py")):
        if ".venv" in path.parts or ".run" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            session = any(
                isinstance(d, ast.Call)
                and any(k.arg == "scope" and getattr(k.value, "value", None) == "session" for k in d.keywords)
                for d in node.decorator_list
            )
            if not session:
                continue
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and getattr(call.func, "id", None) == "service_proc"
                    and isinstance(call.args[0], ast.Constant)
                ):
                    found.append(str(call.args[0].value))
    return found


def _largest_test_pool() -> int:
    """The largest pool a test opens of its own (Database(..., pool_size=N) in a test module)."""
    sizes = [
        int(size)
        for folder in ("libs", "gateway", "services", "web", "tests")
        for path in (ROOT / folder).glob("**/test_*.py")
        for size in re.findall(r"pool_size=(\d+)", path.read_text())
    ]
    return max(sizes)


def test_make_test_fits_the_postgres_of_this_machine_and_ci() -> None:
    """The session's processes, with make dev's whole suite and its second shell's job run beside them
    (tests/test_dev_command.py), or with the largest pool a test opens, fit the 100 connections the
    machine's and CI's Postgres allow. A CI run once failed here: at a session pool of 8 and make dev's
    of 4, Postgres refused the job run ("remaining connection slots are reserved")."""
    session_processes = _session_processes()
    assert set(session_processes) == set(connection_budget.SERVICES), session_processes
    session = [Line(service, 1, TEST_POOL_SIZE, 0) for service in session_processes]
    fixtures = 2  # make_org's IAM pool, the one a test's fixtures open beside the services
    make_dev = [Line(service, 1, MAKE_DEV_POOL_SIZE, 0) for service in connection_budget.SERVICES]
    # The second shell's `python -m services.jobs.run --once`: a pool of 2 + 2 overflow, and its lock.
    job_run = Line("jobs", 1, 2, 2)
    with_dev = Budget("make test, make dev beside it", [*session, *make_dev, job_run], 100)
    assert with_dev.needed + fixtures <= with_dev.available, with_dev.table()
    with_own = Budget("make test, a test's own pool", session, 100)
    assert with_own.needed + fixtures + _largest_test_pool() <= with_own.available, with_own.table()


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
    pool_most = int(stack.env()["DATABASE_POOL_SIZE"]) + connection_budget._default("database_max_overflow")
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
        # collected, so one more may be seen for a moment (a full `make test` once showed 8 at 7).
        assert 1 <= names[f"cws-{service}"] <= pool_most + 1, seen
