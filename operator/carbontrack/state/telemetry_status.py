"""The telemetry writer's records in status: each sidecar boot's source, each folded pod, the evidence.

Sources and folded pods convert both ways, so `state.status.restore` rebuilds the aggregate as
`state.status.telemetry_update` wrote it; lists are cut to the status models' bounds on the way out.

Sources take one of two forms. One object per source (`SourceStatus`) keeps everything, per-GPU
readings and UUIDs included; it costs about 1.7 KB for an eight-GPU pod, so 512 KiB hold about 300
pods. The compact form (`CompactSources`) keeps, per source, a row of what exact totals need after a
restart: its identity, high-water mark (seq), cumulative energy with its uncertainty and shared part,
steps, arrival times, and an index into a short table of (method, reason): at most about 250 bytes, so
2,000 pods fit. What it leaves out comes back with each source's next batch, because every batch
carries the sidecar's cumulative counters whole: the per-GPU readings and UUIDs (until then the
per-GPU backwards check has nothing to compare against; the source's total still does), the recent
per-step records behind J/step and steps/s, the drop counters and `final`.
"""

from __future__ import annotations

import math

from carbontrack.api.crd import (
    MAX_SOURCE_PROFILES,
    PROFILE_REASON_CHARS,
    CompactSources,
    DPStatus,
    EvalMetric,
    EvidenceStatus,
    FirstMetric,
    FoldedPodStatus,
    SourceProfile,
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


def compact_status(sources: list[Source]) -> CompactSources:
    """Sources (sorted by the caller) as the compact form's columns."""
    profiles: dict[tuple[str, str], int] = {}
    index: list[int] = []
    for s in sources:
        key = (s.method, s.method_reason[:PROFILE_REASON_CHARS])
        if key not in profiles and len(profiles) >= MAX_SOURCE_PROFILES - 4:  # room for the 4 methods
            key = (s.method, "")
        index.append(profiles.setdefault(key, len(profiles)))
    counts = [0] * len(profiles)
    for i in index:
        counts[i] += 1
    return CompactSources(
        pods=[s.pod for s in sources],
        boot_ids=[s.boot_id for s in sources],
        seq=[s.seq for s in sources],
        energy_joules=[s.energy_j for s in sources],
        uncertainty_joules=[s.uncertainty_j for s in sources],
        shared_energy_joules=[s.shared_energy_j for s in sources],
        global_step=[s.global_step for s in sources],
        steps_seen=[s.steps_seen for s in sources],
        received_at=[math.floor(s.received_at) for s in sources],
        first_received_at=[math.floor(s.first_received_at) for s in sources],
        profile=index,
        profiles=[
            SourceProfile(method=m, method_reason=r, sources=n)
            for (m, r), n in zip(profiles, counts, strict=True)
        ],
    )


def written_sources(agg: JobAggregate) -> tuple[list[SourceStatus], CompactSources | None]:
    """The sources one object each while they fit the status budget, else in the compact form: the
    form `JobAggregate.status_bytes` counted."""
    ordered = sorted(agg.sources.values(), key=lambda s: (s.pod, s.boot_id))
    if agg.full_status_bytes() <= agg.limits.status_budget_bytes:
        return [source_status(s) for s in ordered], None
    return [], compact_status(ordered)


def sources_from_compact(c: CompactSources) -> list[Source]:
    """The sources a compact form holds, each as its next batch will find it (see the module docstring)."""
    rows = zip(c.pods, c.boot_ids, c.seq, c.energy_joules, c.uncertainty_joules, strict=True)
    more = zip(c.shared_energy_joules, c.global_step, c.steps_seen, c.received_at, strict=True)
    return [
        Source(
            pod=pod,
            boot_id=boot,
            seq=seq,
            energy_j=energy,
            uncertainty_j=uncertainty,
            shared_energy_j=shared,
            global_step=step,
            steps_seen=seen,
            received_at=float(received),
            first_received_at=float(first),
            method=c.profiles[p].method,
            method_reason=c.profiles[p].method_reason,
        )
        for (pod, boot, seq, energy, uncertainty), (shared, step, seen, received), first, p in zip(
            rows, more, c.first_received_at, c.profile, strict=True
        )
    ]


def fold_status(f: PodFold) -> FoldedPodStatus:
    return FoldedPodStatus(
        pod=f.pod,
        boots=f.boots,
        boot_ids=list(f.marks),
        boot_energies_joules=list(f.marks.values()),
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
    """The fold as written; a status without each id's energy (written before it was kept) gives each the
    pod's whole folded energy, at least what was counted for it, so no growth counts twice."""
    energies = f.boot_energies_joules
    if len(energies) != len(f.boot_ids):
        energies = [f.energy_joules] * len(f.boot_ids)
    return PodFold(
        pod=f.pod,
        boots=f.boots,
        marks=dict(zip(f.boot_ids, energies, strict=True)),
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
