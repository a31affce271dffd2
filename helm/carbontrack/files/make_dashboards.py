"""Writes the Grafana dashboards (files/dashboard-*.json): python helm/carbontrack/files/make_dashboards.py.

Generated rather than hand-edited so every panel's query is visible in one place (and a test can
check each query against a live Prometheus).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    unit: str,
    x: int,
    y: int,
    w: int = 12,
    kind: str = "timeseries",
) -> dict[str, Any]:
    return {
        "id": pid, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
                    for i, (e, legend) in enumerate(exprs)],
    }  # fmt: skip


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], extra_vars: list[dict[str, Any]]
) -> dict[str, Any]:
    variables = [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"}]
    return {
        "uid": uid, "title": title, "tags": ["carbontrack"], "timezone": "browser", "schemaVersion": 39,
        "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables + extra_vars}, "panels": panels,
    }  # fmt: skip


def query_var(name: str, query: str, multi: bool = False) -> dict[str, Any]:
    return {"name": name, "type": "query", "datasource": DS, "query": {"query": query, "refId": name},
            "refresh": 2, "includeAll": multi, "multi": multi}  # fmt: skip


FLEET = dashboard(
    "carbontrack-fleet", "carbontrack / fleet",
    [
        panel(1, "GPU energy by job (kWh)", [("sum by (namespace, job_name) (carbontrack_gpu_energy_joules_total) / 3.6e6", "{{namespace}}/{{job_name}}")], "kwatth", 0, 0),
        panel(2, "Emissions by job (kg CO2e)", [("sum by (namespace, job_name) (carbontrack_emissions_grams_total) / 1000", "{{namespace}}/{{job_name}}")], "masskg", 12, 0),
        panel(3, "GPU power by namespace (W)", [("sum by (namespace) (carbontrack_gpu_power_watts)", "{{namespace}}")], "watt", 0, 8),
        panel(4, "Grid intensity (gCO2e/kWh)", [("max by (namespace, job_name) (carbontrack_grid_intensity_grams_per_kwh)", "{{namespace}}/{{job_name}}")], "none", 12, 8),
        panel(5, "Gate failures", [('count by (gate) (carbontrack_gate_passed == 0)', "{{gate}}")], "none", 0, 16),
        panel(6, "Telemetry rejections (/s)", [("sum by (reason) (rate(carbontrack_telemetry_rejected_total[5m]))", "{{reason}}")], "reqps", 12, 16),
        panel(7, "Emissions avoided by carbon-aware starts (estimate, kg CO2e)", [("sum by (namespace, job_name) (carbontrack_emissions_avoided_grams_estimate) / 1000", "{{namespace}}/{{job_name}}")], "masskg", 0, 24),
        panel(8, "Time deferred for a clean grid (h)", [("max by (namespace, job_name) (carbontrack_deferred_seconds) / 3600", "{{namespace}}/{{job_name}}")], "h", 12, 24),
    ],
    [],
)  # fmt: skip

JOB = dashboard(
    "carbontrack-job", "carbontrack / job",
    [
        panel(1, "GPU power (W)", [('sum(carbontrack_gpu_power_watts{namespace="$namespace", job_name="$job"})', "power")], "watt", 0, 0),
        panel(2, "Energy per step (J)", [('sum(rate(carbontrack_gpu_energy_joules_total{namespace="$namespace", job_name="$job"}[5m])) / sum(rate(carbontrack_training_steps_total{namespace="$namespace", job_name="$job"}[5m]))', "J/step")], "joule", 12, 0),
        panel(3, "Steps per second", [('sum(rate(carbontrack_training_steps_total{namespace="$namespace", job_name="$job"}[5m]))', "steps/s")], "none", 0, 8),
        panel(4, "Cumulative kWh", [('sum(carbontrack_gpu_energy_joules_total{namespace="$namespace", job_name="$job"}) / 3.6e6', "kWh")], "kwatth", 12, 8),
        panel(5, "kg CO2e against the budget", [
            ('sum(carbontrack_emissions_grams_total{namespace="$namespace", job_name="$job"}) / 1000', "emitted"),
            ('max(carbontrack_emissions_budget_grams{namespace="$namespace", job_name="$job"}) / 1000', "budget"),
        ], "masskg", 0, 16),
        panel(6, "Epsilon against the budget", [
            ('max(carbontrack_privacy_epsilon{namespace="$namespace", job_name="$job"})', "epsilon"),
            ('max(carbontrack_privacy_epsilon_budget{namespace="$namespace", job_name="$job"})', "budget"),
        ], "none", 12, 16),
        panel(7, "Carbon-aware start: emissions avoided (estimate, g CO2e) and time deferred (s)", [
            ('max(carbontrack_emissions_avoided_grams_estimate{namespace="$namespace", job_name="$job"})', "avoided g (estimate)"),
            ('max(carbontrack_deferred_seconds{namespace="$namespace", job_name="$job"})', "deferred s"),
        ], "none", 0, 24, w=24),
    ],
    [query_var("namespace", "label_values(carbontrack_gpu_energy_joules_total, namespace)"),
     query_var("job", 'label_values(carbontrack_gpu_energy_joules_total{namespace="$namespace"}, job_name)')],
)  # fmt: skip


def main() -> None:
    for name, board in (("dashboard-fleet.json", FLEET), ("dashboard-job.json", JOB)):
        (HERE / name).write_text(json.dumps(board, indent=2) + "\n")


if __name__ == "__main__":
    main()
