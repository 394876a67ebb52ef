"""Every metric an alert rule reads is one the suite exports.

promtool (deploy/prometheus/alerts_test.yml) proves the rules fire on the series they name; it cannot
know whether a service exports that name. A rule on a renamed or never-exported metric is an alert
that stays silent in production, so this reads each rule's expression and looks for the metric's
name where the code declares it (prometheus_client adds _total, _bucket, _sum and _count itself)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself.
NOT_OURS = {"up"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "deriv", "time",
    "histogram_quantile", "min_over_time", "max_over_time", "and", "or", "unless", "on", "ignoring",
    "bool", "offset",
}  # fmt: skip
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values and regexes
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    tokens = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return tokens - PROMQL_WORDS


def declared(name: str, sources: str) -> bool:
    """Declared as a metric (Counter("...", ...), GaugeMetricFamily(\n "...") and the like), not merely
    a string somewhere: `outbox_dead_count` is also a field of the DLQ response."""
    bases = {name} | {name.removesuffix(s) for s in SUFFIXES if name.endswith(s)}
    return any(
        re.search(rf'(Counter|Gauge|Histogram|Summary|MetricFamily)\(\s*"{re.escape(base)}"', sources)
        for base in bases
    )


def test_every_alert_reads_a_metric_the_suite_exports() -> None:
    sources = "\n".join(
        path.read_text()
        for folder in ("gateway", "services", "libs")
        for path in (ROOT / folder).rglob("*.py")
        if "tests" not in path.parts
    )
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert rules
    missing = [
        (rule["alert"], name)
        for rule in rules
        for name in sorted(metric_names(rule["expr"]))
        if name not in NOT_OURS and not declared(name, sources)
    ]
    assert missing == [], f"alert rules on metrics nothing exports: {missing}"


def test_the_check_sees_a_misnamed_metric() -> None:
    # The rule this test was written after: notify exports notify_outbox_rows, not outbox_dead_count.
    assert metric_names('sum(outbox_dead_count{job="x"}) > 0') == {"outbox_dead_count"}
    assert not declared("outbox_dead_count", 'Gauge("notify_outbox_rows")\nbody = {"outbox_dead_count": 3}')
    assert declared("notify_deliveries_total", 'Counter("notify_deliveries", "...")')
    assert declared("job_errors_total", 'CounterMetricFamily(\n    "job_errors", "...")')
