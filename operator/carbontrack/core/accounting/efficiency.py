"""Energy per quality: what a unit of the quality metric gained cost, in joules and grams CO2e.

The reference is the metric's first report (normally early in the canary), with the job's energy and
emissions at the moment it arrived (core.accounting.aggregation keeps them, status.evidence.firstMetrics
restores them). From there, `energy spent / metric gained`: J and g per unit of the metric in its own scale
(for accuracy in 0..1, divide by 100 for a percentage point). A metric that has not improved has no
finite rate: `gain <= 0` leaves the rates unset, and the gate treats that as over any bound.
"""

from __future__ import annotations

from carbontrack.api.crd import EfficiencyStatus, QualityGate
from carbontrack.core.accounting.aggregation import JobAggregate


def efficiency(quality: QualityGate | None, agg: JobAggregate) -> EfficiencyStatus | None:
    """None without a quality gate, or before its metric has two reports (a reference and a newer one)."""
    if quality is None:
        return None
    first = agg.first_evals.get(quality.metric)
    newest = agg.evals.get(quality.metric)
    if first is None or newest is None:
        return None
    ref_step, ref_value, ref_j, ref_g = first
    step, value = newest
    if step <= ref_step:
        return None
    gain = value - ref_value if quality.higher_is_better else ref_value - value
    energy_j = max(agg.energy_j - ref_j, 0.0)
    grams = max(agg.emissions_g - ref_g, 0.0)
    return EfficiencyStatus(
        metric=quality.metric,
        reference_step=ref_step,
        reference_value=ref_value,
        step=step,
        value=value,
        gain=gain,
        energy_joules=energy_j,
        emissions_grams=grams,
        joules_per_metric_point=energy_j / gain if gain > 0 else None,
        grams_per_metric_point=grams / gain if gain > 0 else None,
    )
