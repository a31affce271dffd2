"""The `co2_eq_emissions` block of a Hugging Face model card, from plain figures: standard library only.

Two writers share it: `carbontrack report --format model-card` (core.reports.report, from a job's
status) and the Hugging Face callback in the trainer (from the totals the sidecar relays), whose image
may have neither pydantic nor the operator's dependencies; so this module imports nothing but the
standard library.
The Hub's fields (docs/hub/model-cards-co2): `emissions` in grams of CO2e, `source`, `training_type`
(pre-training | fine-tuning), `geographical_location`, `hardware_used`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

TrainingType = Literal["pre-training", "fine-tuning"]
TRAINING_TYPES: tuple[TrainingType, ...] = ("pre-training", "fine-tuning")
SOURCE = "carbontrack"
UNREPORTED_GPU = "GPU (model not reported)"


def gpu_models(gpu_names: Iterable[str]) -> dict[str, int]:
    """GPU model name -> how many GPUs of it, one name per GPU seen (an empty name: not reported)."""
    return dict(Counter(gpu_names))


def hardware_used(models: Mapping[str, int]) -> str:
    """`8 x NVIDIA H100 80GB HBM3`, kinds joined by `, ` (most first); a GPU whose model was not
    reported counts as `GPU (model not reported)`; no GPU seen: `unknown`."""
    counts: Counter[str] = Counter()
    for model, n in models.items():
        if n > 0:
            counts[model or UNREPORTED_GPU] += n
    if not counts:
        return "unknown"
    return ", ".join(f"{n} x {model}" for model, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def co2_eq_emissions(
    emissions_g: float, zone: str, models: Mapping[str, int], training_type: TrainingType
) -> dict[str, Any]:
    """The block's value (the dict under the `co2_eq_emissions` key)."""
    return {
        "emissions": round(emissions_g, 3),
        "source": SOURCE,
        "training_type": training_type,
        "geographical_location": f"grid zone {zone}",
        "hardware_used": hardware_used(models),
    }
