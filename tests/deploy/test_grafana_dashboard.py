"""deploy/grafana/cws-dashboard.json shows what the suite exports (issue 14).

A dashboard panel on a metric nobody exports is an empty graph on the night it is needed. This reads
every query of the dashboard, checks that each metric it names is one the suite (or its client library,
or Prometheus itself) exports, the same way the alert rules are checked (`make lint` has promtool
parse each query: tools/dashboard_queries.py). It also holds the dashboard to the shape an import needs: a datasource variable, a
`service` variable, and the panels issue 14 asks for."""

from __future__ import annotations

import re

from tests.deploy.promql import metric_names, unknown_labels, unknown_metrics
from tools.dashboard_queries import as_prometheus_sees_it, dashboard, panels, queries

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Golden signals (gateway and services), saturation, event outbox and dead letters, the delivery DLQ,
# job heartbeats and the circuit breakers: at least one panel reads each of these.
REQUIRED = {
    "http_requests_total", "http_request_duration_seconds_bucket", "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket", "process_cpu_seconds_total", "process_resident_memory_bytes",
    "cws_outbox_pending_events", "cws_consumer_dead_letters_total", "notify_outbox_rows",
    "job_heartbeat_age_seconds", "job_runner_up", "circuit_breaker_state",
}  # fmt: skip


def test_every_query_reads_metrics_the_suite_exports() -> None:
    exprs = queries(dashboard())
    assert len(exprs) > 20
    missing = {expr: unknown for expr in exprs if (unknown := unknown_metrics(as_prometheus_sees_it(expr)))}
    assert missing == {}, f"dashboard queries on metrics nothing exports: {missing}"
    # The variables' label_values(metric, label) queries are Grafana's, not PromQL: their metric counts.
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
            assert found, variable
            assert unknown_metrics(found.group(1)) == [], variable["name"]


def test_every_query_matches_and_groups_on_labels_its_metrics_carry() -> None:
    wrong = {
        expr: labels
        for expr in queries(dashboard())
        if (labels := unknown_labels(as_prometheus_sees_it(expr)))
    }
    assert wrong == {}, f"dashboard queries on labels their metrics do not carry: {wrong}"
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = re.findall(r"\w+", variable["query"]["query"])[1:]
            assert unknown_labels(f"{metric}{{{label}!=''}}") == [], variable["name"]


def test_the_dashboard_covers_the_golden_signals_queues_jobs_and_breakers() -> None:
    used = {name for expr in queries(dashboard()) for name in metric_names(as_prometheus_sees_it(expr))}
    assert sorted(REQUIRED - used) == []


def test_the_dashboard_imports_with_any_prometheus_datasource() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    assert board["id"] is None  # an import must not overwrite another dashboard by id
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["service"]["type"] == "query" and variables["service"]["datasource"] == DATASOURCE
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"])
            assert panel.get("description"), f"{panel['title']}: say what the panel shows and which alert"


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
