"""The plain JSON inputs of `carbontrack gates check`: metrics and baseline files, and the privacy file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from carbontrack.core.gates.evidence.reading import ReportError, count, fraction, json_object, number, show

PRIVACY_KEYS = (
    "epsilonBudget",
    "noiseMultiplier",
    "sampleRate",
    "steps",
    "delta",
    "accountant",
    "claimedEpsilon",
)


@dataclass(frozen=True)
class PrivacyInput:
    """The DP parameters and budget of a `--privacy` file."""

    epsilon_budget: float
    delta: float = 1e-5
    accountant: Literal["rdp", "pld"] = "rdp"
    steps: int = 1
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    claimed_epsilon: float | None = None


def read_metrics(text: str, source: str) -> dict[str, float]:
    """A metrics or baseline file: one flat JSON object of name: number (as the trainer reports them)."""
    doc = json_object(text, source, 'one JSON object of name: number (e.g. {"eval_accuracy": 0.91})')
    return {
        k: number(v, source, k, "a number (metrics are one flat object of name: number)")
        for k, v in doc.items()
    }


def _positive(doc: dict[str, Any], key: str, source: str) -> float | None:
    if key not in doc:
        return None
    x = number(doc[key], source, key, "a number > 0")
    if x <= 0:
        raise ReportError(source, key, "a number > 0", show(doc[key]))
    return x


def read_privacy(text: str, source: str) -> PrivacyInput:
    """A `--privacy` file: the budget and the DP-SGD parameters to recompute epsilon from."""
    doc = json_object(text, source, "a JSON object with epsilonBudget and the DP-SGD parameters")
    for key in doc:
        if key not in PRIVACY_KEYS:
            raise ReportError(source, key, f"only the keys {', '.join(PRIVACY_KEYS)}", "an unknown key")
    if "epsilonBudget" not in doc:
        raise ReportError(source, "epsilonBudget", "the privacy budget (a number > 0)", "no such key")
    budget = _positive(doc, "epsilonBudget", source)
    assert budget is not None
    delta = _positive(doc, "delta", source) or 1e-5
    if delta >= 1:
        raise ReportError(source, "delta", "a number between 0 and 1", show(doc["delta"]))
    accountant = doc.get("accountant", "rdp")
    if accountant not in ("rdp", "pld"):
        raise ReportError(source, "accountant", "rdp or pld", show(accountant))
    noise, rate = _positive(doc, "noiseMultiplier", source), None
    if "sampleRate" in doc:
        rate = fraction(doc["sampleRate"], source, "sampleRate")
    if (noise is None) != (rate is None):
        raise ReportError(
            source,
            "sampleRate" if rate is None else "noiseMultiplier",
            "noiseMultiplier and sampleRate together",
        )
    steps = count(doc["steps"], source, "steps") if "steps" in doc else 1
    if steps < 1:
        raise ReportError(source, "steps", "a whole number >= 1", show(doc["steps"]))
    return PrivacyInput(
        epsilon_budget=budget,
        delta=delta,
        accountant=accountant,
        steps=steps,
        noise_multiplier=noise,
        sample_rate=rate,
        claimed_epsilon=_positive(doc, "claimedEpsilon", source),
    )
