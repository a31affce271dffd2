"""What a batch may claim about GPUs: no more than its pod holds, each once, and no more energy than twice
the board power of the model it names (core.accounting.gpu_power), 5 kW a GPU for a model not known."""

from __future__ import annotations

import json

import pytest

from carbontrack.api.wire import GpuCounter, TelemetryBatch, WireError, parse_batch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt, Verdict
from carbontrack.core.accounting.gpu_power import board_power_w, ceiling_w_per_gpu
from tests.cases.batches import telemetry_batch
from tests.cases.bodies import batch_doc

KW = {"pue": 1.2, "intensity_g_per_kwh": 381.0}
H100 = "NVIDIA H100 80GB HBM3"


def batch(boot: str, seq: int, per_gpu_j: list[float], name: str = H100) -> TelemetryBatch:
    gpus = [GpuCounter(index=i, uuid=f"GPU-{i}", name=name, energy_joules=j) for i, j in enumerate(per_gpu_j)]
    return telemetry_batch("p0", boot, seq, gpus=gpus)


def send(agg: JobAggregate, b: TelemetryBatch, at: float, gpus: int = 2) -> Applied:
    """As received at `at` from pod p0, started at 1000 and holding `gpus` GPUs by its resources."""
    return agg.apply(b, Receipt(received_at=at, pod_started_at=1000.0, gpus=gpus), **KW)


def test_a_batch_listing_more_gpus_than_the_pod_holds_is_refused_and_counted() -> None:
    """64 GPUs claimed on a 2-GPU pod were once accepted, with a small energy figure, and status listed 64."""
    agg = JobAggregate()
    refused = send(agg, batch("a", 1, [1.0] * 64), at=1010)
    assert (refused.verdict, refused.message) == (
        Verdict.TOO_MANY_GPUS,
        "the batch lists 64 GPUs; pod p0 holds 2 (its nvidia.com/gpu and MIG resources)",
    )
    assert send(agg, batch("a", 1, [1.0] * 3), at=1011).verdict is Verdict.TOO_MANY_GPUS
    assert send(agg, batch("a", 1, [1.0] * 2), at=1012).verdict is Verdict.ACCEPTED
    # a pod whose resources name no GPU may report one (the allowance is at least 1), not two
    assert send(agg, batch("b", 1, [1.0] * 2), at=1013, gpus=1).verdict is Verdict.TOO_MANY_GPUS
    assert agg.energy_j == 2.0 and agg.refused == {"too_many_gpus": 3}
    assert [g.uuid for _, g in agg.gpus(limit=64)] == ["GPU-0", "GPU-1"]


@pytest.mark.parametrize(
    "gpus",
    [
        [{"index": 0, "energyJoules": 1.0}] * 3,  # the same index three times
        [
            {"index": 0, "uuid": "GPU-a", "energyJoules": 1.0},
            {"index": 1, "uuid": "GPU-a", "energyJoules": 1.0},
        ],
    ],
    ids=["index-three-times", "uuid-twice"],
)
def test_a_gpu_listed_twice_is_malformed(gpus: list[dict[str, object]]) -> None:
    """Refused as the operator reads the body: a 400 `malformed`, before any total is looked at."""
    body = json.dumps(batch_doc("ml", "llama", "p0", gpus=gpus)).encode()
    with pytest.raises(WireError, match="is listed more than once") as refused:
        parse_batch(body)
    assert refused.value.reason == "malformed"


@pytest.mark.parametrize(
    ("name", "watts"),
    [
        ("NVIDIA H100 80GB HBM3", 700.0),
        ("NVIDIA H100 PCIe", 350.0),
        ("NVIDIA H100 NVL", 400.0),
        ("NVIDIA H200", 700.0),
        ("NVIDIA GH200 480GB", 1000.0),
        ("NVIDIA A100-SXM4-80GB", 400.0),
        ("NVIDIA A100-PCIE-40GB", 250.0),
        ("NVIDIA A100 80GB PCIe", 300.0),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 400.0),
        ("NVIDIA A10", 150.0),
        ("NVIDIA L4", 72.0),
        ("NVIDIA L40", 300.0),
        ("NVIDIA L40S", 350.0),
        ("Tesla T4", 70.0),
        ("Tesla V100-SXM2-16GB", 300.0),
        ("Tesla V100S-PCIE-32GB", 250.0),
        ("NVIDIA B200", 1000.0),
        ("NVIDIA GB200", 1200.0),
        ("NVIDIA A10G", None),  # not NVIDIA's datasheet part: the fallback
        ("Simulated GPU", None),
        ("", None),
    ],
)
def test_board_power_by_the_name_nvml_gives(name: str, watts: float | None) -> None:
    assert board_power_w(name) == watts


def test_the_ceiling_per_gpu_is_twice_the_highest_board_limit_and_5_kw_when_any_is_unknown() -> None:
    assert ceiling_w_per_gpu([H100, H100]) == 1400.0
    assert ceiling_w_per_gpu(["NVIDIA GB200", H100]) == 2400.0
    assert ceiling_w_per_gpu(["Tesla T4"]) == 140.0
    assert (
        ceiling_w_per_gpu([H100, ""]) == ceiling_w_per_gpu(["Mystery GPU"]) == ceiling_w_per_gpu([]) == 5000.0
    )


def test_a_new_boot_id_is_held_to_the_named_models_power_not_5_kw() -> None:
    """Two H100s for 100 s (+5 s slack) at 1400 W each: 294 kJ. A new boot at 95 % of the 5 kW ceiling
    (997.5 kJ) was once accepted at 6.8 times what the two GPUs can draw."""
    agg = JobAggregate()
    assert send(agg, batch("sidecar", 1, [7000.0, 7000.0]), at=1010).verdict is Verdict.ACCEPTED
    inject = send(agg, batch("fresh", 1, [498_750.0, 498_750.0]), at=1100)
    assert (inject.verdict, inject.message) == (
        Verdict.IMPLAUSIBLE,
        "pod p0 would total 1.0115e+06 J; 2 GPU(s) at 1400 W for its 100 s since it started allow 294000 J",
    )
    assert send(agg, batch("fresh", 1, [140_000.0, 140_000.0 + 1e-3]), at=1100).verdict is Verdict.IMPLAUSIBLE
    assert send(agg, batch("fresh", 1, [140_000.0, 140_000.0]), at=1100).verdict is Verdict.ACCEPTED
    assert agg.energy_j == 294_000.0


def test_a_model_the_table_does_not_know_keeps_the_5_kw_fallback() -> None:
    agg = JobAggregate()
    unknown = send(agg, batch("fresh", 1, [498_750.0, 498_750.0], name="NVIDIA Z9000"), at=1100)
    assert unknown.verdict is Verdict.ACCEPTED and agg.energy_j == 997_500.0


def test_an_earlier_batch_naming_a_small_gpu_does_not_lower_the_sidecars_ceiling() -> None:
    """Each batch is judged by the model it names: a token holder who names a T4 (140 W a GPU) first
    cannot make the H100 sidecar's truthful batches implausible."""
    agg = JobAggregate()
    assert send(agg, batch("evil", 1, [1.0, 1.0], name="Tesla T4"), at=1001).verdict is Verdict.ACCEPTED
    over_t4 = batch("evil", 2, [30_000.0, 1.0], name="Tesla T4")  # two T4s for 105 s allow 29.4 kJ
    assert send(agg, over_t4, at=1100).verdict is Verdict.IMPLAUSIBLE
    # 700 W a GPU for 100 s: far over what T4s draw, within the H100s' 294 kJ
    assert send(agg, batch("sidecar", 1, [70_000.0, 70_000.0]), at=1100).verdict is Verdict.ACCEPTED
    assert agg.energy_j == 140_002.0
