"""Metric gates on the real control plane, with the operator as a Deployment runs it, against the
Prometheus endpoints the session's operator lists (conftest): `main`, a real Prometheus (Debian's
package) scraping the operator's own /metrics; `down`, where nothing listens; `fake`, answering what a
test sets.

With `main` the gate's query reads the job's own step counter, so the test controls the measured value:
a job through an Inconclusive measurement resumed by `carbontrack approve`. An unreachable endpoint
halts as Error (never as a failure) with the endpoint named. A query answering `+Inf` is an Error
measurement that quotes it, and the job keeps being judged. And no request leaves for an address the
cluster admin did not list: not for a URL in the job, an unknown endpoint name, or a redirect.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cases.fake_prometheus import FakePrometheus
from tests.cases.jobs import gated
from tests.integration.harness import (
    Operator,
    apply,
    decide,
    phase_is,
    running_pods,
    start_sidecar,
    status,
    train,
    wait,
    whoami,
)
from tests.integration.objects import events, get_row
from tests.integration.prometheus_server import needs_prometheus


def with_metric(name: str, namespace: str, endpoint: str, query: str = "", **gate: Any) -> dict[str, Any]:
    """`gated(name)` with a metric gate `steps` on `endpoint`; the query defaults to the job's steps."""
    job = gated(name, 0.8)
    query = query or f'sum(carbontrack_training_steps_total{{namespace="{namespace}",job_name="{name}"}})'
    job["spec"]["gates"]["metrics"] = [
        {"name": "steps", "prometheus": {"endpoint": endpoint, "query": query, "timeoutSeconds": 2}, **gate}
    ]
    return job


def measured(cluster: Any, namespace: str, name: str, text: str) -> dict[str, Any]:
    """The status once an Error measurement whose message holds `text` is in it."""

    def found() -> dict[str, Any] | None:
        st = status(cluster, namespace, name)
        for history in st.get("measurements") or []:
            if any(m["verdict"] == "Error" and text in m["message"] for m in history["measurements"]):
                return st
        return None

    return dict(wait(found, what=f"an Error measurement saying {text!r}"))


@needs_prometheus
def test_a_prometheus_gate_measures_pauses_on_inconclusive_and_approve_resumes(
    operator: Operator, namespace: str, tmp_path: Path, prometheus: str
) -> None:
    cluster = operator.cluster
    # steps >= 5 pass the fail bound; below 1000 is Inconclusive: the canary's 12 steps are
    job = with_metric("prom", namespace, "main", min=5, inconclusiveBelow=1000, count=2,
                      initialDelaySteps=10, consecutiveErrorLimit=10)  # fmt: skip
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "prom", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "prom", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "prom", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    st = phase_is(cluster, namespace, "prom", "Paused")
    print(get_row(cluster, namespace, "prom"))
    assert st["gateSummary"] == "metric.steps inconclusive", st["gates"]
    (history,) = st["measurements"]
    assert history["name"] == "steps" and history["measured"] == 2 and history["inconclusive"] == 2
    taken = [m for m in history["measurements"] if m["verdict"] != "Error"]
    assert [m["verdict"] for m in taken] == ["Inconclusive", "Inconclusive"]
    assert all(5 <= m["value"] <= 12 and m["step"] >= 10 for m in taken), taken
    gate = next(g for g in st["gates"] if g["name"] == "metric.steps")
    assert gate["verdict"] == "Inconclusive" and "between min 5 and 1000" in gate["message"]
    out = decide(cluster, "approve", "prom", "-n", namespace, "--reason", "step rate is fine", "--wait")
    assert out.returncode == 0 and "phase Promoting" in out.stdout, out
    st = status(cluster, namespace, "prom")
    assert st["replicas"] == 2 and st["decisions"][0]["by"] == whoami(cluster)
    # the new stage counts afresh: its counts are for stage 0
    assert st["measurements"][0]["stage"] == 0 and st["measurements"][0]["measured"] == 0
    print(get_row(cluster, namespace, "prom"))
    sidecar.stop()


def test_an_unreachable_provider_is_an_error_that_halts_naming_it(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    job = with_metric("down", namespace, "down", min=5, consecutiveErrorLimit=2)
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "down", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "down", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "down", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    st = phase_is(cluster, namespace, "down", "Halted")
    gate = next(g for g in st["gates"] if g["name"] == "metric.steps")
    assert (gate["verdict"], gate["passed"], st["gateSummary"]) == ("Error", False, "metric.steps error")
    assert "3 errors in a row > consecutiveErrorLimit 2" in gate["message"], gate
    assert "endpoint down unreachable: Connection refused" in gate["message"], gate
    shown = json.dumps([st["gates"], st["measurements"]])
    assert "127.0.0.1" not in shown, "the endpoint's URL is the admin's: never in a job's status"
    (history,) = st["measurements"]
    assert (history["measured"], history["failed"], history["errors"]) == (0, 0, 3)
    assert "metric.steps" in events(cluster, namespace)
    print(get_row(cluster, namespace, "down"))
    sidecar.stop()


def test_a_query_answering_infinity_is_an_error_quoting_it_and_the_job_is_still_judged(
    operator: Operator, namespace: str, fake_prometheus: FakePrometheus
) -> None:
    """`1/0` answers +Inf. JSON has no Infinity: a status patch holding it is refused (400), and kopf
    stops the job's timer for good. So it is an Error measurement quoting the sample, and a later edit
    of the spec is judged (observedGeneration follows it)."""
    cluster = operator.cluster
    query = f"inf_{namespace}"
    fake_prometheus.scalar(query, "+Inf")
    job = with_metric("inf", namespace, "fake", query, max=1000, consecutiveErrorLimit=10)
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "inf", "Canary")
    st = measured(cluster, namespace, "inf", "the sample '+Inf' is not a finite number")
    assert not [c for c in st.get("conditions") or [] if c["type"] == "Judged" and c["status"] == "False"]
    edit = {"spec": {"totalSteps": 3000}}
    cluster.kubectl("patch", "ctj", "inf", "-n", namespace, "--type=merge", "-p", json.dumps(edit))
    generation = json.loads(cluster.kubectl("get", "ctj", "inf", "-n", namespace, "-o", "json").stdout)[
        "metadata"
    ]["generation"]
    wait(
        lambda: status(cluster, namespace, "inf").get("observedGeneration") == generation,
        what=f"the edit (generation {generation}) judged",
    )
    print(get_row(cluster, namespace, "inf"))


class Listener:
    """A TCP listener on a port no endpoint names, counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def test_no_request_leaves_for_an_address_the_admin_did_not_list(
    operator: Operator, namespace: str, fake_prometheus: FakePrometheus, listener: Listener
) -> None:
    """A job owner's URL, an endpoint name nobody listed, and a listed endpoint's redirect: none of them
    makes the operator connect to the listener on an unlisted port."""
    cluster = operator.cluster
    target = f"http://127.0.0.1:{listener.port}"
    by_url = with_metric("by-url", namespace, "main", max=1)
    by_url["spec"]["gates"]["metrics"][0]["prometheus"]["address"] = target
    refused = apply(cluster, namespace, by_url)
    assert refused.returncode != 0 and "prometheus.address is not accepted" in refused.stderr, refused
    assert "name one with prometheus.endpoint" in refused.stderr
    query = f"redirect_{namespace}"
    fake_prometheus.redirect(query, f"{target}/latest/meta-data/")
    assert apply(cluster, namespace, with_metric("unlisted", namespace, "nope", max=1)).returncode == 0
    assert apply(cluster, namespace, with_metric("redirect", namespace, "fake", query, max=1)).returncode == 0
    measured(cluster, namespace, "unlisted", "no Prometheus endpoint named 'nope' (the operator lists: main,")
    measured(cluster, namespace, "redirect", "endpoint fake: HTTP 302, a redirect (not followed)")
    assert query in fake_prometheus.queries  # the listed endpoint was asked, and sent the operator away
    assert listener.accepted == 0
