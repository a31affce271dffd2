"""Differential-privacy accounting: epsilon recomputed from DP-SGD parameters, never taken on trust.

DP-SGD with Poisson sampling at rate q and Gaussian noise multiplier sigma, run for T *global* steps,
is T-fold self-composition of the subsampled Gaussian mechanism. The accountant (RDP by default,
PLD on request; Google's dp-accounting) turns that into epsilon at the given delta. Replicas of a
data-parallel job that report the same global step never multiply T: the step count is the job's
global step, not a sum over pods.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from dp_accounting import dp_event, rdp
from dp_accounting.pld import pld_privacy_accountant

Accountant = Literal["rdp", "pld"]


@lru_cache(maxsize=4096)
def epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: Accountant = "rdp"
) -> float:
    """Epsilon after `steps` global steps; 0 before the first step."""
    if steps <= 0:
        return 0.0
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(noise_multiplier)), steps
    )
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld_privacy_accountant.PLDAccountant()
    acc.compose(event)
    return float(acc.get_epsilon(delta))
