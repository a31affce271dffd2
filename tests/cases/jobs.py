"""CarbonTrackedJobs the control-plane tests create, as plain objects for `kubectl apply`.

One shape, varied by what each test judges: TEMPLATE's one-GPU trainer, grid zone DE at PUE 1.2, and
a canary of one worker that is promoted straight to full size after 10 steps, with no gate unless the
test names some.
"""

from __future__ import annotations

from typing import Any

from tests.cases.crs import TEMPLATE, manifest


def cluster_spec(
    replicas: int,
    *,
    total_steps: int = 1000,
    canary: dict[str, Any] | None = None,
    carbon: dict[str, Any] | None = None,
    gates: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The shape above with `replicas` workers; `carbon` merges into zone DE at PUE 1.2, `canary` and
    `gates` replace theirs, `fields` add top-level keys (halt, suspend, ...)."""
    return {
        "replicas": replicas,
        "totalSteps": total_steps,
        "template": TEMPLATE,
        "canary": canary if canary is not None else {"replicas": 1, "minSteps": 10, "stages": [100]},
        "carbon": {"zone": "DE", "pue": 1.2, **(carbon or {})},
        "gates": gates if gates is not None else {"allowEmpty": True},
        **fields,
    }


def production_gates(min_score: float = 0.8, **security: int) -> dict[str, Any]:
    """Every gate in the production context: eval_accuracy >= min_score, CI results inline (no critical
    or high findings; `security` adds limits such as medium=1), and a DP-SGD budget of epsilon 8."""
    return {
        "context": "production",
        "quality": {"metric": "eval_accuracy", "minScore": min_score},
        "tests": {"passRate": 0.99, "coverage": 0.93, "security": {"critical": 0, "high": 0, **security}},
        "privacy": {"epsilon": 8, "delta": 1e-5},
    }


def gated(name: str, min_score: float) -> dict[str, Any]:
    """Four workers behind every production gate: a canary of one, then 50 % and 100 % after 10 steps
    each; a 50 kg CO2e budget."""
    return manifest(
        name,
        cluster_spec(
            4,
            total_steps=2000,
            canary={"replicas": 1, "minSteps": 10, "stages": [50, 100]},
            carbon={"budgetKg": 50},
            gates=production_gates(min_score, medium=1),
        ),
    )


def elastic(name: str, replicas: int = 2) -> dict[str, Any]:
    """A job that promotes from one worker to `replicas` once 10 steps are seen (no gate to judge)."""
    return manifest(name, cluster_spec(replicas))
