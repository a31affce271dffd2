"""First contact without the apiserver, on the real control plane: the operator, under the chart's
ServiceAccount and RBAC, reads the apiserver's signing keys and verifies real pod-bound tokens
(TokenRequest) itself; real sidecars' batches are accepted with no TokenReview at all."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cases.bodies import batch_doc
from tests.integration.harness import (
    Operator,
    apply,
    chart_identity,
    ctj,
    pod_token,
    post,
    running_pods,
    start_sidecar,
    status,
    wait,
)


def counter_sum(metrics: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels` (0 when it has none)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_real_sidecars_are_accepted_with_no_token_review_under_the_charts_rbac(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    operator.stop()  # the session's operator would judge the same object
    charted = Operator(cluster, tmp_path / "charted.log", KUBECONFIG=str(chart_identity(cluster)))
    sidecars = []
    try:
        charted.start()
        assert apply(cluster, namespace, ctj("first", 2)).returncode == 0
        pods = running_pods(cluster, namespace, "first", 2)
        sidecars = [start_sidecar(tmp_path, charted, cluster, namespace, "first", p, u) for p, u in pods]
        trainers = [s.client() for s in sidecars]
        for step in range(1, 11):
            for t in trainers:
                t.step(step)
            time.sleep(0.05)
        wait(lambda: status(cluster, namespace, "first").get("steps") == 10, what="both pods' steps")
        # a pod's real token for the other pod, and a token of a pod the Job does not have, are refused
        (pod_a, uid_a), (pod_b, _) = pods
        stolen = post(
            charted.url, pod_token(cluster, namespace, pod_a, uid_a), batch_doc(namespace, "first", pod_b)
        )
        assert stolen[0] == 403, stolen
        metrics = charted.metrics()
        counted = [line for line in metrics.splitlines() if line.startswith("carbontrack_token_")]
        verified = "carbontrack_token_verifications_total"
        assert counter_sum(metrics, verified, method="jwks", result="accepted") >= 3, (
            counted
        )  # 2 sidecars, 1 post
        assert counter_sum(metrics, verified, method="tokenreview") == 0, counted
        assert counter_sum(metrics, "carbontrack_token_reviews_total") == 0, counted
    finally:
        for s in sidecars:
            s.stop()
        charted.stop()
        operator.start()
