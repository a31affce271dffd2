"""CarbonTrackedJob objects shared by the unit tests (pydantic) and the integration tests (apiserver).

One table, two judges: every malformed object must be refused by the CRD schema in the real
apiserver *and* by the pydantic models, each with a message naming the offending field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

TEMPLATE: dict[str, Any] = {
    "spec": {
        "containers": [
            {
                "name": "trainer",
                "image": "ghcr.io/example/trainer:1.0",
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            }
        ],
        "restartPolicy": "Never",
    }
}


PROMETHEUS: dict[str, Any] = {"endpoint": "main", "query": "vector(1)"}
"""A metric gate's query against the endpoint the operator lists as `main` (a job names no URL)."""
URL_GATE: dict[str, Any] = {**PROMETHEUS, "address": "http://169.254.169.254"}


def valid_spec(**overrides: Any) -> dict[str, Any]:
    """A complete, valid spec using every section; overrides replace top-level keys."""
    spec: dict[str, Any] = {
        "replicas": 8,
        "template": copy.deepcopy(TEMPLATE),
        "totalSteps": 20000,
        "canary": {"replicas": 1, "minSteps": 200, "stages": [25, 50, 100]},
        "carbon": {"zone": "DE", "intensity": {"provider": "static"}, "pue": 1.2, "budgetKg": 40},
        "gates": {
            "context": "production",
            "quality": {"metric": "eval_accuracy", "minScore": 0.8, "baseline": 0.82, "maxRegression": 0.02},
            "tests": {"passRate": 0.99, "coverage": 0.91, "security": {"critical": 0, "high": 0}},
            "privacy": {"epsilon": 8, "delta": 1e-5, "accountant": "rdp"},
        },
    }
    spec.update(overrides)
    return spec


def merged_spec(
    gates: dict[str, Any] | None = None, carbon: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """valid_spec(**overrides) with `gates` and `carbon` merged into those blocks key by key."""
    spec = valid_spec(**overrides)
    spec["gates"].update(gates or {})
    spec["carbon"].update(carbon or {})
    return spec


def minimal_spec(**fields: Any) -> dict[str, Any]:
    """The smallest valid spec: one worker, 10 steps, TEMPLATE, no gate (allowEmpty); `fields` add or
    replace top-level keys."""
    return {"replicas": 1, "totalSteps": 10, "template": TEMPLATE, "gates": {"allowEmpty": True}, **fields}


def manifest(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """The CarbonTrackedJob `name` with `spec`; `metadata` adds to its metadata (namespace, labels, ...)."""
    return {
        "apiVersion": "carbontrack.io/v1alpha1",
        "kind": "CarbonTrackedJob",
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }


@dataclass(frozen=True)
class Malformed:
    """A spec that must be refused; `field` must appear in the refusal message."""

    name: str
    spec: dict[str, Any]
    field: str


def ungated(context: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid spec with no gate at all: no quality, tests, privacy or carbon budget."""
    spec = valid_spec()
    spec["gates"] = {**({"context": context} if context else {}), **(extra or {})}
    del spec["carbon"]["budgetKg"]
    return spec


def _with(path: str, value: Any, *, drop: bool = False) -> dict[str, Any]:
    spec = valid_spec()
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if drop:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return spec


MALFORMED: list[Malformed] = [
    Malformed("replicas-not-a-number", _with("replicas", "eight"), "spec.replicas"),
    Malformed("replicas-zero", _with("replicas", 0), "spec.replicas"),
    Malformed("canary-larger-than-replicas", _with("canary.replicas", 9), "canary.replicas"),
    Malformed("stages-not-ending-at-100", _with("canary.stages", [25, 50]), "stages"),
    Malformed("stages-decreasing", _with("canary.stages", [50, 25, 100]), "stages"),
    Malformed("epsilon-negative", _with("gates.privacy.epsilon", -1), "spec.gates.privacy.epsilon"),
    Malformed("delta-one", _with("gates.privacy.delta", 1.0), "spec.gates.privacy.delta"),
    Malformed("context-unknown", _with("gates.context", "prod"), "spec.gates.context"),
    Malformed("pue-below-one", _with("carbon.pue", 0.9), "spec.carbon.pue"),
    Malformed("template-missing", _with("template", None, drop=True), "spec.template"),
    Malformed("total-steps-string", _with("totalSteps", "many"), "spec.totalSteps"),
    Malformed(
        "provider-unknown", _with("carbon.intensity.provider", "guess"), "spec.carbon.intensity.provider"
    ),
    # a quality block that judges nothing (only `metric`) once passed silently
    Malformed(
        "quality-without-min-score-or-baseline",
        _with("gates.quality", {"metric": "eval_accuracy", "baselineLatencyMs": 100}),
        "spec.gates.quality.minScore",
    ),
    # production with no gate at all once promoted on "0/0 passed"; gates.allowEmpty says it is meant
    Malformed("production-without-gates", ungated("production"), "spec.gates"),
    Malformed("production-without-gates-by-default", ungated(None), "spec.gates"),
    Malformed(
        "low-findings-negative", _with("gates.tests.security.low", -1), "spec.gates.tests.security.low"
    ),
    Malformed(
        "throughput-decrease-above-one",
        _with("gates.thresholds", {"maxThroughputDecrease": 1.5}),
        "spec.gates.thresholds.maxThroughputDecrease",
    ),
    # the pod template is a real PodTemplateSpec: typos a plain Job refuses are refused here too (they
    # once vanished, and the Job ran without GPUs and without its node selector)
    Malformed(
        "template-resource-typo",
        _with("template.spec.containers", [{"name": "t", "resource": {"limits": {"nvidia.com/gpu": 1}}}]),
        "spec.template.spec.containers[0].resource",
    ),
    Malformed(
        "template-node-selector-typo",
        _with("template.spec.nodeSelecter", {"gpu": "h100"}),
        "spec.template.spec.nodeSelecter",
    ),
    Malformed(
        "template-gpu-count-not-a-quantity",
        _with("template.spec.containers", [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": True}}}]),
        "spec.template.spec.containers[0].resources.limits.nvidia.com/gpu",
    ),
    Malformed("template-container-without-name", _with("template.spec.containers", [{"image": "i"}]), "name"),
    Malformed(
        "template-image-not-a-string", _with("template.spec.containers", [{"name": "t", "image": 5}]), "image"
    ),
    # an approval before a stage the job never enters would never be asked
    Malformed(
        "approval-stage-not-a-canary-stage",
        _with("gates.approval", {"stages": [75]}),
        "spec.gates.approval.stages",
    ),
    Malformed("approval-without-stages", _with("gates.approval", {}), "spec.gates.approval.stages"),
    # energy per metric point is per point of the quality gate's metric: without one it judges nothing
    Malformed(
        "per-point-bound-without-quality",
        {
            **_with("gates.quality", None, drop=True),
            "carbon": {**valid_spec()["carbon"], "maxGramsPerMetricPoint": 50},
        },
        "spec.carbon.maxGramsPerMetricPoint",
    ),
    # a pass bound on the failing side of the fail bound makes no Inconclusive band, only confusion
    Malformed(
        "pass-score-below-min-score",
        _with("gates.quality", {"metric": "eval_accuracy", "minScore": 0.8, "passScore": 0.7}),
        "spec.gates.quality.passScore",
    ),
    Malformed(
        "pass-score-without-min-score",
        _with("gates.quality", {"metric": "eval_accuracy", "baseline": 0.8, "passScore": 0.9}),
        "spec.gates.quality.passScore",
    ),
    # with min above max every measurement fails: the gate could never pass
    Malformed(
        "metric-min-above-max",
        _with("gates.metrics", [{"name": "latency", "prometheus": PROMETHEUS, "min": 10, "max": 1}]),
        "spec.gates.metrics[0].max",
    ),
    # a URL in a job would make the operator fetch whatever its writer names: only endpoints are named
    Malformed(
        "metric-gate-url",
        _with("gates.metrics", [{"name": "latency", "prometheus": URL_GATE, "max": 9}]),
        "spec.gates.metrics[0].prometheus.address",
    ),
    # a duration past a year: a huge one overflows the deadline computed from it
    Malformed(
        "max-delay-beyond-a-year",
        _with("carbon.schedule", {"maxDelay": "99999999999h"}),
        "spec.carbon.schedule.maxDelay",
    ),
    Malformed(
        "window-beyond-a-year", _with("carbon.schedule", {"window": "8761h"}), "spec.carbon.schedule.window"
    ),
    Malformed(
        "pause-after-beyond-a-year",
        _with("carbon.schedule", {"pauseAbove": {"gramsPerKwh": 300, "after": "31536001s"}}),
        "spec.carbon.schedule.pauseAbove.after",
    ),
]
