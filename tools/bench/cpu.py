"""CPU time per request, by process, from /proc: what throughput on a shared 2-core machine cannot
say by itself. A scenario's snapshot before and after gives the CPU each of our processes (gateway,
booking, iam, baseline, and the Postgres backends serving this run's database) spent on it, and what
everything else on the machine took meanwhile (other sessions' tests, for one)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """User + system seconds of a process (all its threads), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy (not idle or waiting on I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / TICK


@dataclass
class Snapshot:
    named: dict[str, float]
    backends: dict[int, float]
    machine: float
    sessions: int  # connections ever opened to this run's database (pg_stat_database)


@dataclass
class Usage:
    """CPU seconds a scenario cost, by process."""

    by_name: dict[str, float] = field(default_factory=dict)
    machine: float = 0.0
    sessions: int = 0

    def per_request_ms(self, requests: int) -> dict[str, float]:
        return {k: v / requests * 1000 for k, v in self.by_name.items()} if requests else {}


class CpuMeter:
    def __init__(self, pids: dict[str, int], admin_url: str, db_name: str) -> None:
        self.pids = pids
        self.admin_url = admin_url
        self.db_name = db_name

    def _backends(self) -> tuple[list[int], int]:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db_name,),
            ).fetchall()
            sessions = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.db_name,)
            ).fetchone()
        return [int(r[0]) for r in rows], int(sessions[0]) if sessions else 0

    def snapshot(self) -> Snapshot:
        named = {name: process_cpu(pid) or 0.0 for name, pid in self.pids.items()}
        pids, sessions = self._backends()
        backends = {pid: cpu for pid in pids if (cpu := process_cpu(pid)) is not None}
        return Snapshot(named, backends, machine_busy(), sessions)

    def usage(self, before: Snapshot, after: Snapshot, generator_cpu: float) -> Usage:
        # Each Postgres session the pools opened (and, past pool_size, closed again) cost a backend
        # start-up whose CPU the /proc snapshots miss when the backend is gone by the second one.
        usage = Usage(machine=after.machine - before.machine, sessions=after.sessions - before.sessions)
        for name, cpu in after.named.items():
            usage.by_name[name] = max(0.0, cpu - before.named.get(name, 0.0))
        # Backends opened during the scenario count whole; ones closed before its end are missed.
        usage.by_name["postgres"] = sum(
            max(0.0, cpu - before.backends.get(pid, 0.0)) for pid, cpu in after.backends.items()
        )
        usage.by_name["load generator"] = generator_cpu
        ours = sum(usage.by_name.values())
        usage.by_name["rest of machine"] = max(0.0, usage.machine - ours)
        return usage
