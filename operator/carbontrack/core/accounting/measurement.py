"""Warnings about what a job's energy measures: GPUs whose energy is not the job's alone (MIG, or other
processes on them), and pods whose sidecar measures nothing. Each is said once; the caller keeps what
was said (state.registry)."""

from __future__ import annotations

from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.events import Event


def measurement_events(agg: JobAggregate, announced: set[tuple[str, str, str]]) -> list[Event]:
    """Events for GPUs whose energy is not the job's alone and for pods measuring nothing, each once:
    `announced` (kept by the caller) remembers what was already said."""
    out: list[Event] = []
    shared_rule = (
        "it is shown (status.sharedGpuEnergyJoules) but staging and production carbon gates count it "
        "as unmeasured unless spec.carbon.acceptSharedGpuEnergy is true"
    )
    for pod, g in agg.gpus(limit=1 << 16):
        key: tuple[str, str, str] = (pod, g.uuid, g.sharing)
        if g.sharing == "exclusive" or key in announced:
            continue
        announced.add(key)
        if g.sharing == "mig":
            text = f"GPU {g.uuid} of pod {pod} is in MIG mode: NVML has only the whole board's energy; "
            out.append(Event("Warning", "MigGpuEnergy", text + shared_rule))
        else:
            text = (
                f"GPU {g.uuid} of pod {pod} also runs {g.foreign_processes} process(es) not of this job: "
                "its energy is the whole board's; "
            )
            out.append(Event("Warning", "SharedGpuEnergy", text + shared_rule))
    for s in agg.sources.values():
        key = (s.pod, s.boot_id, "unavailable")
        if s.method == "unavailable" and s.seq >= 0 and key not in announced:
            announced.add(key)
            reason = s.method_reason or "no reason given"
            out.append(Event("Warning", "EnergyUnmeasured", f"pod {s.pod} measures no energy: {reason}"))
    return out
