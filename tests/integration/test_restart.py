"""A restart of the operator changes no verdict and takes no counter back: all evidence lives in status.

The sidecar forgets an eval or DP report once the operator acknowledged it, so an operator that kept
them only in memory judged a production canary after a restart on no evidence and halted it. And an
exporter that showed the live totals, up to a status interval ahead of status, showed less after a
restart than before it: Prometheus reads that as a counter reset.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from tests.cases.bodies import batch_doc
from tests.integration.harness import (
    PRODUCTION_GATES,
    Operator,
    apply,
    ctj,
    metric_value,
    operator_instead,
    pod_token,
    post,
    published_ca,
    report_evidence,
    running_pods,
    start_sidecar,
    status,
    wait,
)
from tests.integration.sidecars import Sidecar


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


COUNTERS = (
    "carbontrack_gpu_energy_joules_total",
    "carbontrack_emissions_grams_total",
    "carbontrack_training_steps_total",
)


def test_no_counter_goes_back_over_five_sigkills_at_production_intervals(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """Status written and the job judged every 10 s, and each sidecar sending every 10 s, as a cluster
    runs them by default; each SIGKILL lands at a random point of the status interval. The restarted
    operator loads the job from status at its first judgement, before most sidecars send again."""
    paced_env = {"CARBONTRACK_STATUS_INTERVAL_S": "10", "CARBONTRACK_JUDGE_INTERVAL_S": "10"}
    stop = threading.Event()
    with operator_instead(operator, tmp_path / "paced.log", **paced_env) as paced:
        try:
            paced.start()
            _count_through_sigkills(paced, namespace, tmp_path, stop)
        finally:
            stop.set()


def _count_through_sigkills(paced: Operator, namespace: str, tmp_path: Path, stop: threading.Event) -> None:
    cluster = paced.cluster
    assert apply(cluster, namespace, ctj("counted", 2)).returncode == 0
    ca = published_ca(cluster, namespace, tmp_path)
    sidecars = [
        Sidecar(tmp_path, paced.url, token=pod_token(cluster, namespace, pod, uid),
                CARBONTRACK_JOB_NAME="counted", POD_NAMESPACE=namespace, POD_NAME=pod, POD_UID=uid,
                CARBONTRACK_CA_FILE=str(ca), CARBONTRACK_SIM_GPUS="1",  # the pod holds one GPU
                CARBONTRACK_INTERVAL_S="", CARBONTRACK_MAX_BACKOFF_S="30")  # the sidecar's own defaults
        for pod, uid in running_pods(cluster, namespace, "counted", 2)
    ]  # fmt: skip
    threading.Thread(target=_step_together, args=(sidecars, stop), daemon=True).start()

    def scrape() -> list[float] | None:
        text = paced.metrics()
        values = [metric_value(text, name, namespace, "counted") for name in COUNTERS]
        return [v for v in values if v is not None] if None not in values else None

    wait(lambda: (v := scrape()) and v[0] > 0 and v, timeout=60, what="energy exported")
    rng = random.Random()
    for kill in range(5):
        time.sleep(rng.uniform(0.0, 10.0))
        before = scrape()
        assert before is not None
        paced.kill()
        paced.start()
        after = wait(scrape, timeout=60, what="the job's series after the restart")
        print(f"SIGKILL {kill + 1}: {before} -> {after}")
        assert all(a >= b for a, b in zip(after, before, strict=True)), (kill, before, after)


def _step_together(sidecars: list[Sidecar], stop: threading.Event) -> None:
    """The pods of a data-parallel job step together, ten global steps a second."""
    trainers = [s.client() for s in sidecars]
    step = 0
    while not stop.is_set():
        step += 1
        for trainer in trainers:
            trainer.step(step)
        time.sleep(0.1)
