"""Every metric an alert rule reads is one the suite exports, and every alert has a test that fires it.

promtool (deploy/prometheus/alerts_test.yml, run by `make lint`) proves the rules fire on the series
they name; it cannot know whether a service exports that name. A rule on a renamed or never-exported
metric is an alert that stays silent in production, so this reads each rule's expression and looks
for the metric's name where the code declares it (prometheus_client adds _total, _bucket, _sum and
_count itself). And a rule without a firing case in alerts_test.yml is a rule nobody has seen fire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.promql import declared, metric_names, unknown_labels, unknown_metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"


def rules() -> list[dict[str, Any]]:
    found = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert found
    return found


def test_every_alert_reads_a_metric_the_suite_exports() -> None:
    missing = [(rule["alert"], name) for rule in rules() for name in unknown_metrics(rule["expr"])]
    assert missing == [], f"alert rules on metrics nothing exports: {missing}"


def test_every_alert_matches_and_groups_on_labels_its_metrics_carry() -> None:
    wrong = {rule["alert"]: labels for rule in rules() if (labels := unknown_labels(rule["expr"]))}
    assert wrong == {}, f"alert rules on labels their metrics do not carry: {wrong}"


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    cases = [
        case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    assert yaml.safe_load(ALERT_TESTS.read_text())["rule_files"] == [ALERTS.name]
    assert sorted({rule["alert"] for rule in rules()} - fired) == [], "add a firing case to alerts_test.yml"


def test_the_check_sees_a_misnamed_metric() -> None:
    # The rule this test was written after: notify exports notify_outbox_rows, not outbox_dead_count.
    assert metric_names('sum(outbox_dead_count{job="x"}) > 0') == {"outbox_dead_count"}
    assert not declared("outbox_dead_count", 'Gauge("notify_outbox_rows")\nbody = {"outbox_dead_count": 3}')
    assert declared("notify_deliveries_total", 'Counter("notify_deliveries", "...")')
    assert declared("job_errors_total", 'CounterMetricFamily(\n    "job_errors", "...")')
    assert unknown_metrics('max(outbox_dead_count) > 0 and max(notify_outbox_rows{status="dead"}) > 0') == [
        "outbox_dead_count"
    ]
    # A label the metric does not carry, and the one Prometheus renames.
    assert unknown_labels('sum by (service) (rate(http_requests_total{status="500"}[5m]))') == ["service"]
    assert unknown_labels('increase(job_errors_total{exported_job="x"}[5m])') == []
    # prometheus_client's own process metrics and Prometheus's `up` count as exported.
    assert unknown_metrics("rate(process_cpu_seconds_total[5m]) and up == 0") == []
