"""The suite's Postgres connection budget: how many connections each process can hold, and the sum at
the replica counts the deploy files give (docs/operations.md "Connection budget").

    python -m tools.connection_budget            # Kubernetes and compose, as written; exit 1 if over
    python -m tools.connection_budget --replicas 3 --pool-size 4   # what if

A process's most is fixed by its settings, never by its load:
- a service process (iam, booking, billing, media, notify, jobs, integrations): its pool, DATABASE_POOL_SIZE +
  DATABASE_MAX_OVERFLOW (the pool never hands out more; a unit of work waits up to
  DATABASE_POOL_TIMEOUT_SECONDS for one, then answers 503; a connection abandoned by a cancelled call
  may stay open a moment longer, which OPS_RESERVE absorbs), plus one LISTEN connection for its outbox
  relay; notify one more LISTEN for its delivery loop, jobs one more for its advisory locks
  (services/jobs/locks.py);
- the gateway and Caddy: none;
- one-off work beside them: the migrations (a connection for the grants, and alembic's), a backup's
  pg_dump or a restore's psql, and an operator's psql: OPS_RESERVE below.
Postgres keeps superuser_reserved_connections (3) of max_connections for superusers."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from libs.common.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("iam", "booking", "billing", "media", "notify", "jobs", "integrations")
# LISTEN connections and the jobs lock connection, beside the pool.
EXTRA = {"iam": 1, "booking": 1, "billing": 1, "media": 1, "notify": 2, "jobs": 2, "integrations": 1}
# Migrations (2), a backup or restore (1), an operator's psql (1).
OPS_RESERVE = 4
SUPERUSER_RESERVED = 3
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100


def _default(name: str) -> int:
    return int(CommonSettings.model_fields[name].default)


@dataclass(frozen=True)
class Line:
    service: str
    replicas: int
    pool_size: int
    max_overflow: int

    @property
    def per_process(self) -> int:
        return self.pool_size + self.max_overflow + EXTRA[self.service]

    @property
    def total(self) -> int:
        return self.replicas * self.per_process


@dataclass(frozen=True)
class Budget:
    where: str
    lines: list[Line]
    max_connections: int

    @property
    def needed(self) -> int:
        return sum(line.total for line in self.lines) + OPS_RESERVE

    @property
    def available(self) -> int:
        return self.max_connections - SUPERUSER_RESERVED

    def table(self) -> str:
        rows = [f"{self.where}: max_connections {self.max_connections}, {self.available} for the suite"]
        rows.append(
            f"  {'service':<12} {'replicas':>8} {'pool':>5} {'overflow':>8} {'extra':>5} {'total':>6}"
        )
        for line in self.lines:
            rows.append(
                f"  {line.service:<12} {line.replicas:>8} {line.pool_size:>5} {line.max_overflow:>8}"
                f" {EXTRA[line.service]:>5} {line.total:>6}"
            )
        rows.append(f"  {'ops reserve (migrations, backup, psql)':<51} {OPS_RESERVE:>6}")
        verdict = "fits" if self.needed <= self.available else "OVER BUDGET"
        rows.append(f"  needed {self.needed} of {self.available}: {verdict}")
        return "\n".join(rows)


def _setting(env: dict[str, Any], name: str) -> int:
    value = env.get(name.upper())
    return int(value) if value not in (None, "") else _default(name)


def kubernetes(k8s_dir: Path = ROOT / "deploy" / "k8s") -> Budget:
    """Replicas of each service's Deployment; pool settings from the configmap, then the container."""
    shared: dict[str, Any] = {}
    deployments: dict[str, dict[str, Any]] = {}
    for path in sorted(k8s_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "cws-config":
                shared = dict(doc.get("data") or {})
            elif doc.get("kind") == "Deployment" and doc["metadata"]["name"] in SERVICES:
                deployments[doc["metadata"]["name"]] = doc
    lines = []
    for service in SERVICES:
        doc = deployments[service]
        env = dict(shared)
        for container in doc["spec"]["template"]["spec"]["containers"]:
            env.update(
                {item["name"]: item.get("value") for item in container.get("env", []) if "value" in item}
            )
        lines.append(
            Line(
                service,
                int(doc["spec"].get("replicas", 1)),
                _setting(env, "database_pool_size"),
                _setting(env, "database_max_overflow"),
            )
        )
    # The managed Postgres a cluster points at is not in these manifests: its max_connections is the
    # provider's; 100 is Postgres' own default and the smallest we plan for.
    return Budget("deploy/k8s", lines, POSTGRES_DEFAULT_MAX_CONNECTIONS)


def compose(path: Path = ROOT / "docker-compose.yml") -> Budget:
    doc = yaml.safe_load(path.read_text())
    services = doc["services"]
    max_connections = POSTGRES_DEFAULT_MAX_CONNECTIONS
    command = services["db"].get("command") or []
    for index, part in enumerate(command):
        if str(part).startswith("max_connections="):
            max_connections = int(str(part).split("=", 1)[1])
        elif part == "-c" and str(command[index + 1]).startswith("max_connections="):
            max_connections = int(str(command[index + 1]).split("=", 1)[1])
    lines = []
    for service in SERVICES:
        spec = services[service]
        env = {key: str(value) for key, value in (spec.get("environment") or {}).items()}
        replicas = int((spec.get("deploy") or {}).get("replicas", 1))
        lines.append(
            Line(
                service, replicas, _setting(env, "database_pool_size"), _setting(env, "database_max_overflow")
            )
        )
    return Budget("docker-compose.yml", lines, max_connections)


def what_if(replicas: int, pool_size: int, max_overflow: int, max_connections: int) -> Budget:
    lines = [Line(service, replicas, pool_size, max_overflow) for service in SERVICES]
    return Budget(f"{replicas} replicas of each service", lines, max_connections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, help="replicas of every service (what if)")
    parser.add_argument("--pool-size", type=int, default=_default("database_pool_size"))
    parser.add_argument("--max-overflow", type=int, default=_default("database_max_overflow"))
    parser.add_argument("--max-connections", type=int, default=POSTGRES_DEFAULT_MAX_CONNECTIONS)
    args = parser.parse_args(argv)
    if args.replicas is not None:
        budgets = [what_if(args.replicas, args.pool_size, args.max_overflow, args.max_connections)]
    else:
        budgets = [kubernetes(), compose()]
    for budget in budgets:
        print(budget.table())
    return 0 if all(budget.needed <= budget.available for budget in budgets) else 1


if __name__ == "__main__":
    sys.exit(main())
