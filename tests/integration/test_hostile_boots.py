"""A pod's own token against its running sidecar, on the real control plane (core.accounting.boots).

Batches under new boot ids, sent with the token of the pod whose real sidecar is running, once folded the
sidecar's live boot away: every later batch of the sidecar was a 409 duplicate and the job's energy
stopped growing (+0 J in 8 s instead of 4,800 J), which let a job slip under its carbon gate. And a claim
above the sidecar's counters under its own boot id, held until new boot ids folded it, once froze its
count at the claim (core.accounting.folding). And boots a token holder keeps live before the sidecar is
first heard hold its boot out of the pod's places: the pod is then unmeasured, said in a condition.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from tests.cases.bodies import batch_doc
from tests.integration.harness import (
    Operator,
    apply,
    ctj,
    operator_instead,
    phase_is,
    pod_token,
    post,
    running_pods,
    start_sidecar,
    status,
    wait,
    wait_for_energy,
)
from tests.integration.objects import events
from tests.integration.sidecars import Sidecar

SHORT_WINDOW = {"CARBONTRACK_LIVE_BOOT_WINDOW_S": "3"}
"""An operator whose live window is 3 s stands in for the 60 s one: boots go quiet within a test."""
REJECTED = re.compile(r'carbontrack_telemetry_rejected_total\{reason="live-boots"\} ([0-9.]+)')


def _rejected_live_boots(operator: Operator) -> float:
    found = REJECTED.search(operator.metrics())
    return float(found.group(1)) if found else 0.0


def test_hostile_boots_next_to_a_running_sidecar_cannot_stop_its_energy_counting(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("erase", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "erase", 1)
    wait(lambda: status(cluster, namespace, "erase").get("phase") == "Canary", what="phase Canary")
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "erase", pod, uid)  # 1 GPU at 300 W
    trainer = sidecar.client()
    trainer.step(1)
    wait(lambda: status(cluster, namespace, "erase").get("energyJoules", 0) > 0, what="the sidecar counted")
    token = pod_token(cluster, namespace, pod, uid)  # the pod's own token, as its training code reads it
    rejected_before = _rejected_live_boots(operator)

    def hostile(boot: str, seq: int = 1) -> tuple[int, str]:
        return post(operator.url, token, batch_doc(namespace, "erase", pod, boot=boot, seq=seq, joules=0.0))

    assert hostile("evil-0")[0] == 200  # the pod's second place: the sidecar's boot holds the first
    began, counted_before = time.monotonic(), status(cluster, namespace, "erase")["energyJoules"]
    answers = []
    for i in range(1, 41):  # for 8 s, the length of the attack that once stopped the count
        answers.append(hostile(f"evil-{i}"))
        assert hostile("evil-0", seq=i + 1)[0] == 200  # and keeps its own boot live
        trainer.step(i + 1)
        time.sleep(0.2)
    assert {code for code, _ in answers} == {429}, answers[:3]
    assert "has 2 live sidecar boots (a batch within 60 s)" in answers[0][1]
    grown = wait(
        lambda: (
            (s := status(cluster, namespace, "erase"))["energyJoules"] - counted_before
            >= 0.8 * 300.0 * (time.monotonic() - began) - 300.0
            and s["telemetry"]["refused"].get("liveBoots") == 40  # status written after the last refusal
            and s
        ),
        what="the sidecar's energy growing at its 300 W",
    )
    assert grown["telemetry"]["refused"]["liveBoots"] == 40 and grown["telemetry"]["folded"] == []
    assert _rejected_live_boots(operator) == rejected_before + 40
    # every joule the sidecar measured is counted, exactly: the hostile boot claimed none
    first = sidecar.final_energy(sidecar.stop())
    st = wait_for_energy(cluster, namespace, "erase", first)
    assert {s["bootId"] for s in st["telemetry"]["sources"]} >= {"evil-0"} and len(
        st["telemetry"]["sources"]
    ) == 2
    _a_restarted_sidecar_still_counts(operator, tmp_path, namespace, pod, uid, first)


def _a_restarted_sidecar_still_counts(
    operator: Operator, tmp_path: Path, namespace: str, pod: str, uid: str, before: float
) -> None:
    """The sidecar above stopped cleanly (its final batch). A final batch does not make a boot quiet (a
    token holder could send one under the running sidecar's boot id), so the restarted sidecar's new boot
    is answered 429 until the old boot has been silent for the live window (60 s), retries with backoff,
    then takes the place of whichever went quiet first (the token holder's boot, which claimed nothing,
    or the old sidecar's), and adds on: nothing lost by waiting."""
    cluster = operator.cluster
    second = start_sidecar(tmp_path, operator, cluster, namespace, "erase", pod, uid)  # a new boot id
    trainer = second.client()
    for step in range(50, 60):
        trainer.step(step)
        time.sleep(0.05)
    wait(
        lambda: status(cluster, namespace, "erase")["telemetry"]["folded"],
        timeout=150,
        what="a quiet boot folded, the new boot counted",
    )
    after = second.final_energy(second.stop())
    st: dict[str, Any] = wait_for_energy(cluster, namespace, "erase", before + after)
    (fold,) = st["telemetry"]["folded"]
    assert fold["boots"] == 1 and fold["energyJoules"] == (0.0 if fold["bootIds"] == ["evil-0"] else before)
    assert len(st["telemetry"]["sources"]) == 2


def test_a_claim_under_the_sidecars_boot_id_and_a_fold_cannot_freeze_its_count(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """With the pod's token, a claim 3 kJ above the real sidecar's counter (10 s of its 300 W) under its
    boot id with seq 1e9: the sidecar's batches become duplicates, its boot goes quiet, and two new boot
    ids fold it. An operator with a 3 s live window stands in for the 60 s one. The fold remembers what
    was counted for the boot, and the sidecar's growth past the claim counts: the job ends at the
    sidecar's own energy, to the joule."""
    cluster = operator.cluster
    with operator_instead(operator, tmp_path / "short-window.log", **SHORT_WINDOW) as short:
        short.start()
        assert apply(cluster, namespace, ctj("outbid", 1)).returncode == 0
        ((pod, uid),) = running_pods(cluster, namespace, "outbid", 1)
        phase_is(cluster, namespace, "outbid", "Canary")
        sidecar = start_sidecar(tmp_path, short, cluster, namespace, "outbid", pod, uid)
        _outbid_and_fold(short, namespace, pod, pod_token(cluster, namespace, pod, uid), sidecar)


def _outbid_and_fold(op: Operator, namespace: str, pod: str, token: str, sidecar: Sidecar) -> None:
    cluster, trainer = op.cluster, sidecar.client()
    trainer.step(1)
    st = wait(
        lambda: (s := status(cluster, namespace, "outbid")).get("energyJoules", 0) > 0 and s, what="counted"
    )
    ((boot, counted),) = [(s["bootId"], s["energyJoules"]) for s in st["telemetry"]["sources"]]
    claim = counted + 3000.0
    doc = batch_doc(namespace, "outbid", pod, boot=boot, seq=10**9, joules=claim)
    assert post(op.url, token, doc)[0] == 200
    time.sleep(4)  # the sidecar's batches, below the claim, are duplicates: its boot goes quiet
    for evil in ("evil-1", "evil-2"):  # the second folds the sidecar's boot
        assert post(op.url, token, batch_doc(namespace, "outbid", pod, boot=evil, joules=0.0))[0] == 200
    folded = wait(lambda: status(cluster, namespace, "outbid")["telemetry"]["folded"], what="the fold")
    assert folded[0]["bootIds"] == [boot] and folded[0]["bootEnergiesJoules"] == [claim]
    for step in range(2, 80):  # 16 s at 300 W: past the claim
        trainer.step(step)
        time.sleep(0.2)
    final = sidecar.final_energy(sidecar.stop())
    assert final > claim + 1000.0
    st = wait_for_energy(cluster, namespace, "outbid", final)
    (fold,) = st["telemetry"]["folded"]
    assert (fold["bootIds"], fold["bootEnergiesJoules"], fold["energyJoules"]) == ([boot], [final], final)


def test_a_sidecar_held_out_by_a_token_holders_live_boots_makes_its_pod_unmeasured(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """With the pod's token, two boots claiming nothing take the pod's two places before its sidecar is
    heard, and are kept live. The sidecar's batches are 429s (live-boots), which it retries every second;
    once it has been held out for two live windows (an operator with a 3 s window stands in for 60 s), the
    pod counts as unmeasured: the PodsMeasured condition and a Warning Event name it and why, and
    status.telemetry.unmeasuredPods lists it. When the token holder stops, its boots go quiet, the
    sidecar's boot takes a place and its energy counts, to the joule."""
    cluster = operator.cluster
    stop = threading.Event()
    with operator_instead(operator, tmp_path / "short-window.log", **SHORT_WINDOW) as short:
        try:
            short.start()
            assert apply(cluster, namespace, ctj("heldout", 1)).returncode == 0
            ((pod, uid),) = running_pods(cluster, namespace, "heldout", 1)
            token = pod_token(cluster, namespace, pod, uid)
            holder = (short, token, namespace, pod, stop)
            threading.Thread(target=_keep_two_boots_live, args=holder, daemon=True).start()

            def sources() -> list[Any]:
                return list(status(cluster, namespace, "heldout").get("telemetry", {}).get("sources", []))

            wait(lambda: len(sources()) == 2, what="the token holder's two boots")
            sidecar = start_sidecar(tmp_path, short, cluster, namespace, "heldout", pod, uid)
            _held_out_then_counted(short, namespace, pod, sidecar, stop)
        finally:
            stop.set()


def _keep_two_boots_live(op: Operator, token: str, namespace: str, pod: str, stop: threading.Event) -> None:
    """The token holder's two boots, claiming nothing, each sending twice a second until `stop`."""
    seq = 0
    while not stop.is_set():
        seq += 1
        for boot in ("evil-1", "evil-2"):
            post(op.url, token, batch_doc(namespace, "heldout", pod, boot=boot, seq=seq, joules=0.0))
        time.sleep(0.5)


def _held_out_then_counted(
    op: Operator, namespace: str, pod: str, sidecar: Sidecar, stop: threading.Event
) -> None:
    cluster = op.cluster

    def measured() -> dict[str, Any]:
        st = status(cluster, namespace, "heldout")
        return next((c for c in st.get("conditions", []) if c["type"] == "PodsMeasured"), {})

    condition = wait(lambda: (c := measured()).get("status") == "False" and c, timeout=60, what="unmeasured")
    assert (
        f"{pod}: a sidecar boot refused a place (429 live-boots) for two live windows" in condition["message"]
    )
    st = wait(
        lambda: (s := status(cluster, namespace, "heldout"))["telemetry"].get("unmeasuredPods") and s,
        what="status.telemetry.unmeasuredPods",
    )  # the telemetry writer's field, handed over by the judgement
    assert [p["pod"] for p in st["telemetry"]["unmeasuredPods"]] == [pod]
    assert st["telemetry"]["refused"]["liveBoots"] > 0 and st.get("energyJoules", 0) == 0
    said = f"1 running pod(s) unmeasured: {pod}: a sidecar boot refused a place"
    wait(lambda: "PodsUnmeasured" in (ev := events(cluster, namespace)) and said in ev, what="the Event")
    stop.set()  # the token holder stops: its boots go quiet, the sidecar's takes a place
    wait(lambda: measured().get("status") == "True", timeout=60, what="measured again")
    final = sidecar.final_energy(sidecar.stop())
    st = wait_for_energy(cluster, namespace, "heldout", final)
    assert sidecar_boot_counted(st, final)


def sidecar_boot_counted(st: dict[str, Any], final: float) -> bool:
    """The sidecar's boot is a source at its final energy (the token holder's boots claimed nothing)."""
    return any(abs(s["energyJoules"] - final) < 1e-6 for s in st["telemetry"]["sources"])
