"""The telemetry writer's records in status: each sidecar boot's source, each folded pod, the evidence.

Sources and folded pods convert both ways, so `state.status.restore` rebuilds the aggregate as
`state.status.telemetry_update` wrote it; lists are cut to the status models' bounds on the way out.
"""

from __future__ import annotations

from carbontrack.api.crd import (
    DPStatus,
    EvalMetric,
    EvidenceStatus,
    FirstMetric,
    FoldedPodStatus,
    SourceStatus,
)
from carbontrack.core.accounting.aggregation import JobAggregate, Source, SourceGpu
from carbontrack.core.accounting.folding import PodFold


def source_status(s: Source) -> SourceStatus:
    return SourceStatus(
        pod=s.pod,
        boot_id=s.boot_id,
        seq=s.seq,
        energy_joules=s.energy_j,
        gpu_energy_joules=[s.gpu_energy_j[i] for i in sorted(s.gpu_energy_j)],
        steps_seen=s.steps_seen,
        global_step=s.global_step,
        last_record_step=s.last_record_step,
        sent_at=s.sent_at,
        method=s.method,
        markers_dropped=s.markers_dropped,
        records_dropped=s.records_dropped,
        final=s.final,
        received_at=s.received_at,
        first_received_at=s.first_received_at,
        window=list(s.window()) if s.records else [],
        uncertainty_joules=s.uncertainty_j,
        shared_energy_joules=s.shared_energy_j,
        method_reason=s.method_reason[:300],
        gpu_uuids=[g.uuid for g in s.gpus][:64],
        gpu_sharing=[g.sharing for g in s.gpus][:64],
        gpu_names=[g.name[:96] for g in s.gpus][:64],
    )


def source_from(s: SourceStatus) -> Source:
    src = Source(
        pod=s.pod,
        boot_id=s.boot_id,
        seq=s.seq,
        energy_j=s.energy_joules,
        gpu_energy_j=dict(enumerate(s.gpu_energy_joules)),
        steps_seen=s.steps_seen,
        global_step=s.global_step,
        last_record_step=s.last_record_step,
        sent_at=s.sent_at,
        received_at=s.received_at,
        first_received_at=s.first_received_at,
        method=s.method,
        markers_dropped=s.markers_dropped,
        records_dropped=s.records_dropped,
        final=s.final,
        uncertainty_j=s.uncertainty_joules,
        shared_energy_j=s.shared_energy_joules,
        method_reason=s.method_reason,
    )
    names = s.gpu_names + [""] * (len(s.gpu_uuids) - len(s.gpu_names))  # a status written before names
    src.gpus = [
        SourceGpu(i, uuid, sharing, s.method, name=name)
        for i, (uuid, sharing, name) in enumerate(zip(s.gpu_uuids, s.gpu_sharing, names, strict=False))
    ]
    if len(s.window) == 3 and s.window[0] > 0:
        src.records.append((int(s.window[0]), s.window[1], s.window[2]))
    return src


def fold_status(f: PodFold) -> FoldedPodStatus:
    return FoldedPodStatus(
        pod=f.pod,
        boots=f.boots,
        boot_ids=list(f.boot_ids),
        energy_joules=f.energy_j,
        uncertainty_joules=f.uncertainty_j,
        shared_energy_joules=f.shared_energy_j,
        global_step=f.global_step,
        steps_seen=f.steps_seen,
        markers_dropped=f.markers_dropped,
        records_dropped=f.records_dropped,
        unmeasured=f.unmeasured,
    )


def fold_from(f: FoldedPodStatus) -> PodFold:
    return PodFold(
        pod=f.pod,
        boots=f.boots,
        boot_ids=list(f.boot_ids),
        energy_j=f.energy_joules,
        uncertainty_j=f.uncertainty_joules,
        shared_energy_j=f.shared_energy_joules,
        global_step=f.global_step,
        steps_seen=f.steps_seen,
        markers_dropped=f.markers_dropped,
        records_dropped=f.records_dropped,
        unmeasured=f.unmeasured,
    )


def evidence_status(agg: JobAggregate) -> EvidenceStatus:
    metrics = [EvalMetric(name=k, step=step, value=v) for k, (step, v) in sorted(agg.evals.items())]
    dp = None
    if agg.dp is not None:
        dp = DPStatus(
            step=agg.dp.step,
            noise_multiplier=agg.dp.noise_multiplier,
            sample_rate=agg.dp.sample_rate,
            delta=agg.dp.delta,
            accountant_epsilon=agg.dp.accountant_epsilon,
        )
    first = [
        FirstMetric(name=k, step=step, value=v, energy_joules=j, emissions_grams=g)
        for k, (step, v, j, g) in sorted(agg.first_evals.items())
    ]
    return EvidenceStatus(metrics=metrics[:64], first_metrics=first[:64], dp=dp)
