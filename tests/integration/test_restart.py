"""A restart of the operator changes no verdict: the gates' evidence lives in status, not in memory.

The sidecar forgets an eval or DP report once the operator acknowledged it, so an operator that kept
them only in memory judged a production canary after a restart on no evidence and halted it.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.cases.bodies import batch_doc
from tests.integration.harness import (
    PRODUCTION_GATES,
    Operator,
    apply,
    ctj,
    pod_token,
    post,
    report_evidence,
    running_pods,
    start_sidecar,
    status,
    wait,
)


def test_a_production_canary_killed_before_its_judgement_is_promoted_not_halted(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    job = ctj("survivor", 4, gates=PRODUCTION_GATES)
    job["spec"]["canary"] = {"replicas": 1, "minSteps": 10, "stages": [50, 100]}
    assert apply(cluster, namespace, job).returncode == 0
    wait(lambda: status(cluster, namespace, "survivor").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "survivor", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "survivor", pod, uid)
    trainer = sidecar.client()
    for step in range(1, 6):
        trainer.step(step)
    report_evidence(trainer, 5)
    wait(
        lambda: (
            [
                m["name"]
                for m in (status(cluster, namespace, "survivor").get("evidence") or {}).get("metrics", [])
            ]
            == ["eval_accuracy"]
        ),
        what="the eval kept in status",
    )
    operator.kill()  # SIGKILL before minSteps: the judgement comes from the next operator
    operator.start()
    for step in range(6, 13):  # no new eval: the one before the restart must be judged
        trainer.step(step)
        time.sleep(0.02)
    st = wait(
        lambda: (s := status(cluster, namespace, "survivor")).get("phase") in ("Promoting", "Halted") and s,
        what="the canary judged",
    )
    assert st["phase"] == "Promoting", st.get("gates")
    assert st["gateSummary"] == "7/7 passed" and st["replicas"] == 2
    assert st["testsEvidence"] == {"passRate": 0.99, "coverage": 0.93, "critical": 0, "high": 0, "medium": 1,
                                   "source": "spec"}  # fmt: skip
    sidecar.stop()


def test_unmeasured_energy_halts_a_staging_canary_on_the_carbon_gate(
    operator: Operator, namespace: str
) -> None:
    """A sidecar that can read no GPU energy reports method `unavailable`: 0 J is not a measurement."""
    cluster = operator.cluster
    job = ctj("blind", 1, gates={"context": "staging"})
    job["spec"]["carbon"]["budgetKg"] = 10
    assert apply(cluster, namespace, job).returncode == 0
    # the canary's minSteps count from its start: report only once it has started
    wait(lambda: status(cluster, namespace, "blind").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "blind", 1)
    token = pod_token(cluster, namespace, pod, uid)
    for seq, step in enumerate((5, 12), start=1):
        now = time.time()
        records = [{"step": s, "firstStep": s - 1, "energyJoules": 0, "durationS": 0.1, "endedAt": now}
                   for s in range(step - 4, step + 1)]  # fmt: skip
        body = batch_doc(
            namespace, "blind", pod, boot="b1", seq=seq, sent_at=now,
            method="unavailable", gpus=[], stepsSeen=step, globalStep=step, steps=records,
        )  # fmt: skip
        code, text = post(operator.url, token, body)
        assert code == 200, text
    st = wait(
        lambda: (s := status(cluster, namespace, "blind")).get("phase") == "Halted" and s, what="halted"
    )
    carbon = next(g for g in st["gates"] if g["name"] == "carbon.budget")
    assert not carbon["passed"] and "energy was not measured" in carbon["message"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "GateFailed" and "energy was not measured" in ready["message"]
