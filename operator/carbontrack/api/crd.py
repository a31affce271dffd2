"""The CarbonTrackedJob resource: spec (desired) and status (observed).

These models are the single source of truth: `carbontrack crd` generates the CRD's OpenAPI schema
from them, and a test fails if the committed YAML drifts. Every cross-field rule exists twice on
purpose, once as a CEL rule the apiserver enforces (so `kubectl apply` fails early) and once as a
pydantic validator (so the operator and the CLI refuse the same objects); one table of malformed
objects tests both.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic.alias_generators import to_camel

from carbontrack.api.base import KubeModel
from carbontrack.api.contract import Phase

__all__ = ["Phase"]  # re-exported: the status models' phase type
from carbontrack.api.podtemplate import check_template
from carbontrack.api.wire import Sharing

GROUP = "carbontrack.io"
VERSION = "v1alpha1"
KIND = "CarbonTrackedJob"
PLURAL = "carbontrackedjobs"
SINGULAR = "carbontrackedjob"
SHORT_NAMES = ["ctj"]

Context = Literal["development", "staging", "production"]
_CONTEXTS: tuple[Context, ...] = ("development", "staging", "production")
JsonDict = dict[str, JsonValue]
StagePercent = Annotated[int, Field(ge=1, le=100)]


def _default_of(model: type[KubeModel]) -> JsonDict:
    """Schema default for an omitted sub-object: the model's own defaults, spelled out in full.

    The apiserver checks a default against the CEL rules without applying nested defaults first, so
    `default: {}` would not do; spelling it out keeps one source of truth (the model).
    """
    return {"default": model().model_dump(by_alias=True, exclude_none=True, mode="json")}


def _rules(*rules: JsonDict) -> ConfigDict:
    """Model config carrying CEL rules into the generated schema as x-kubernetes-validations."""
    validations: list[JsonValue] = [*rules]
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"x-kubernetes-validations": validations},
    )


class CanarySpec(KubeModel):
    """How the job proves itself before it may scale: a few replicas first, then stages."""

    model_config = _rules(
        {
            "rule": "self.stages[size(self.stages) - 1] == 100",
            "message": "the last canary stage must be 100 (full scale)",
            "fieldPath": ".stages",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "self.stages.isSorted()",
            "message": "canary stages must be strictly increasing",
            "fieldPath": ".stages",
            "reason": "FieldValueInvalid",
        },
    )

    replicas: int = Field(1, ge=1, le=10000)
    """Workers while on probation."""
    min_steps: int = Field(200, ge=1)
    """Global steps observed in a stage before its gates are judged."""
    stages: list[StagePercent] = Field(
        default_factory=lambda: [25, 50, 100],
        min_length=1,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "set", "default": [25, 50, 100]},
    )
    """Percent of spec.replicas after each passed gate round; strictly increasing, ending at 100."""

    @model_validator(mode="after")
    def _stages_increase_to_full(self) -> CanarySpec:
        if self.stages[-1] != 100:
            raise ValueError("canary.stages: the last canary stage must be 100 (full scale)")
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ValueError("canary.stages: canary stages must be strictly increasing")
        return self


class IntensitySpec(KubeModel):
    """Where the grid's carbon intensity comes from."""

    provider: Literal["static", "electricitymaps", "watttime"] | None = None
    """static: the embedded annual-average table; the others are live APIs with fallback to it.
    Unset: the operator's default (Helm value carbon.provider), itself static unless set."""
    grams_per_kwh: float | None = Field(None, gt=0, le=2000)
    """Fixed override in gCO2e/kWh; wins over any provider."""
    secret_name: str | None = Field(None, min_length=1, max_length=253)
    """Secret in the job's namespace with the provider's key (`apiKey`, or `username`/`password`); only the
    names the operator may read are allowed (Helm value carbon.jobSecretNames, an admission policy)."""


_DURATION = r"^([0-9]+(s|m|h))+$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
MAX_DURATION = "8760h"
"""The longest duration a spec may give: a year, beyond any forecast and well inside what a datetime
(the deadline computed from it) and the apiserver's CEL duration (int64 nanoseconds) can hold."""
MAX_DURATION_S = 8760 * 3600
# Numbers no longer than MAX_DURATION's in each unit (8760h, 525600m, 31536000s): a longer one is above it,
# and within the fields' 32 characters no such sum overflows CEL's duration(), so the rule never errors.
_DURATION_DIGITS = "^([0-9]{1,8}s|[0-9]{1,6}m|[0-9]{1,4}h)+$"
_TOO_LONG = f"must be at most {MAX_DURATION} (365 days)"


def duration_s(text: str) -> float:
    """`90m`, `1h30m`, `24h` -> seconds (the pattern of a duration field admits only these)."""
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
        else:
            total += int(number) * _UNIT_S[ch]
            number = ""
    return float(total)


def _at_most_max_duration(text: str) -> str:
    if not re.fullmatch(_DURATION_DIGITS, text) or duration_s(text) > MAX_DURATION_S:
        raise ValueError(_TOO_LONG)
    return text


_AT_MOST_MAX_DURATION: JsonDict = {
    "rule": f"self.matches('{_DURATION_DIGITS}') && duration(self) <= duration('{MAX_DURATION}')",
    "message": _TOO_LONG,
    "reason": "FieldValueInvalid",
}
Duration = Annotated[
    str,
    Field(
        pattern=_DURATION,
        max_length=32,
        json_schema_extra={"x-kubernetes-validations": [_AT_MOST_MAX_DURATION]},
    ),
    AfterValidator(_at_most_max_duration),
]
"""A duration such as 90m, 1h30m or 24h, at most MAX_DURATION (the CRD and the models refuse alike)."""


class PauseAboveSpec(KubeModel):
    """Opt-in: pause a Running job while the grid is dirty, resume when it is clean again."""

    grams_per_kwh: float = Field(gt=0, le=2000)
    """Pause when the zone's intensity stays above this; resume at or below it."""
    after: Duration = "30m"
    """How long the intensity must stay above the limit before the job pauses."""
    max_pauses: int = Field(3, ge=1, le=100)
    """Never more pauses than this in the job's life; then it runs whatever the grid."""


class ScheduleSpec(KubeModel):
    """Carbon-aware start: wait (phase Deferred, the Job suspended) for a clean grid, at most maxDelay."""

    max_grams_per_kwh: float = Field(200.0, gt=0, le=2000)
    """Start once the zone's intensity is at or below this (gCO2e/kWh)."""
    max_delay: Duration = "24h"
    """Longest wait from the deferral's start (e.g. 24h, 90m); then it starts whatever the grid."""
    window: Duration | None = None
    """Expected run length: a forecast start is judged by its mean intensity over this window."""
    pause_above: PauseAboveSpec | None = None
    """Opt-in: while Running, pause (the Job suspended) when the grid stays dirty; each pause lasts at
    most maxDelay."""


class CarbonSpec(KubeModel):
    """Carbon accounting settings and the optional emissions budget."""

    zone: str | None = Field(None, min_length=1, max_length=64)
    """Grid zone (e.g. DE, US-CAL-CISO); defaults to the node's topology.kubernetes.io/region."""
    intensity: IntensitySpec = Field(
        default_factory=IntensitySpec, json_schema_extra=_default_of(IntensitySpec)
    )
    pue: float = Field(1.2, ge=1.0, le=3.0)
    """Power usage effectiveness of the data centre: facility energy / IT energy."""
    budget_kg: float | None = Field(None, gt=0)
    """Projected total emissions (kg CO2e) must stay under this, or the job is halted."""
    expected_joules_per_step: float | None = Field(None, gt=0)
    """Declared energy of one global step at full size (all workers, IT energy before PUE): lets the Kueue
    budget AdmissionCheck project emissions before any step ran. The gates judge the measured rate."""
    max_grams_per_metric_point: float | None = Field(None, gt=0)
    """Largest allowed gCO2e per unit of the quality metric gained since its first report (its own scale:
    for accuracy in 0..1, 0.01 is one percentage point). Needs gates.quality; judged with the gates."""
    schedule: ScheduleSpec | None = None
    """Carbon-aware start: defer the job until the grid is clean (live providers only)."""
    accept_shared_gpu_energy: bool = False
    """Accept the board energy of MIG or shared GPUs (not this job's alone: an upper bound) as this
    job's energy in staging and production gates; otherwise such energy counts as unmeasured."""


class QualityGate(KubeModel):
    """Model quality of the canary vs a threshold and vs the baseline model.

    A quality gate must judge its metric: `minScore` or `baseline` is required. There is no per-context
    default score, because the metric's scale is the user's (accuracy in 0..1, BLEU in 0..100, a loss
    where lower is better): any default would be a number that passes or fails for no reason.
    """

    model_config = _rules(
        {
            "rule": "has(self.minScore) || has(self.baseline)",
            "message": "a quality gate needs minScore or baseline, else it judges nothing",
            "fieldPath": ".minScore",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.passScore) || has(self.minScore)",
            "message": "passScore needs minScore (the fail bound)",
            "fieldPath": ".passScore",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.passScore) || !has(self.minScore) || (self.higherIsBetter"
            " ? self.passScore >= self.minScore : self.passScore <= self.minScore)",
            "message": "passScore must be on the passing side of minScore (>= when higherIsBetter,"
            " <= otherwise)",
            "fieldPath": ".passScore",
            "reason": "FieldValueInvalid",
        },
    )

    metric: str = Field(min_length=1, max_length=128)
    """Name of the eval metric the trainer reports (e.g. eval_accuracy)."""
    higher_is_better: bool = True
    min_score: float | None = None
    """Absolute floor (or ceiling when higherIsBetter is false) for the metric: worse fails."""
    pass_score: float | None = None
    """Optional: the score that passes with confidence. A score between minScore and passScore is
    Inconclusive: the job pauses (phase Paused) until a person approves or rejects it."""
    baseline: float | None = None
    """The current production model's score on the same metric."""
    max_regression: float | None = Field(None, ge=0)
    """Largest allowed worsening vs baseline, in the metric's units; defaults from the context."""
    baseline_latency_ms: float | None = Field(None, gt=0)
    max_latency_increase: float | None = Field(None, ge=0)
    """Largest allowed relative latency increase vs baseline (0.1 = 10%); defaults from the context."""
    throughput_metric: str = Field("samples_per_second", min_length=1, max_length=128)
    """Eval metric holding the throughput in samples/s (Hugging Face: eval_samples_per_second)."""
    baseline_samples_per_second: float | None = Field(None, gt=0)
    """The baseline's throughput; set it to gate a throughput drop."""
    max_throughput_decrease: float | None = Field(None, ge=0, le=1)
    """Largest allowed relative throughput decrease vs baseline (0.1 = 10%); defaults from the context."""
    memory_metric: str = Field("peak_memory_mb", min_length=1, max_length=128)
    """Eval metric holding the peak accelerator memory in MB."""
    baseline_memory_mb: float | None = Field(None, gt=0)
    """The baseline's peak memory; set it to gate a memory increase."""
    max_memory_increase: float | None = Field(None, ge=0)
    """Largest allowed relative peak-memory increase vs baseline (0.1 = 10%); defaults from the context."""

    @model_validator(mode="after")
    def _judges_something(self) -> QualityGate:
        if self.min_score is None and self.baseline is None:
            raise ValueError(
                "quality.minScore: a quality gate needs minScore or baseline, else it judges nothing"
            )
        if self.pass_score is not None:
            if self.min_score is None:
                raise ValueError(f"quality.passScore: {_PASS_SCORE_NEEDS_MIN}")
            if (
                self.pass_score < self.min_score
            ) == self.higher_is_better and self.pass_score != self.min_score:
                raise ValueError(f"quality.passScore: {_PASS_SCORE_SIDE}")
        return self


_PASS_SCORE_NEEDS_MIN = "passScore needs minScore (the fail bound)"
_PASS_SCORE_SIDE = "passScore must be on the passing side of minScore (>= when higherIsBetter, <= otherwise)"


class SecurityCounts(KubeModel):
    """Findings of a security scan, by severity."""

    critical: int = Field(0, ge=0)
    high: int = Field(0, ge=0)
    medium: int = Field(0, ge=0)
    low: int | None = Field(None, ge=0)
    """Counted against thresholds.maxLow (unlimited unless set); omitted means not reported."""


class TestsGate(KubeModel):
    """Test and security-scan results, inline or from a ConfigMap that CI writes."""

    pass_rate: float | None = Field(None, ge=0, le=1)
    coverage: float | None = Field(None, ge=0, le=1)
    security: SecurityCounts | None = None
    from_config_map: str | None = Field(None, min_length=1, max_length=253)
    """ConfigMap in the job's namespace whose `results.json` holds the same fields."""


class PrivacyGate(KubeModel):
    """Differential-privacy budget; epsilon is recomputed by the operator, never taken on trust."""

    epsilon: float = Field(gt=0)
    """Largest allowed epsilon at totalSteps."""
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "pld"] = "rdp"


class Thresholds(KubeModel):
    """Per-field overrides of the context profile's thresholds."""

    min_pass_rate: float | None = Field(None, ge=0, le=1)
    min_coverage: float | None = Field(None, ge=0, le=1)
    max_critical: int | None = Field(None, ge=0)
    max_high: int | None = Field(None, ge=0)
    max_medium: int | None = Field(None, ge=0)
    max_low: int | None = Field(None, ge=0)
    """Low findings allowed; unlimited in every context unless set."""
    max_regression: float | None = Field(None, ge=0)
    max_latency_increase: float | None = Field(None, ge=0)
    max_throughput_decrease: float | None = Field(None, ge=0, le=1)
    max_memory_increase: float | None = Field(None, ge=0)


_NO_ADDRESS = (
    "prometheus.address is not accepted: the operator queries only the Prometheus endpoints the cluster "
    "admin lists (chart value prometheus.endpoints); name one with prometheus.endpoint"
)


class PrometheusProvider(KubeModel):
    """An instant query (`GET URL/api/v1/query`) against one of the Prometheus endpoints the cluster admin
    lists for the operator (chart value prometheus.endpoints): a job names an endpoint, never a URL, so
    the operator contacts only the servers its admin chose, whoever may write a CarbonTrackedJob."""

    model_config = _rules(
        {
            "rule": "!has(self.address)",
            "message": _NO_ADDRESS,
            "fieldPath": ".address",
            "reason": "FieldValueForbidden",
        },
    )

    endpoint: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Name of one of the operator's Prometheus endpoints, e.g. main (ask your cluster admin, or see the
    chart's prometheus.endpoints)."""
    address: str | None = Field(None, max_length=512)
    """Refused: a URL in a job would let whoever writes one make the operator fetch it. Name an endpoint."""
    query: str = Field(min_length=1, max_length=4096)
    """PromQL that returns one sample: a scalar or a one-series vector (use sum/avg/max to get one)."""
    timeout_seconds: float = Field(5.0, gt=0, le=30)
    """A query that does not answer in time is an error (not a failure)."""

    @model_validator(mode="before")
    @classmethod
    def _no_address(cls, data: Any) -> Any:
        """A URL is refused before anything else, so the message says what to write instead."""
        if isinstance(data, dict) and data.get("address") is not None:
            raise ValueError(f"metrics.prometheus.address: {_NO_ADDRESS}")
        return data


_MIN_ABOVE_MAX = "max must be >= min (with min above max every measurement fails)"


class MetricGate(KubeModel):
    """A gate on a measured metric, as a progressive-delivery analysis does it: `count` measurements per
    stage, one per judgement round once `initialDelaySteps` of the stage have run, judged by bounds.

    A value below `min` or above `max` is a failed measurement; between `min` and `inconclusiveBelow`
    (or `inconclusiveAbove` and `max`) an Inconclusive one. A provider that cannot be read is an error:
    more than `consecutiveErrorLimit` errors in a row make the gate Error (the job halts), fewer never
    fail it. More than `failureLimit` failed measurements in a stage fail the gate.
    """

    model_config = _rules(
        {
            "rule": "has(self.min) || has(self.max)",
            "message": "a metric gate needs min or max, else it judges nothing",
            "fieldPath": ".min",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
            "message": _MIN_ABOVE_MAX,
            "fieldPath": ".max",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "!has(self.inconclusiveBelow) || has(self.min) && self.inconclusiveBelow >= self.min",
            "message": "inconclusiveBelow needs min and must be >= min",
            "fieldPath": ".inconclusiveBelow",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "!has(self.inconclusiveAbove) || has(self.max) && self.inconclusiveAbove <= self.max",
            "message": "inconclusiveAbove needs max and must be <= max",
            "fieldPath": ".inconclusiveAbove",
            "reason": "FieldValueInvalid",
        },
    )

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Shown as the gate `metric.NAME`."""
    prometheus: PrometheusProvider
    min: float | None = None
    max: float | None = None
    inconclusive_below: float | None = None
    inconclusive_above: float | None = None
    failure_limit: int = Field(0, ge=0, le=10)
    """Failed measurements allowed in a stage; one more fails the gate."""
    consecutive_error_limit: int = Field(4, ge=0, le=10)
    """Errors in a row allowed (unreachable provider, no sample); one more makes the gate Error."""
    initial_delay_steps: int = Field(0, ge=0)
    """Global steps into a stage before its first measurement."""
    count: int = Field(1, ge=1, le=10)
    """Measurements (not counting errors) per stage before the gate is judged."""

    @model_validator(mode="after")
    def _bounds(self) -> MetricGate:
        if self.min is None and self.max is None:
            raise ValueError("metrics.min: a metric gate needs min or max, else it judges nothing")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metrics.max: {_MIN_ABOVE_MAX}")
        if self.inconclusive_below is not None and (self.min is None or self.inconclusive_below < self.min):
            raise ValueError("metrics.inconclusiveBelow: inconclusiveBelow needs min and must be >= min")
        if self.inconclusive_above is not None and (self.max is None or self.inconclusive_above > self.max):
            raise ValueError("metrics.inconclusiveAbove: inconclusiveAbove needs max and must be <= max")
        return self


class ApprovalSpec(KubeModel):
    """A person's approval before the named stages, even when every gate passes."""

    stages: list[StagePercent] = Field(
        min_length=1, max_length=10, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Percents of spec.canary.stages: the job pauses (phase Paused) before scaling to each of them
    until `carbontrack approve` (or the carbontrack.io/approve annotation); e.g. [100]."""
    required_for: list[Context] = Field(
        default_factory=lambda: list(_CONTEXTS),
        min_length=1,
        max_length=3,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "default": ["development", "staging", "production"],
        },
    )
    """Contexts in which the approval is asked (default: every context); e.g. [production]."""
    distinct_from: Literal["creator"] | None = None
    """creator: the job's creator (its carbontrack.io/created-by annotation, which the chart's admission
    policy lets only the creating user write) may not approve it; a rejection is still theirs to make."""


class GatesSpec(KubeModel):
    """What must hold before each scale-up."""

    context: Context = "production"
    """Threshold profile; production fails closed on missing data, development warns."""
    thresholds: Thresholds | None = None
    quality: QualityGate | None = None
    tests: TestsGate | None = None
    privacy: PrivacyGate | None = None
    metrics: list[MetricGate] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Gates on measured metrics (a Prometheus query), judged in every stage."""
    approval: ApprovalSpec | None = None
    suspend_when_paused: bool = False
    """Suspend the Job while it waits in phase Paused; by default it keeps training at its stage."""
    allow_empty: bool = False
    """Run a production job with no gate at all (no quality, tests, privacy or carbon.budgetKg).
    Without it such a job is refused: a forgotten gates block must not promote on "0/0 passed"."""


_NO_GATES = (
    "a production job needs a gate (quality, tests, privacy, metrics or carbon.budgetKg)"
    " or gates.allowEmpty: true"
)


_APPROVAL_STAGES = "every gates.approval stage must be one of canary.stages"
_PER_POINT_NEEDS_QUALITY = "carbon.maxGramsPerMetricPoint needs gates.quality (the metric it is per point of)"


class DistributedSpec(KubeModel):
    """The wiring that lets the job's workers train together (torchrun / torch.distributed)."""

    enabled: bool = True
    """A headless Service, the pods' subdomain and the torch elastic env (PET_*, MASTER_ADDR, RANK,
    WORLD_SIZE); false for a job that brings its own rendezvous."""


class HaltSpec(KubeModel):
    """How a halt stops the workers: it asks the trainers to checkpoint before the Job is suspended."""

    grace_period_seconds: int = Field(300, ge=0, le=86400)
    """How long the trainers have to save after the stop request before the Job is suspended anyway;
    also the pods' terminationGracePeriodSeconds (the kubelet's SIGTERM-to-SIGKILL time)."""


class CarbonTrackedJobSpec(KubeModel):
    """Desired state of a carbon-tracked, gated training job."""

    model_config = _rules(
        {
            "rule": "self.canary.replicas <= self.replicas",
            "message": "canary.replicas must not exceed replicas",
            "fieldPath": ".canary.replicas",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "self.gates.context != 'production' || self.gates.allowEmpty || has(self.gates.quality)"
            " || has(self.gates.tests) || has(self.gates.privacy) || has(self.carbon.budgetKg)"
            " || has(self.gates.metrics) && size(self.gates.metrics) > 0",
            "message": _NO_GATES,
            "fieldPath": ".gates",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.carbon.maxGramsPerMetricPoint) || has(self.gates.quality)",
            "message": _PER_POINT_NEEDS_QUALITY,
            "fieldPath": ".carbon.maxGramsPerMetricPoint",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.gates.approval) || self.gates.approval.stages.all(s, s in self.canary.stages)",
            "message": _APPROVAL_STAGES,
            "fieldPath": ".gates.approval.stages",
            "reason": "FieldValueInvalid",
        },
    )

    replicas: int = Field(ge=1, le=10000)
    """Workers at full scale."""
    template: dict[str, Any] = Field(
        # the CRD carries the full PodTemplateSpec schema of the pinned Kubernetes instead (crdgen
        # inserts api/podtemplatespec.json), so the apiserver refuses a typo in it before we see it
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    """A PodTemplateSpec (Kubernetes v1.36) with the training container(s); the operator injects its sidecar,
    env and token volume. Validated by the apiserver like a Job's template: an unknown field is refused."""

    @field_validator("template")
    @classmethod
    def _template_is_a_pod_template(cls, template: dict[str, Any]) -> dict[str, Any]:
        check_template(template)
        return template

    total_steps: int = Field(ge=1)
    """Planned global steps; used for energy, emissions and epsilon projections."""
    canary: CanarySpec = Field(default_factory=CanarySpec, json_schema_extra=_default_of(CanarySpec))
    carbon: CarbonSpec = Field(default_factory=CarbonSpec, json_schema_extra=_default_of(CarbonSpec))
    gates: GatesSpec = Field(default_factory=GatesSpec, json_schema_extra=_default_of(GatesSpec))
    suspend: bool = False
    """Stop the job without deleting it; set back to false to resume."""
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec, json_schema_extra=_default_of(DistributedSpec)
    )
    halt: HaltSpec = Field(default_factory=HaltSpec, json_schema_extra=_default_of(HaltSpec))

    @model_validator(mode="after")
    def _canary_fits(self) -> CarbonTrackedJobSpec:
        if self.canary.replicas > self.replicas:
            raise ValueError("canary.replicas: canary.replicas must not exceed replicas")
        g = self.gates
        gated = bool(g.metrics) or any(
            x is not None for x in (g.quality, g.tests, g.privacy, self.carbon.budget_kg)
        )
        if g.context == "production" and not g.allow_empty and not gated:
            raise ValueError(f"gates: {_NO_GATES}")
        if g.approval is not None and not set(g.approval.stages) <= set(self.canary.stages):
            raise ValueError(f"gates.approval.stages: {_APPROVAL_STAGES}")
        if self.carbon.max_grams_per_metric_point is not None and g.quality is None:
            raise ValueError(f"carbon.maxGramsPerMetricPoint: {_PER_POINT_NEEDS_QUALITY}")
        return self


class Condition(KubeModel):
    """A Kubernetes-style condition (API conventions)."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024)
    """CamelCase, machine-readable."""
    message: str = Field("", max_length=32768)
    """A sentence a person can act on."""
    last_transition_time: datetime
    observed_generation: int | None = Field(None, ge=0)


GateVerdict = Literal["Passed", "Failed", "Inconclusive", "Error"]


class GateResult(KubeModel):
    """One gate's verdict, with the numbers behind it. `passed` is `verdict == Passed`."""

    name: str
    passed: bool
    verdict: GateVerdict | None = None
    """Passed | Failed | Inconclusive (between a pass and a fail bound: a person decides) | Error
    (the evidence could not be read). Omitted: Passed or Failed, from `passed`."""
    observed: float | None = None
    threshold: float | None = None
    message: str = ""
    warning: bool = False
    """Passed only because the context allows missing data (development)."""

    @model_validator(mode="after")
    def _verdict_matches(self) -> GateResult:
        if self.verdict is None:
            self.verdict = "Passed" if self.passed else "Failed"
        elif self.passed != (self.verdict == "Passed"):
            raise ValueError(f"gate {self.name}: passed must equal verdict == Passed")
        return self


class Projection(KubeModel):
    """Totals projected to spec.totalSteps from the recent rate."""

    energy_joules: float | None = None
    emissions_grams: float | None = None
    epsilon: float | None = None


class IntensityStatus(KubeModel):
    """The grid intensity in force and where the figure came from."""

    grams_per_kwh: float
    zone: str
    source: str
    """e.g. static:ember-2023, electricitymaps, override."""
    updated_at: datetime | None = None


class SourceStatus(KubeModel):
    """High-water mark of one sidecar boot, kept in status so a restarted operator resumes exactly."""

    pod: str
    boot_id: str
    seq: int = Field(ge=0)
    energy_joules: float = Field(ge=0)
    gpu_energy_joules: list[float] = Field(default_factory=list)
    """Cumulative joules per GPU index, for the counters-went-backwards check."""
    steps_seen: int = Field(0, ge=0)
    global_step: int = Field(0, ge=0)
    last_record_step: int = -1
    sent_at: float = 0
    """The sidecar's clock: shown, never trusted."""
    received_at: float = 0
    """The operator's clock when the newest accepted batch arrived (the plausibility checks use it)."""
    first_received_at: float = 0
    """The operator's clock when its first batch arrived: a pod's oldest boot folds first."""
    method: str = "unavailable"
    markers_dropped: int = Field(0, ge=0)
    records_dropped: int = Field(0, ge=0)
    final: bool = False
    window: list[float] = Field(default_factory=list, max_length=3)
    """Sums over the recent per-step records: [steps, joules, seconds]. Restored as one record, so J/step
    and steps/s (hence the carbon projection) are the same after a restart as before it."""
    uncertainty_joules: float = Field(0, ge=0)
    """Stated bound of this source's energy (its method's uncertainty)."""
    shared_energy_joules: float = Field(0, ge=0)
    """Board energy of its MIG or shared GPUs, included in energyJoules."""
    method_reason: str = Field("", max_length=300)
    """Why the method is what it is (always set for unavailable)."""
    gpu_uuids: list[str] = Field(default_factory=list, max_length=64)
    gpu_sharing: list[Sharing] = Field(default_factory=list, max_length=64)
    """Per GPU index, as gpuEnergyJoules: NVML UUID and exclusive | shared | mig."""
    gpu_names: list[str] = Field(default_factory=list, max_length=64)
    """Per GPU index: the product name NVML gives (empty when the sidecar did not send it)."""


MAX_SOURCE_PROFILES = 16
"""Distinct (method, reason) pairs the compact form lists; past them a source keeps its method alone."""
PROFILE_REASON_CHARS = 60


class SourceProfile(KubeModel):
    """What many sources of a big job share: how they measure, and how many do."""

    method: str = "unavailable"
    method_reason: str = Field("", max_length=PROFILE_REASON_CHARS)
    """The start of the reason (the EnergyUnmeasured event carries it whole)."""
    sources: int = Field(0, ge=0)
    """Sources with this profile."""


class CompactSources(KubeModel):
    """Every live source of a job too big for one object per source: one column per field, entry i of
    each column is source i, sorted by pod and boot id. It keeps what a restarted operator needs for
    exact totals (each source's high-water mark and cumulative energy), not the per-GPU readings."""

    pods: list[str] = Field(default_factory=list)
    boot_ids: list[str] = Field(default_factory=list)
    seq: list[int] = Field(default_factory=list)
    energy_joules: list[float] = Field(default_factory=list)
    """Cumulative joules since the boot: the source's share of every total."""
    uncertainty_joules: list[float] = Field(default_factory=list)
    shared_energy_joules: list[float] = Field(default_factory=list)
    global_step: list[int] = Field(default_factory=list)
    steps_seen: list[int] = Field(default_factory=list)
    received_at: list[int] = Field(default_factory=list)
    """The operator's clock when the newest batch arrived, in whole seconds (rounded down)."""
    first_received_at: list[int] = Field(default_factory=list)
    profile: list[int] = Field(default_factory=list)
    """Index into profiles."""
    profiles: list[SourceProfile] = Field(default_factory=list, max_length=MAX_SOURCE_PROFILES)

    @model_validator(mode="after")
    def _columns_match(self) -> CompactSources:
        columns = (self.boot_ids, self.seq, self.energy_joules, self.uncertainty_joules)
        more = (self.shared_energy_joules, self.global_step, self.steps_seen, self.received_at)
        if any(len(c) != len(self.pods) for c in (*columns, *more, self.first_received_at, self.profile)):
            raise ValueError("every column has one entry per source")
        if any(not 0 <= i < len(self.profiles) for i in self.profile):
            raise ValueError("a profile index names no profile")
        return self


class RefusedCounts(KubeModel):
    """Telemetry batches refused for what they claimed, by reason (the 422s and 429s of the table)."""

    backwards: int = Field(0, ge=0)
    """A cumulative counter or the step went down within one sidecar boot."""
    absurd: int = Field(0, ge=0)
    """Growth since the source's first batch arrived beyond the pod's GPUs x 5 kW."""
    implausible: int = Field(0, ge=0)
    """A pod's sources together beyond its GPUs x 5 kW since the pod started (a new boot id included)."""
    too_many_pods: int = Field(0, ge=0)
    """A batch from a new pod when status already holds the most pods it keeps (2000): not counted."""
    status_full: int = Field(0, ge=0)
    """A batch that would add a source past the status size budget (512 KiB of sources): not counted."""
    finished: int = Field(0, ge=0)
    """A batch that arrived after the job finished (Succeeded, Failed, or Halted with its workers
    stopped) and its final-flush grace period: 409 finished, not counted, so the totals stay final."""
    live_boots: int = Field(0, ge=0)
    """A new boot id while its pod's two sidecar boots are live (a batch within 60 s): counted later."""
    too_many_gpus: int = Field(0, ge=0)
    """A batch listing more GPUs than its pod's resources give it."""


MAX_FOLDED_IDS = 64


class FoldedPodStatus(KubeModel):
    """The finished sidecar boots of one pod, summed, so status stays bounded however often it restarts.

    A quiet boot folds when a new boot of its pod needs its place; its energy stays in every total."""

    pod: str
    boots: int = Field(0, ge=0)
    """Boots folded in, ever."""
    boot_ids: list[str] = Field(default_factory=list, max_length=MAX_FOLDED_IDS)
    """The newest folded boot ids, oldest first (16, more while older ones are still sent to): a batch
    under one of them that adds no energy to it is a duplicate (409)."""
    boot_energies_joules: list[float] = Field(default_factory=list, max_length=MAX_FOLDED_IDS)
    """The cumulative energy counted for each of bootIds, in the same order: a batch under one of them
    whose counter passes it adds the difference (a running sidecar's boot folded while its batches sat
    below a claim made under its boot id)."""
    energy_joules: float = Field(0, ge=0)
    uncertainty_joules: float = Field(0, ge=0)
    shared_energy_joules: float = Field(0, ge=0)
    global_step: int = Field(0, ge=0)
    steps_seen: int = Field(0, ge=0)
    markers_dropped: int = Field(0, ge=0)
    records_dropped: int = Field(0, ge=0)
    unmeasured: int = Field(0, ge=0)
    """Folded boots that measured no energy (method unavailable)."""


MAX_STATUS_GPUS = 64


class GpuStatus(KubeModel):
    """One GPU a pod of the job is measured on, and whether its energy is the job's alone."""

    uuid: str = Field(max_length=96)
    index: int = Field(ge=0)
    """Position among the pod's GPUs."""
    pod: str
    sharing: Sharing
    """exclusive; mig (NVML has only the whole board's energy); shared (other processes use it)."""
    method: str
    """energy-counter | power-integration | simulated | unavailable."""
    foreign_processes: int = Field(0, ge=0)
    name: str = Field("", max_length=96)
    """Product name as NVML gives it (e.g. NVIDIA H100 80GB HBM3): what a report calls the hardware."""


MAX_UNMEASURED_PODS = 32


class UnmeasuredPod(KubeModel):
    """A running pod of the job from which no telemetry batch was accepted within the grace period."""

    pod: str
    started_at: datetime
    """When its containers (the sidecar among them) were initialized: the grace period counts from it."""


class TelemetryStatus(KubeModel):
    """Where the totals come from: one entry per live (pod, sidecar boot), and per pod its folded boots."""

    sources: list[SourceStatus] = Field(default_factory=list)
    """One object per source while they fit the status budget; empty when `compact` holds them."""
    compact: CompactSources | None = None
    """Every source as columns, when one object per source would pass the status budget (512 KiB): a job
    of 2,000 eight-GPU pods fits. status.gpus still lists 64 GPUs; profiles count sources by method."""
    folded: list[FoldedPodStatus] = Field(default_factory=list)
    """Per pod, the boots that ended (at most two boots per pod stay in sources; only a quiet one folds)."""
    refused: RefusedCounts = Field(default_factory=RefusedCounts)
    last_batch_at: datetime | None = None
    joules_per_step: float | None = None
    steps_per_second: float | None = None
    unmeasured_pods: list[UnmeasuredPod] = Field(default_factory=list, max_length=MAX_UNMEASURED_PODS)
    """Running pods with no batch accepted within two status intervals plus start-up, or whose sidecar boot
    has been refused a place for two live windows, oldest first, at most 32 (unmeasuredPodCount counts
    them all): the job's energy is a lower bound while any is listed, and staging and production carbon
    gates fail closed on it."""
    unmeasured_pod_count: int = Field(0, ge=0)
    """Every unmeasured pod, listed in unmeasuredPods or not."""


class EvalMetric(KubeModel):
    """The newest value the trainer reported for one eval metric, and at which global step."""

    name: str = Field(min_length=1, max_length=128)
    step: int = Field(ge=0)
    value: float


class DPStatus(KubeModel):
    """The newest DP-SGD parameters the trainer reported: the accountant's inputs."""

    step: int = Field(ge=0)
    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    delta: float = Field(gt=0, lt=1)
    accountant_epsilon: float | None = Field(None, ge=0)
    """What the job itself claims; shown beside the recomputed epsilon, never trusted alone."""


class FirstMetric(KubeModel):
    """The first report of an eval metric and the job's totals when it arrived: where gains count from."""

    name: str = Field(min_length=1, max_length=128)
    step: int = Field(ge=0)
    value: float
    energy_joules: float = Field(ge=0)
    emissions_grams: float = Field(ge=0)


class EvidenceStatus(KubeModel):
    """What the trainers reported for the gates, kept so a restarted operator judges the same evidence.

    The sidecar forgets a report once the operator acknowledged it, so this is the only copy.
    """

    metrics: list[EvalMetric] = Field(default_factory=list, max_length=64)
    first_metrics: list[FirstMetric] = Field(default_factory=list, max_length=64)
    """Each metric's first report, with the energy and emissions at that moment."""
    dp: DPStatus | None = None


class TestsEvidence(KubeModel):
    """The test and security evidence the last judgement used, and where it came from."""

    pass_rate: float | None = None
    coverage: float | None = None
    critical: int | None = None
    high: int | None = None
    medium: int | None = None
    low: int | None = None
    source: str = ""
    """spec, or configmap/NAME; a ConfigMap that cannot be read falls back to the last evidence."""


class EfficiencyStatus(KubeModel):
    """Energy and emissions per unit of the quality metric gained since its first report.

    `gain` is in the metric's own units, positive when it improved (lower is better: a fall). The rates
    are absent until the metric has gained (no gain: no finite rate; the gate says so)."""

    metric: str
    reference_step: int = Field(ge=0)
    reference_value: float
    step: int = Field(ge=0)
    value: float
    gain: float
    energy_joules: float = Field(ge=0)
    """GPU energy since the reference report."""
    emissions_grams: float = Field(ge=0)
    """Emissions (PUE included) since the reference report."""
    joules_per_metric_point: float | None = None
    grams_per_metric_point: float | None = None


class ScheduleStatus(KubeModel):
    """The carbon-aware start: why the job waits (or why it started), and what waiting saved."""

    deferred_since: datetime | None = None
    """When the deferral began (the planned start); the deadline counts from it across restarts."""
    deadline: datetime | None = None
    """deferredSince + maxDelay: it starts then at the latest."""
    start_after: datetime | None = None
    """The cleaner start the forecast names, while waiting for it."""
    reason: str = ""
    message: str = ""
    summary: str = ""
    """Why it waits and until when (kubectl get), or why it started."""
    planned_grams_per_kwh: float | None = None
    """Intensity at the planned start (when the deferral began)."""
    started_at: datetime | None = None
    start_grams_per_kwh: float | None = None
    """Intensity when it actually started."""
    deferred_seconds: float = Field(0, ge=0)
    emissions_avoided_grams_estimate: float | None = None
    """Measured energy x PUE x (planned - actual start intensity): an estimate, negative if waiting cost."""
    above_since: datetime | None = None
    """While Running with pauseAbove: since when the intensity has been above its limit."""
    pauses: int = Field(0, ge=0)
    """Pauses for a dirty grid so far (at most pauseAbove.maxPauses)."""
    paused_from: str | None = None
    """The phase a dirty-grid pause interrupted (Running); set while paused (phase Deferred)."""
    paused_at: datetime | None = None
    paused_seconds: float = Field(0, ge=0)
    """Time spent in dirty-grid pauses, all of them."""


class PromotionStatus(KubeModel):
    """Where the promotion state machine is, so a restarted operator continues from there."""

    stage: int = Field(-1, ge=-1)
    """-1 while on the canary; otherwise the index into spec.canary.stages."""
    stage_start_step: int = Field(0, ge=0)
    halted_from: str | None = None
    halted_generation: int | None = None
    paused_from: str | None = None
    """The phase a pause interrupted (Canary or Promoting)."""
    pause_reason: Literal["Inconclusive", "ApprovalRequired"] | None = None
    consumed_decision: str | None = Field(None, max_length=64)
    """Hash of the last approve/reject annotation the judgement acted on: each is used once."""


class Measurement(KubeModel):
    """One measurement of a metric gate."""

    stage: int = Field(ge=-1)
    step: int = Field(ge=0)
    """The global step it was taken at."""
    at: datetime
    verdict: GateVerdict
    value: float | None = None
    message: str = Field("", max_length=512)


class MetricHistory(KubeModel):
    """One metric gate's counts in the current stage (what it is judged on) and its last 10 measurements
    (what a person reads; a bounded window cannot be counted on once errors interleave)."""

    name: str
    stage: int = Field(-1, ge=-1)
    stage_start_step: int = Field(0, ge=0)
    """With `stage`, which stage the counts are for: a resumed stage starts counting afresh."""
    measured: int = Field(0, ge=0)
    """Measurements with a value (errors not counted)."""
    failed: int = Field(0, ge=0)
    inconclusive: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    consecutive_errors: int = Field(0, ge=0)
    measurements: list[Measurement] = Field(default_factory=list, max_length=10)


class DecisionRecord(KubeModel):
    """A person's approval or rejection, as the judgement recorded it."""

    decision: Literal["Approved", "Rejected", "Ignored", "Refused"]
    """Ignored: the annotation came while the job was not Paused (it is consumed, not kept for later).
    Refused: an approval that gates.approval.distinctFrom rules out (the creator, or no recorded user)."""
    by: str = Field(max_length=512)
    """Who: the user `carbontrack approve|reject` read from a SelfSubjectReview, or, for a bare
    annotation, the field manager that set it (the apiserver does not record the user)."""
    reason: str = Field("", max_length=1024)
    at: datetime
    stage: str = Field(max_length=32)
    """canary, or the stage percent the job was in (e.g. 50%)."""
    phase: str = Field(max_length=32)
    """The phase the decision was made in."""


class CheckpointStatus(KubeModel):
    """The newest checkpoint a trainer reported (`client.report_checkpoint`): a resume starts from it."""

    step: int = Field(ge=0)
    uri: str = Field(max_length=1024)
    at: datetime
    """When the operator received the report (its own clock)."""


class HaltStatus(KubeModel):
    """A halt in progress or done: the stop request to the trainers, and when the Job was suspended.

    Kept in status so a restarted operator continues the same halt (same deadline)."""

    requested_at: datetime
    deadline: datetime
    """requestedAt + spec.halt.gracePeriodSeconds: the Job is suspended then at the latest."""
    step: int = Field(0, ge=0)
    """The global step when the stop was requested."""
    suspended_at: datetime | None = None
    """None while the trainers are saving."""
    outcome: Literal["Checkpointed", "GraceExpired", "NoCheckpointing"] | None = None
    """Why the Job was suspended: a checkpoint reported after the request, the grace period over, or
    a job whose trainers never reported a checkpoint (nothing to wait for)."""


class CarbonTrackedJobStatus(KubeModel):
    """Observed state; written only by the operator."""

    phase: Phase | None = None
    replicas: int = Field(0, ge=0)
    """Workers the Job runs now (parallelism)."""
    target_replicas: int = Field(0, ge=0)
    selector: str | None = None
    """Label selector of the job's pods, for the scale subresource."""
    replica_summary: str | None = None
    """current/target, for kubectl get."""
    steps: int = Field(0, ge=0)
    """Highest global step reported."""
    energy_joules: float = Field(0, ge=0)
    energy_joules_upper_bound: float | None = Field(None, ge=0)
    """energyJoules plus the stated uncertainty of every method behind it (the carbon gate judges this in
    production)."""
    shared_gpu_energy_joules: float = Field(0, ge=0)
    """Part of energyJoules that is board energy of MIG or shared GPUs: not this job's alone."""
    gpus: list[GpuStatus] = Field(default_factory=list, max_length=MAX_STATUS_GPUS)
    """The GPUs measured (newest sidecar boot of each pod), MIG and shared ones first, at most 64."""
    energy_kwh: float = Field(0, ge=0)
    emissions_grams: float = Field(0, ge=0)
    emissions_kg: float = Field(0, ge=0)
    power_watts: float = Field(0, ge=0)
    intensity: IntensityStatus | None = None
    epsilon: float | None = None
    """Recomputed by the operator's accountant at the current step."""
    epsilon_claimed: float | None = None
    """What the job itself reported, shown beside the recomputed value."""
    projected: Projection | None = None
    schedule: ScheduleStatus | None = None
    """The carbon-aware start (spec.carbon.schedule)."""
    efficiency: EfficiencyStatus | None = None
    """Energy per quality: joules and grams per unit of the quality metric gained (judgement)."""
    telemetry: TelemetryStatus | None = None
    evidence: EvidenceStatus | None = None
    """Written by the telemetry writer with the energy it came with."""
    tests_evidence: TestsEvidence | None = None
    """Written by the judgement that used it."""
    promotion: PromotionStatus | None = None
    gates: list[GateResult] = Field(default_factory=list)
    gate_summary: str | None = None
    """e.g. 3/3 passed, or the name of the failing gate, for kubectl get."""
    measurements: list[MetricHistory] = Field(default_factory=list, max_length=10)
    """Per metric gate, the last 10 measurements."""
    decisions: list[DecisionRecord] = Field(default_factory=list, max_length=10)
    """The last 10 approvals and rejections, oldest first. Every one is also kept in the job's decision
    log (ConfigMaps labelled carbontrack.io/decision-log=NAME), which an edit of status does not touch."""
    checkpoint: CheckpointStatus | None = None
    """Written by the telemetry writer, from the trainer's reports."""
    halt: HaltStatus | None = None
    """Written by the judgement; cleared when the job resumes."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(None, ge=0)


class CarbonTrackedJob(KubeModel):
    """A training job whose energy and emissions are measured per step, scaled up only through gates."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True
    )

    api_version: Literal["carbontrack.io/v1alpha1"] = "carbontrack.io/v1alpha1"
    kind: Literal["CarbonTrackedJob"] = "CarbonTrackedJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: CarbonTrackedJobSpec
    status: CarbonTrackedJobStatus | None = None
