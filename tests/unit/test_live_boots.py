"""Live boots cannot be folded by a newcomer (core.accounting.boots): batches under new boot ids sent with
the pod's own token next to its running sidecar are refused (429 live-boots, counted) while the sidecar's
boot is live, and never make the pod's counted energy fall below the sidecar's; a restarted sidecar's old
boot goes quiet by itself, so honest restarts still work."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from carbontrack.api.wire import GpuCounter, TelemetryBatch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Verdict
from carbontrack.core.accounting.gpu_power import MAX_W_PER_GPU
from carbontrack.core.accounting.plausibility import CLOCK_SLACK_S
from tests.cases.batches import telemetry_batch
from tests.cases.boots import H100, STARTED, batch, roundtrip, send


def test_new_boot_ids_cannot_fold_the_running_sidecars_boot() -> None:
    """The attack: two batches under new boot ids next to the running sidecar once folded its live boot
    away, and every later batch of the sidecar was a 409 duplicate: +0 J."""
    agg = JobAggregate()
    assert send(agg, batch("sidecar", 1, 7000.0), at=1010).verdict is Verdict.ACCEPTED
    assert send(agg, batch("evil-1", 1, 0.0), at=1011).verdict is Verdict.ACCEPTED  # the free place
    refused = send(agg, batch("evil-2", 1, 0.0), at=1012)
    assert (refused.verdict, refused.message) == (
        Verdict.LIVE_BOOTS,
        "pod p0 has 2 live sidecar boots (a batch within 60 s): boot evil-2 is counted once one of them "
        "goes quiet",
    )
    assert send(agg, batch("sidecar", 2, 14_000.0), at=1020).verdict is Verdict.ACCEPTED
    for i in range(3, 11):
        assert send(agg, batch(f"evil-{i}", 1, 0.0), at=1020 + i).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("sidecar", 3, 21_000.0), at=1030).verdict is Verdict.ACCEPTED
    assert set(agg.sources) == {("p0", "sidecar"), ("p0", "evil-1")} and agg.folded == {}
    assert agg.energy_j == 42_000.0 and agg.refused == {"live_boots": 9}


def test_a_restarted_sidecars_old_boot_goes_quiet_by_itself() -> None:
    """Boot a dies without a word after its batch at 1040; a token holder keeps boot x live. The restarted
    sidecar's boot b waits (429, which it retries) until a has been quiet for 60 s, then takes its place."""
    agg = JobAggregate()
    for seq in range(1, 5):
        assert send(agg, batch("a", seq, 7000.0 * seq), at=1000 + 10 * seq).verdict is Verdict.ACCEPTED
    for k in range(8):
        assert send(agg, batch("x", k + 1, 0.0), at=1035 + 10 * k).verdict is Verdict.ACCEPTED
    assert send(agg, batch("b", 1, 700.0), at=1045).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("b", 1, 700.0), at=1099.9).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("b", 2, 42_000.0), at=1100).verdict is Verdict.ACCEPTED
    fold = agg.folded["p0"]
    assert (fold.boots, fold.boot_ids, fold.energy_j) == (1, ["a"], 56_000.0)
    assert set(agg.sources) == {("p0", "x"), ("p0", "b")}
    assert agg.energy_j == 56_000.0 + 84_000.0 and agg.refused == {"live_boots": 2}
    # its last in-flight batch, after the fold: its growth past the 56 kJ counted for it counts; once
    late = send(agg, batch("a", 5, 35_000.0), at=1101)
    assert (late.verdict, late.energy_j, agg.folded["p0"].energy_j) == (Verdict.ACCEPTED, 14_000.0, 70_000.0)
    again = send(agg, batch("a", 5, 35_000.0), at=1102)
    assert again.verdict is Verdict.DUPLICATE and "folded into the pod's total at 70000 J" in again.message


def test_a_restarted_sidecar_held_out_by_a_token_holders_live_boots_makes_its_pod_unmeasured() -> None:
    """Boot a dies after 1040; a token holder keeps x live and takes a's place with y as soon as a is quiet.
    The restarted sidecar's boot b, retrying every 30 s, is refused from 1045: its pod's energy is not
    being counted, and after two live windows of it (1165) the pod is held out, so unmeasured
    (core.rollout.coverage); while b keeps retrying it stays so, and once b is admitted it is not."""
    agg = JobAggregate()
    for seq in range(1, 5):
        send(agg, batch("a", seq, 7000.0 * seq), at=1000 + 10 * seq)
    held: dict[float, set[str]] = {}
    for k in range(20):
        at = 1035.0 + 10 * k
        send(agg, batch("x", k + 1, 0.0), at=at)
        if at >= 1100:
            send(agg, batch("y", k + 1, 0.0), at=at + 0.5)
        if k % 3 == 1:
            assert send(agg, batch("b", 1, 700.0), at=at + 0.7).verdict is Verdict.LIVE_BOOTS
            held[at + 0.7] = agg.held_out_pods(at + 0.7)
    assert held == {t: (set() if t < 1165 else {"p0"}) for t in held}
    assert agg.held_out_pods(1285.6) == {"p0"} and agg.held_out_pods(1286.0) == set()  # b stopped retrying
    assert send(agg, batch("b", 1, 700.0), at=1300).verdict is Verdict.ACCEPTED  # x and y went quiet
    assert agg.held_out.refusals == {} and agg.held_out_pods(1300) == set()


def test_refused_boots_are_tracked_per_pod_in_a_bounded_set_and_a_crowd_of_them_is_held_out() -> None:
    """6000 new boot ids refused at once beside the pod's two live boots: 8 are tracked per pod, the first
    refused among them (the sidecar's boot, refused first and retrying, among them), and a pod with more
    boots refused at once than are tracked is held out at once (no honest restart does that), for three
    live windows after the last such crowd."""
    agg = JobAggregate()
    send(agg, batch("x", 1, 0.0), at=1000)
    send(agg, batch("y", 1, 0.0), at=1000)
    for t in (1001.0, 1061.0, 1121.0):
        send(agg, batch("x", int(t), 0.0), at=t)
        send(agg, batch("y", int(t), 0.0), at=t)
        assert send(agg, batch("sidecar", 1, 0.0), at=t + 0.5).verdict is Verdict.LIVE_BOOTS
        for i in range(2000):
            send(agg, batch(f"{int(t)}-{i:04d}", 1, 0.0), at=t + 0.6)
        assert agg.held_out_pods(t + 0.6) == {"p0"}
    boots = agg.held_out.refusals["p0"]
    assert len(boots) == 8 and boots["sidecar"] == (1001.5, 1121.5)
    assert agg.held_out_pods(1301.5) == {"p0"} and agg.held_out_pods(1301.6) == set()  # 3 windows on


def test_a_token_holder_cannot_crowd_the_sidecars_boot_out_of_the_tracking() -> None:
    """The token holder keeps the pod's two places live and has boots of its own refused beside the
    sidecar's, new ones every 100 s, each for 40 s (so none of them is ever held out itself), hoping to
    push the sidecar's boot out of the tracking. With 7 at a time the sidecar's boot stays tracked and is
    held out two windows after its first refusal; with 8 the tracking is full, and the pod is held out at
    once."""
    for cohort, held_from in ((7, 1130.0), (8, 1010.0)):
        agg, held = JobAggregate(), []
        for t in range(1000, 1300, 10):
            send(agg, batch("x", t, 0.0), at=t)
            send(agg, batch("y", t, 0.0), at=t)
            for k in range(cohort if (t - 1000) % 100 < 40 else 0):  # new ids every 100 s, 40 s each
                send(agg, batch(f"evil-{k}-{(t - 1000) // 100}", 1, 0.0), at=t + 0.1)
            if t >= 1010:
                send(agg, batch("sidecar", 1, 0.0), at=t + 0.2)
                held.append((t, agg.held_out_pods(t + 0.2)))
        assert held == [(t, {"p0"} if t >= held_from else set()) for t, _ in held], cohort


def test_a_final_batch_under_the_sidecars_boot_id_does_not_let_a_new_boot_fold_it() -> None:
    """A token holder sends `final` under the running sidecar's boot id, then a batch under a new boot id
    next to its own: the sidecar's boot is still live (it is heard), so the new boot waits (429) and the
    sidecar's later growth counts. A sidecar that did end cleanly is folded once it has been silent for
    the live window, like any other."""
    agg = JobAggregate()
    assert send(agg, batch("a", 1, 7000.0), at=1010).verdict is Verdict.ACCEPTED
    assert send(agg, batch("a", 2, 7000.0, final=True), at=1011).verdict is Verdict.ACCEPTED
    assert send(agg, batch("x", 1, 0.0), at=1012).verdict is Verdict.ACCEPTED
    assert send(agg, batch("y", 1, 0.0), at=1013).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("a", 3, 14_000.0), at=1020).verdict is Verdict.ACCEPTED
    assert agg.energy_j == 28_000.0 and "p0" not in agg.folded
    assert send(agg, batch("x", 2, 0.0), at=1070).verdict is Verdict.ACCEPTED  # the holder keeps x live
    assert send(agg, batch("y", 1, 700.0), at=1079.9).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("y", 1, 700.0), at=1080).verdict is Verdict.ACCEPTED
    assert agg.folded["p0"].boot_ids == ["a"] and agg.energy_j == 28_000.0 + 1400.0


def test_after_an_operator_restart_every_boot_gets_a_full_window() -> None:
    """The operator was away for 190 s: no boot was heard, none is quiet for it."""
    agg = JobAggregate()
    assert send(agg, batch("sidecar", 1, 7000.0), at=1010).verdict is Verdict.ACCEPTED
    assert send(agg, batch("x", 1, 1.0), at=1011).verdict is Verdict.ACCEPTED
    agg = roundtrip(agg)
    assert send(agg, batch("y", 1, 0.0), at=1200).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("sidecar", 2, 140_000.0), at=1210).verdict is Verdict.ACCEPTED
    assert send(agg, batch("y", 1, 0.0), at=1259.9).verdict is Verdict.LIVE_BOOTS
    assert send(agg, batch("y", 1, 0.0), at=1260).verdict is Verdict.ACCEPTED  # x: 60 s since 1200
    assert agg.folded["p0"].boot_ids == ["x"] and ("p0", "sidecar") in agg.sources
    assert agg.energy_j == 280_002.0 and agg.refused == {"live_boots": 2}


def test_a_flood_of_boot_ids_is_refused_counted_and_status_stays_small() -> None:
    agg = JobAggregate()
    verdicts = [send(agg, batch(f"{i:032x}", 1, 0.25), at=1010 + i / 6000).verdict for i in range(6000)]
    assert verdicts[:2] == [Verdict.ACCEPTED] * 2 and set(verdicts[2:]) == {Verdict.LIVE_BOOTS}
    assert len(agg.sources) == 2 and agg.folded == {} and agg.energy_j == 1.0
    assert agg.refused == {"live_boots": 5998} and agg.status_bytes() < 3000


def test_filling_the_pods_ceiling_to_crowd_out_the_sidecar_counts_more_than_the_sidecar() -> None:
    """The ceiling is the pod's, shared by its boots: a token holder claims (under a model the table does
    not know, so 5 kW) just enough that each sidecar batch would cross the sidecar's own ceiling, two
    H100s at twice their 700 W. Every sidecar batch after the first is refused, yet the job counts more
    than the sidecar measured: filling the ceiling takes claiming more than it (twice the board limit)."""
    agg, counted_below_sidecar = JobAggregate(), []
    assert send(agg, batch("sidecar", 1, 7000.0), at=1010).verdict is Verdict.ACCEPTED
    for seq in range(2, 31):
        at = STARTED + 10.0 * seq
        sidecar_j = 1400.0 * (at - STARTED)  # 700 W a GPU since the pod started
        ceiling_j = 2 * 1400.0 * (at - STARTED + CLOCK_SLACK_S)
        filler = batch("filler", seq, (ceiling_j - sidecar_j + 1.0) / 2, name="Mystery GPU")
        assert send(agg, filler, at=at - 0.5).verdict is Verdict.ACCEPTED
        refused = send(agg, batch("sidecar", seq, sidecar_j / 2), at=at)
        assert refused.verdict is Verdict.IMPLAUSIBLE and "2 GPU(s) at 1400 W" in refused.message
        counted_below_sidecar += [agg.energy_j < sidecar_j]
    assert counted_below_sidecar == [False] * 29
    assert agg.sources[("p0", "sidecar")].energy_j == 14_000.0
    assert agg.energy_j == 14_000.0 + 2 * 1400.0 * 305.0 - 1400.0 * 300.0 + 1.0 == 448_001.0


HOSTILE_NAMES = [H100, "Tesla T4", "NVIDIA GB200", "", "Mystery GPU"]
hostile_batches = st.lists(
    st.tuples(
        st.floats(0, 1),  # when, as a fraction of the sidecar's run
        st.sampled_from(["evil-0", "evil-1", "evil-2"]) | st.text("abcdef0123", min_size=1, max_size=8),
        st.integers(0, 50),  # seq
        st.lists(st.floats(0, 1), min_size=0, max_size=3),  # each GPU's claim, as a fraction of `scale`
        st.sampled_from(HOSTILE_NAMES),
        st.booleans(),  # final
    ),
    max_size=40,
)


def _hostile(
    first_at: float, last_at: float, small: bool, item: tuple[float, str, int, list[float], str, bool]
) -> tuple[float, TelemetryBatch]:
    """(arrival, batch) of one hostile batch: after the sidecar's first batch, up to just after its last;
    each GPU claims a fraction of 100 J (`small`) or of the most a GPU may report (5 kW) since the pod
    started."""
    when, boot, seq, claims, name, final = item
    at = first_at + when * (last_at - first_at) + 0.5
    scale = 100.0 if small else MAX_W_PER_GPU * (at - STARTED + CLOCK_SLACK_S)
    gpus = [
        GpuCounter(index=i, uuid=f"GPU-x{i}", name=name, energy_joules=c * scale)
        for i, c in enumerate(claims)
    ]
    return at, telemetry_batch("p0", boot, seq, gpus=gpus, final=final)


def _deliver(
    events: list[tuple[float, TelemetryBatch]], restart_at: int
) -> Iterator[tuple[TelemetryBatch, Applied, JobAggregate]]:
    """Each batch in arrival order, its verdict and the aggregate after it; the operator restarts from
    status before the `restart_at`-th."""
    agg = JobAggregate()
    for i, (at, b) in enumerate(sorted(events, key=lambda e: e[0])):
        if i == restart_at:
            agg = roundtrip(agg)
        yield b, send(agg, b, at), agg


def _sidecar_events(sidecar: list[tuple[float, float]]) -> tuple[list[tuple[float, TelemetryBatch]], float]:
    """(arrival, batch) of a sidecar on two H100s sending after each (gap s, load 0-1 of 700 W), and the
    last arrival."""
    events: list[tuple[float, TelemetryBatch]] = []
    at, per_gpu_j = STARTED, 0.0
    for seq, (gap_s, load) in enumerate(sidecar, start=1):
        at, per_gpu_j = at + gap_s, per_gpu_j + 700.0 * load * gap_s
        events.append((at, batch("sidecar", seq, per_gpu_j)))
    return events, at


@settings(max_examples=200, deadline=None)
@given(
    sidecar=st.lists(st.tuples(st.floats(1, 25), st.floats(0, 1)), min_size=1, max_size=30),
    hostile=hostile_batches,
    small=st.booleans(),
    restart_at=st.integers(-1, 80),
)
def test_no_interleaving_of_hostile_boots_counts_less_than_the_sidecar(
    sidecar: list[tuple[float, float]],
    hostile: list[tuple[float, str, int, list[float], str, bool]],
    small: bool,
    restart_at: int,
) -> None:
    """A sidecar on two H100s sends every 1-25 s, at 0-700 W per GPU. Once it has been heard, batches under
    other boot ids (fresh, repeated, ended, claiming any model, up to the pod's whole ceiling) arrive at
    any time between, and the operator may restart from status anywhere. The sidecar's boot is never
    folded, refused as a duplicate or held back; after each of its batches the job counts at least what
    the sidecar measured; and where the token holder claims little (100 J a GPU), every sidecar batch
    counts in full. (A token holder heard before the sidecar ever was is docs/operations/security.md's
    residual case.)"""
    events, at = _sidecar_events(sidecar)
    events += [_hostile(events[0][0], at, small, item) for item in hostile]
    for b, result, agg in _deliver(events, restart_at):
        if b.boot_id != "sidecar":
            continue
        assert result.verdict in (Verdict.ACCEPTED, Verdict.IMPLAUSIBLE), result
        assert agg.energy_j >= b.energy_joules - 1e-6
        if small:
            assert result.verdict is Verdict.ACCEPTED
            assert agg.sources[("p0", "sidecar")].energy_j == b.energy_joules
    assert ("p0", "sidecar") in agg.sources


@settings(max_examples=200, deadline=None)
@given(
    sidecar=st.lists(st.tuples(st.floats(1, 25), st.floats(0, 1)), min_size=1, max_size=30),
    hostile=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.integers(0, 10**9),
            st.lists(st.floats(0, 1), max_size=3),
            st.booleans(),  # final
            st.sampled_from(["sidecar", "sidecar", "evil-1", "evil-2"]),
        ),
        max_size=30,
    ),
    restart_at=st.integers(-1, 80),
)
def test_no_batch_under_the_sidecars_own_boot_id_counts_less_than_the_sidecar(
    sidecar: list[tuple[float, float]],
    hostile: list[tuple[float, int, list[float], bool, str]],
    restart_at: int,
) -> None:
    """The sidecar's boot id is public (/healthz): batches under it with any seq (up to 1e9), any counters
    up to the most a GPU may report, marked `final` or not, arrive between the sidecar's, mixed with
    batches under new boot ids, and the operator may restart anywhere. After each sidecar batch the job
    counts at least what the sidecar measured."""
    events, at = _sidecar_events(sidecar)
    for when, seq, claims, final, boot in hostile:
        t = events[0][0] + when * (at - events[0][0]) + 0.5  # once the sidecar was heard (see the first)
        scale = MAX_W_PER_GPU * (t - STARTED + CLOCK_SLACK_S)
        gpus = [GpuCounter(index=i, uuid=f"GPU-{i}", energy_joules=c * scale) for i, c in enumerate(claims)]
        hostile_batch = telemetry_batch(
            "p0", boot, seq, gpus=gpus, global_step=seq, steps_seen=seq, final=final
        )
        events.append((t, hostile_batch))
    for b, result, agg in _deliver(events, restart_at):
        if b.gpus and b.gpus[0].name == H100:
            # implausible: new boot ids filled the pod's ceiling, which counts more than the sidecar
            assert result.verdict in (
                Verdict.ACCEPTED,
                Verdict.DUPLICATE,
                Verdict.BACKWARDS,
                Verdict.IMPLAUSIBLE,
            )
            assert agg.energy_j >= b.energy_joules - 1e-6


@settings(max_examples=200, deadline=None)
@given(
    sidecar=st.lists(st.floats(0, 1), min_size=1, max_size=20),
    order=st.randoms(use_true_random=False),
    copies=st.lists(st.integers(1, 3), min_size=20, max_size=20),
)
def test_honest_retries_and_reordering_count_the_final_counters_exactly(
    sidecar: list[float], order: object, copies: list[int]
) -> None:
    """Counted by counters, an honest sidecar's duplicated and reordered batches still count its final
    cumulative counters exactly once."""
    deliveries, per_gpu_j = [], 0.0
    for seq, load in enumerate(sidecar, start=1):
        per_gpu_j += 700.0 * load * 10
        late = [order.uniform(0, 5 if k == 0 else 40) for k in range(copies[seq - 1])]  # type: ignore[attr-defined]
        deliveries += [(STARTED + 10.0 * seq + d, batch("sidecar", seq, per_gpu_j)) for d in late]
    deliveries.sort(key=lambda d: d[0])  # the first copy up to 5 s late, retries up to 40 s: overtaken
    agg = JobAggregate()
    for at, b in deliveries:
        assert send(agg, b, at).verdict in (Verdict.ACCEPTED, Verdict.DUPLICATE)
    assert agg.energy_j == 2 * per_gpu_j
