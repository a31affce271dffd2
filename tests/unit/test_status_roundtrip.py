"""What the status writer writes, the next operator restores: the plausibility state included."""

from __future__ import annotations

from carbontrack.api.crd import CarbonTrackedJobStatus
from carbontrack.api.wire import GpuCounter, ObjectRef, PodRef, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Receipt, Verdict
from carbontrack.intensity.static import lookup
from carbontrack.state.status import restore, telemetry_update
from tests.cases.batches import telemetry_batch


def _batch(boot: str, seq: int, joules: float) -> TelemetryBatch:
    return telemetry_batch(boot=boot, seq=seq, joules=[joules], sent_at=5e10)


def test_received_times_and_refusals_survive_a_restart() -> None:
    agg, kw = JobAggregate(), {"pue": 1.2, "intensity_g_per_kwh": 300.0}
    receipt = Receipt(received_at=1000.0, pod_started_at=990.0, gpus=1)
    assert agg.apply(_batch("a", 1, 100.0), receipt, **kw).verdict is Verdict.ACCEPTED
    assert agg.apply(_batch("b", 1, 1e9), receipt, **kw).verdict is Verdict.IMPLAUSIBLE
    assert agg.apply(_batch("a", 2, 50.0), receipt, **kw).verdict is Verdict.BACKWARDS
    body = telemetry_update(agg, lookup("DE"), 1000.0)
    status = CarbonTrackedJobStatus.model_validate(body["status"])
    assert status.telemetry is not None
    assert status.telemetry.refused.model_dump() == {
        "backwards": 1, "absurd": 0, "implausible": 1, "too_many_pods": 0, "status_full": 0, "finished": 0,
        "live_boots": 0,
        "too_many_gpus": 0,
    }  # fmt: skip
    again = restore(status)
    assert again.refused == agg.refused
    assert again.sources[("p0", "a")].received_at == 1000.0
    assert again.sources[("p0", "a")].sent_at == 5e10


def test_the_newest_checkpoint_survives_a_restart_and_an_older_report_does_not_replace_it() -> None:
    from carbontrack.api.wire import CheckpointReport

    agg, kw = JobAggregate(), {"pue": 1.2, "intensity_g_per_kwh": 300.0}
    newer = _batch("a", 1, 10.0).model_copy(update={"checkpoint": CheckpointReport(step=40, uri="/c/40")})
    older = _batch("a", 2, 20.0).model_copy(update={"checkpoint": CheckpointReport(step=30, uri="/c/30")})
    assert (
        agg.apply(newer, Receipt(received_at=1000.0, pod_started_at=990.0, gpus=1), **kw).verdict
        is Verdict.ACCEPTED
    )
    assert (
        agg.apply(older, Receipt(received_at=1001.0, pod_started_at=990.0, gpus=1), **kw).verdict
        is Verdict.ACCEPTED
    )
    assert agg.checkpoint == (40, "/c/40", 1000.0)
    again = _batch("a", 3, 30.0).model_copy(update={"checkpoint": CheckpointReport(step=40, uri="/c/40")})
    assert (
        agg.apply(again, Receipt(received_at=1009.0, pod_started_at=990.0, gpus=1), **kw).verdict
        is Verdict.ACCEPTED
    )
    assert agg.checkpoint == (40, "/c/40", 1000.0)  # the same report carried again: arrived at 1000
    status = CarbonTrackedJobStatus.model_validate(telemetry_update(agg, lookup("DE"), 1002.0)["status"])
    assert status.checkpoint is not None and (status.checkpoint.step, status.checkpoint.uri) == (40, "/c/40")
    assert restore(status).checkpoint == (40, "/c/40", 1000.0)


def test_gpu_model_names_reach_status_and_survive_a_restart() -> None:
    agg, kw = JobAggregate(), {"pue": 1.2, "intensity_g_per_kwh": 300.0}
    batch = TelemetryBatch(
        job=ObjectRef(namespace="ml", name="llama"), pod=PodRef(namespace="ml", name="p0"), boot_id="a",
        seq=1, sent_at=5e10, method="simulated",
        gpus=[GpuCounter(index=0, uuid="GPU-0", name="NVIDIA H100 80GB HBM3", energy_joules=10.0),
              GpuCounter(index=1, uuid="GPU-1", energy_joules=10.0)],
    )  # fmt: skip
    agg.apply(batch, Receipt(received_at=1000.0, pod_started_at=990.0, gpus=2), **kw)
    status = CarbonTrackedJobStatus.model_validate(telemetry_update(agg, lookup("DE"), 1000.0)["status"])
    assert [g.name for g in status.gpus] == ["NVIDIA H100 80GB HBM3", ""]
    again = CarbonTrackedJobStatus.model_validate(
        telemetry_update(restore(status), lookup("DE"), 1000.0)["status"]
    )
    assert [g.name for g in again.gpus] == ["NVIDIA H100 80GB HBM3", ""]


def test_status_written_before_gpu_names_restores_with_empty_names() -> None:
    old = {"telemetry": {"sources": [{"pod": "p0", "bootId": "a", "seq": 1, "energyJoules": 5.0,
                                      "gpuUuids": ["GPU-0"], "gpuSharing": ["exclusive"]}]}}  # fmt: skip
    agg = restore(CarbonTrackedJobStatus.model_validate(old))
    assert [g.name for g in agg.sources[("p0", "a")].gpus] == [""]
