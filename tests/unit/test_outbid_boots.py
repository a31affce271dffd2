"""A claim under the running sidecar's own boot id, then folds (core.accounting.folding): the sidecar's boot
id is public (its /healthz shows it), so a holder of the pod's token can claim more than the sidecar has
measured under it with a sequence number far above the sidecar's. The sidecar's batches are then
duplicates, which say nothing of liveness, and its boot folds once new boot ids need the place. A folded
boot remembers the energy counted for it, so the sidecar's counter counts again once it passes that, and
an id still sent to is never forgotten, so a token holder cannot fold its way past it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from carbontrack.api.wire import GpuCounter, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Verdict
from carbontrack.core.accounting.folding import Limits
from tests.cases.batches import telemetry_batch
from tests.cases.boots import STARTED, batch, roundtrip, send

MYSTERY = "Mystery GPU"
"""A model the power table does not know: the ceiling is 5 kW a GPU, the most a token holder may claim."""


def outbid(per_gpu_j: float, seq: int = 10**9) -> TelemetryBatch:
    """A token holder's claim under the sidecar's boot id: `per_gpu_j` on each of two GPUs, a huge seq."""
    claim = [GpuCounter(index=i, uuid=f"GPU-{i}", energy_joules=per_gpu_j) for i in range(2)]
    return telemetry_batch("p0", "sidecar", seq, gpus=claim, global_step=10**9, steps_seen=10**9)


def test_a_claim_above_the_sidecars_counters_under_a_huge_seq_cannot_freeze_its_count() -> None:
    """At 1095 a token holder claims 800 kJ under the sidecar's boot id with seq 1e9 (within both ceilings:
    10 kW since the source's first batch, 1.05 MJ for two unnamed GPUs since the pod started). The
    sidecar's batches then add nothing and carry a lower seq (duplicates), so 60 s later two new boot ids
    fold its boot. Its count once froze there (800 kJ where the sidecar measured 1.4 MJ); the fold
    remembers the 800 kJ counted for the boot, and the sidecar's growth past that counts, to the joule."""
    agg = JobAggregate()
    for seq in range(1, 101):
        at = 1000.0 + 10 * seq
        if seq == 10:
            assert send(agg, outbid(400_000.0), at=at - 5).verdict is Verdict.ACCEPTED
        if seq == 17:
            assert send(agg, batch("evil-1", 1, 0.0, name=MYSTERY), at=at - 1).verdict is Verdict.ACCEPTED
            assert send(agg, batch("evil-2", 1, 0.0, name=MYSTERY), at=at - 0.5).verdict is Verdict.ACCEPTED
            assert agg.folded["p0"].marks == {"sidecar": 800_000.0}
        verdict = send(agg, batch("sidecar", seq, 700.0 * 10 * seq), at=at).verdict
        assert verdict is (Verdict.ACCEPTED if seq < 10 or seq > 57 else Verdict.DUPLICATE), seq
    assert agg.energy_j == 2 * 700.0 * 1000 == agg.folded["p0"].marks["sidecar"]


def test_a_token_holder_cannot_fold_its_way_past_the_sidecars_folded_boot() -> None:
    """Once the sidecar's boot is folded, the token holder folds 40 boots of its own, two a minute (each
    must be quiet for the live window first), past the 16 ids a pod keeps, and keeps claiming 100 kJ
    above the sidecar under its folded id so its batches stay duplicates. The sidecar's id is sent to
    every 10 s, so it is never forgotten: once the claims stop, its counter passes them and counts."""
    agg = JobAggregate()
    at, seq, sidecar_j = STARTED, 0, 0.0

    def sidecar_sends(seconds: float) -> None:
        nonlocal at, seq, sidecar_j
        for _ in range(int(seconds // 10)):
            at, seq, sidecar_j = at + 10, seq + 1, sidecar_j + 14_000.0
            send(agg, batch("sidecar", seq, sidecar_j / 2), at=at)
            assert agg.energy_j >= sidecar_j

    sidecar_sends(100)
    assert send(agg, outbid(sidecar_j / 2 + 50_000.0), at=at + 1).verdict is Verdict.ACCEPTED
    for round_ in range(21):
        sidecar_sends(70)
        for k in (2 * round_, 2 * round_ + 1):
            assert send(agg, batch(f"evil-{k}", 1, 0.0, name=MYSTERY), at=at + 1).verdict is Verdict.ACCEPTED
        fold = agg.folded["p0"]
        assert "sidecar" in fold.marks and len(fold.marks) <= 16
        assert send(agg, outbid(sidecar_j / 2 + 50_000.0), at=at + 2).verdict is Verdict.ACCEPTED
    assert agg.folded["p0"].boots == 41
    sidecar_sends(200)
    assert agg.energy_j == sidecar_j == agg.folded["p0"].marks["sidecar"]


def test_remembered_ids_still_sent_to_fill_the_cap_then_a_new_boot_waits() -> None:
    """A pod keeps 2 folded ids once older ones are quiet, and 3 at most: while a token holder replays all
    3, a fourth fold would forget one still sent to, so the new boot waits (429 live-boots) until one of
    them has been quiet for the live window."""
    agg = JobAggregate(limits=Limits(folded_ids_per_pod=2, folded_ids_cap=3))
    at = STARTED
    for k in range(5):
        at += 61
        for boot in agg.folded["p0"].marks if "p0" in agg.folded else ():
            send(agg, batch(boot, 1, 0.0), at=at - 1)  # a replay: a duplicate that keeps the id
        assert send(agg, batch(f"b{k}", 1, 0.0), at=at).verdict is Verdict.ACCEPTED
    assert agg.folded["p0"].boot_ids == ["b0", "b1", "b2"]
    for boot in ("b0", "b1", "b2"):
        send(agg, batch(boot, 1, 0.0), at=at + 60)
    refused = send(agg, batch("b5", 1, 0.0), at=at + 61)
    assert refused.verdict is Verdict.LIVE_BOOTS
    assert "pod p0 remembers 3 folded boots, each folded or sent to within 60 s" in refused.message
    assert send(agg, batch("b5", 1, 0.0), at=at + 120).verdict is Verdict.ACCEPTED
    assert agg.folded["p0"].boot_ids == ["b2", "b3"] and agg.folded["p0"].boots == 4


@settings(max_examples=150, deadline=None)
@given(
    loads=st.lists(st.floats(0, 1), min_size=20, max_size=90),
    hostile=st.lists(
        st.tuples(
            st.floats(0, 1),  # when, as a fraction of the sidecar's run
            st.sampled_from(["sidecar", "sidecar", "evil-0", "evil-1", "evil-2", "evil-3", "evil-4"]),
            st.floats(0, 1),  # the claim above the sidecar, as a fraction of 300 kJ (new boot ids: 0 J)
            st.booleans(),  # a huge seq
        ),
        max_size=30,
    ),
    restart_at=st.integers(-1, 150),
)
def test_no_claims_and_folds_under_and_beside_the_sidecars_boot_count_less_than_the_sidecar(
    loads: list[float], hostile: list[tuple[float, str, float, bool]], restart_at: int
) -> None:
    """The sidecar sends every 10 s for up to 15 minutes at 0-700 W a GPU. Claims up to 300 kJ above its
    counters under its boot id, with a huge seq or not, and batches under new boot ids that fold its
    boot arrive at any time after its first batch; the operator may restart from status anywhere. After
    each sidecar batch the job counts at least what the sidecar measured."""
    events: list[tuple[float, TelemetryBatch]] = []
    sidecar_j = [0.0]
    for seq, load in enumerate(loads, start=1):
        sidecar_j.append(sidecar_j[-1] + 2 * 700.0 * load * 10)
        events.append((STARTED + 10.0 * seq, batch("sidecar", seq, sidecar_j[-1] / 2)))
    run_s = 10.0 * len(loads)
    for n, (when, boot, above, huge) in enumerate(hostile):
        t = STARTED + 10.0 + when * (run_s - 10.0) + 0.5
        if boot == "sidecar":
            measured = sidecar_j[int((t - STARTED) // 10)]
            claim = outbid((measured + above * 300_000.0) / 2, seq=10**9 if huge else n + 1)
            events.append((t, claim))
        else:
            events.append((t, batch(boot, n + 1, 0.0, name=MYSTERY)))
    agg = JobAggregate()
    for i, (at, b) in enumerate(sorted(events, key=lambda e: e[0])):
        if i == restart_at:
            agg = roundtrip(agg)
        result = send(agg, b, at)
        if b.boot_id == "sidecar" and b.gpus[0].name != "":
            assert result.verdict in (Verdict.ACCEPTED, Verdict.DUPLICATE, Verdict.BACKWARDS), result
            assert agg.energy_j >= b.energy_joules - 1e-6
