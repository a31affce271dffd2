"""The privacy accountant's inputs for one judgement, computed off the event loop by the handler."""

from __future__ import annotations

from dataclasses import dataclass

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.gates.privacy import Accountant, epsilon


@dataclass(frozen=True)
class EpsilonQuery:
    """The accountant's inputs: epsilon now (at the global step) and projected to totalSteps.

    Computing it can take close to a second (PLD), so the handler runs `compute` in a thread; results
    are cached by these inputs (core.gates.privacy.epsilon is memoised).
    """

    noise_multiplier: float
    sample_rate: float
    step_now: int
    total_steps: int
    delta: float
    accountant: Accountant

    def compute(self) -> tuple[float, float]:
        """(epsilon now, epsilon at totalSteps)."""
        args = (self.noise_multiplier, self.sample_rate)
        now = epsilon(*args, self.step_now, self.delta, self.accountant)
        total = epsilon(*args, self.total_steps, self.delta, self.accountant)
        return now, total


def epsilon_query(spec: CarbonTrackedJobSpec, agg: JobAggregate) -> EpsilonQuery | None:
    """None when there is no privacy gate or no DP-SGD parameters yet. Steps are global steps."""
    privacy = spec.gates.privacy
    if privacy is None or agg.dp is None:
        return None
    return EpsilonQuery(
        agg.dp.noise_multiplier,
        agg.dp.sample_rate,
        agg.global_step,
        spec.total_steps,
        privacy.delta,
        privacy.accountant,
    )
