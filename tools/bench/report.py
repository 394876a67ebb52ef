"""The one table `make bench` prints, as Markdown (it goes to stdout and .run/bench/last.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

COLUMNS = (
    "scenario",
    "rps",
    "p50 ms",
    "p99 ms",
    "errors",
    "suite/baseline rps",
    "target",
    "server CPU ms/request",
)
# Short names for the CPU column.
PARTS = (
    ("web", "web"),
    ("gateway", "gw"),
    ("booking", "bk"),
    ("iam", "iam"),
    ("billing", "bl"),
    ("media", "md"),
    ("baseline", "app"),
    ("postgres", "pg"),
)


@dataclass
class Row:
    scenario: str
    result: dict[str, Any] | None = None
    ratio: str = "—"
    target: str = "—"
    note: str = ""  # replaces the numbers: "not available", "failed: ..."

    def cells(self) -> list[str]:
        if self.result is None:
            return [self.scenario, self.note or "not measured", "", "", "", self.ratio, self.target, ""]
        r = self.result
        return [
            self.scenario,
            _num(r["rps"], 0),
            _num(r["p50_ms"], 1),
            _num(r["p99_ms"], 1),
            f"{r['errors']}" + (f" of {r['ok'] + r['errors']}" if r["errors"] else ""),
            self.ratio,
            self.target,
            cpu_cell(r.get("cpu_ms_per_request", {})),
        ]


def cpu_cell(per_request: dict[str, float]) -> str:
    """e.g. "gw 1.2 + bk 1.6 + pg 0.4 = 3.2": parts under 0.05 ms are left out."""
    parts = [(short, per_request[name]) for name, short in PARTS if per_request.get(name, 0.0) >= 0.05]
    if not parts:
        return ""
    return " + ".join(f"{short} {ms:.1f}" for short, ms in parts) + f" = {sum(ms for _, ms in parts):.1f}"


def _num(value: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * 5 + ["---", "---"]) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |")
    return "\n".join(lines)
