"""What the deploy tests need to know about PromQL: the metric names an expression reads, whether the
suite exports each one (promtool, in `make lint`, parses them: tools/dashboard_queries.py).

An alert or a dashboard panel on a renamed or never-exported metric stays silent or empty in
production, and nothing else notices: tests/deploy/test_alert_metrics.py and test_grafana_dashboard.py
check theirs with these helpers."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

ROOT = Path(__file__).resolve().parents[2]
# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "irate", "increase", "deriv", "delta",
    "time", "timestamp", "histogram_quantile", "min_over_time", "max_over_time", "avg_over_time",
    "last_over_time", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "vector", "scalar", "changes",
    "resets", "absent", "label_replace", "sort", "sort_desc", "inf", "nan",
}  # fmt: skip
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values and regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # labels
    tokens = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {token for token in tokens if token.lower() not in PROMQL_WORDS}


def declared(name: str, sources: str) -> bool:
    """Declared as a metric (Counter("...", ...), GaugeMetricFamily(\n "...") and the like), not merely
    a string somewhere: `outbox_dead_count` is also a field of the DLQ response."""
    bases = {name} | {name.removesuffix(s) for s in SUFFIXES if name.endswith(s)}
    return any(
        re.search(rf'(Counter|Gauge|Histogram|Summary|MetricFamily)\(\s*"{re.escape(base)}"', sources)
        for base in bases
    )


# Labels every scraped series carries (the target's) and the ones Prometheus renames: an exported `job`
# label (the jobs process's job names) arrives as `exported_job`, since the scrape job keeps `job`.
TARGET_LABELS = {"job", "instance"}
_STRING = r'"(?:[^"\\]|\\.)*"'
_CALL_REST = rf"(?:{_STRING}|[^()\"]|\([^()]*\))*"


def declared_labels(name: str, sources: str) -> set[str] | None:
    """The label names the declaration of `name` gives (Counter("x", "help", ["a", "b"]),
    GaugeMetricFamily("x", "help", labels=["a"])), None when the suite declares no such metric."""
    bases = [name] + [name.removesuffix(s) for s in SUFFIXES if name.endswith(s)]
    for base in bases:
        found = re.search(
            rf'(?:Counter|Gauge|Histogram|Summary|MetricFamily)\(\s*"{re.escape(base)}"({_CALL_REST})\)',
            sources,
        )
        if found:
            listed = re.search(r'\[\s*((?:"[^"]*"\s*,?\s*)*)\]', found.group(1))  # the label list
            labels = set(re.findall(r'"([^"]+)"', listed.group(1))) if listed else set()
            return labels | ({"le"} if name.endswith("_bucket") else set())
    return None


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    matchers = {
        name for body in re.findall(r"\{([^}]*)\}", expr) for name in re.findall(r"(\w+)\s*[!=]~?", body)
    }
    clauses = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr)
    return matchers | {name.strip() for clause in clauses for name in clause.split(",") if name.strip()}


def unknown_labels(expr: str) -> list[str]:
    """Labels `expr` uses that none of its metrics carries once scraped: a selector on a misspelt or
    renamed label matches nothing, which looks exactly like a healthy zero."""
    carried = set(TARGET_LABELS)
    for name in metric_names(expr):
        labels = declared_labels(name, suite_sources()) or set()
        carried |= labels | ({"exported_job"} if "job" in labels else set())
    return sorted(label_names(expr) - carried)


@functools.cache
def suite_sources() -> str:
    """The code that declares the suite's metrics (gateway, services, libs; not their tests)."""
    return "\n".join(
        path.read_text()
        for folder in ("gateway", "services", "libs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "tests" not in path.parts
    )


@functools.cache
def library_metrics() -> frozenset[str]:
    """What prometheus_client's default collectors add to every /metrics the suite serves (process
    CPU, memory and file descriptors, Python's GC): read from the library, not listed by hand."""
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    lines = generate_latest(registry).decode().splitlines()
    return frozenset(re.split(r"[{ ]", line, maxsplit=1)[0] for line in lines if line and line[0] != "#")


def unknown_metrics(expr: str) -> list[str]:
    """The metric names of `expr` that neither the suite, its client library nor Prometheus exports."""
    return sorted(
        name
        for name in metric_names(expr)
        if name not in PROMETHEUS_OWN
        and name not in library_metrics()
        and not declared(name, suite_sources())
    )
