"""The job's spec: the canary and its stages, carbon settings (intensity source, schedule, budget), the
distributed rendezvous, the halt's checkpoint, and the cross-field rules that tie them to the gates."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from carbontrack.api.base import KubeModel
from carbontrack.api.crd.gates import GatesSpec
from carbontrack.api.crd.schema import Duration, StagePercent, default_of, with_rules
from carbontrack.api.podtemplate import check_template


class CanarySpec(KubeModel):
    """How the job proves itself before it may scale: a few replicas first, then stages."""

    model_config = with_rules(
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
        default_factory=IntensitySpec, json_schema_extra=default_of(IntensitySpec)
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

    model_config = with_rules(
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
    canary: CanarySpec = Field(default_factory=CanarySpec, json_schema_extra=default_of(CanarySpec))
    carbon: CarbonSpec = Field(default_factory=CarbonSpec, json_schema_extra=default_of(CarbonSpec))
    gates: GatesSpec = Field(default_factory=GatesSpec, json_schema_extra=default_of(GatesSpec))
    suspend: bool = False
    """Stop the job without deleting it; set back to false to resume."""
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec, json_schema_extra=default_of(DistributedSpec)
    )
    halt: HaltSpec = Field(default_factory=HaltSpec, json_schema_extra=default_of(HaltSpec))

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
