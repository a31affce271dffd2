"""A real Prometheus scrapes the operator; every dashboard query returns data; the alert rules pass promtool.

Prometheus and promtool come from Debian's `prometheus` package (.ci/run installs it); without them
these tests are skipped with that reason.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.cases.jobs import gated
from tests.integration.harness import Operator, post_batch, running_pods, start_sidecar, status, train, wait
from tests.integration.prometheus_server import needs_prometheus, query

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "carbontrack" / "files"
pytestmark = needs_prometheus


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(FILES / "alerts.rules.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", str(ROOT / "tests" / "prometheus" / "alerts_test.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for board in ("dashboard-fleet.json", "dashboard-job.json"):
        for panel in json.loads((FILES / board).read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{board}: {panel['title']}", target["expr"]))
    return out


def test_prometheus_scrapes_the_operator_and_every_dashboard_query_has_data(
    operator: Operator, prometheus: str, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    job = gated("dash", 0.95)  # the canary reaches 0.86: a gate fails, so gate-failure panels have data
    job["spec"]["carbon"]["schedule"] = {}  # the static table starts it at once: the deferral panels' data
    assert (
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job), check=False).returncode
        == 0
    )
    wait(lambda: status(cluster, namespace, "dash").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "dash", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "dash", pod, uid)
    trainer = sidecar.client()
    for chunk in range(4):  # steps spread over several scrapes, so rate() has something to say
        train(trainer, chunk * 5 + 1, chunk * 5 + 5, accuracy=0.86)
        time.sleep(1.5)
    assert post_batch(operator.url, "not-a-token", namespace, "dash", pod)[0] == 401
    wait(lambda: status(cluster, namespace, "dash").get("phase") == "Halted", what="phase Halted")
    time.sleep(3)
    variables = {"$namespace": namespace, "$job": "dash"}
    missing = []
    for title, expr in dashboard_queries():
        for name, value in variables.items():
            expr = expr.replace(name, value)
        result = wait(lambda e=expr: query(prometheus, e), timeout=20, what=f"data for {title}")  # type: ignore[misc]
        if not result:
            missing.append(title)
    sidecar.stop()
    assert not missing, missing
    up = query(prometheus, 'up{job="carbontrack"}')
    assert up and up[0]["value"][1] == "1"
