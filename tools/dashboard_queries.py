"""The Grafana dashboard's queries as Prometheus sees them, written as a rules file for promtool.

`make lint` runs `python -m tools.dashboard_queries .run/dashboard-queries.yml` and then
`promtool check rules` on that file, which parses each query as PromQL: a typo in a panel fails the
lint, not the night someone opens the dashboard. promtool is Debian's (not on PyPI), so this lives in
`make lint` (which needs promtool anyway) rather than in `make test`, which a newcomer runs with
Python alone. tests/deploy/test_grafana_dashboard.py checks the metric and label names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "cws-dashboard.json"
# What Grafana puts in place of its variables before the query reaches Prometheus.
VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$service": ".*",
    "$route": ".*",
}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]


def as_prometheus_sees_it(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"a Grafana variable tools/dashboard_queries.py does not know: {expr}")
    return expr


def rules_file(exprs: list[str]) -> str:
    """Each query as a recording rule: `promtool check rules` then parses every one as PromQL."""
    rules = [{"record": f"cws:dashboard_query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    return yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tools.dashboard_queries OUT.yml", file=sys.stderr)
        return 2
    exprs = [as_prometheus_sees_it(expr) for expr in queries(dashboard())]
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rules_file(exprs))
    print(f"{out}: {len(exprs)} dashboard queries for promtool")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
