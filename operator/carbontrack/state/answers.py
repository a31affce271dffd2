"""The operator's answer to an accepted batch, and the job totals it carries for the trainer.

The trainer's pod cannot read its CarbonTrackedJob (no RBAC for it), yet the Hugging Face callback writes
the model card's `co2_eq_emissions` next to the model; so the ack carries the job's running totals to
the sidecar, which relays them on the pod-local channel (`client.job_totals()`). They come from the
in-memory aggregate and intensity, no apiserver call; the GPU models are those status.gpus lists, counted
when the status writer builds its patch (once per status interval, not once per batch: at 1000 pods a
job's GPU list is 1000 sources to walk), and at the first answer before any patch.
"""

from __future__ import annotations

from carbontrack.api.crd import MAX_STATUS_GPUS
from carbontrack.api.model_card import gpu_models
from carbontrack.api.wire import JobTotals, TelemetryAck
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.intensity.static import Intensity


def status_gpu_models(agg: JobAggregate) -> dict[str, int]:
    """GPU model -> count over the GPUs status.gpus lists (the newest boot of each pod)."""
    return gpu_models(g.name for _, g in agg.gpus(MAX_STATUS_GPUS))


def job_totals(agg: JobAggregate, intensity: Intensity, gpus: dict[str, int]) -> JobTotals:
    return JobTotals(
        emissions_grams=agg.emissions_g, energy_joules=agg.energy_j, zone=intensity.zone, gpus=gpus
    )


def accepted_body(seq: int, stop: bool, job: JobTotals | None) -> str:
    """The 200 answer. `stop` only when asked and `job` only when given: a sidecar older than a field
    refuses an ack that has it (strict wire models), so it parses the rest as before."""
    ack = TelemetryAck(accepted=True, seq=seq, stop=stop, job=job)
    exclude = {name for name, absent in (("stop", not stop), ("job", job is None)) if absent}
    return ack.model_dump_json(by_alias=True, exclude=exclude or None)
