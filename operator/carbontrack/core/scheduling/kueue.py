"""How a CarbonTrackedJob lives under Kueue, as pure rules (integrations/kueue/ does the I/O).

Kueue owns a queued Job's `spec.suspend`: its webhook suspends the Job at creation and its manager
unsuspends it on admission and suspends it on eviction, so a second writer would be reverted (and a
Job whose parallelism changes while admitted no longer matches its Workload: Kueue evicts and requeues
it). Kueue's ways for another controller to stop or gate a job are the Workload's `spec.active` and
AdmissionChecks, so under a queue:
- halting and resuming set the Workload's `spec.active`; carbontrack never writes the Job's suspend;
- staged scale-up needs Kueue's elastic Jobs (workload slices: the Job's `kueue.x-k8s.io/elastic-job`
  annotation and Kueue's ElasticJobsViaWorkloadSlices feature gate); without them the Job is created at
  full size and the canary stages are refused with a condition, the gates are still judged;
- the budget AdmissionCheck (`carbontrack.io/budget`) decides admission from what is known before a
  step runs (`admission_verdict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from carbontrack.api.crd import CarbonTrackedJobSpec, CarbonTrackedJobStatus
from carbontrack.core.events import ConditionUpdate

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""The label Kueue reads on a Job: set it on the CarbonTrackedJob, the operator copies it to the Job."""
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
ELASTIC_ANNOTATION = "kueue.x-k8s.io/elastic-job"
"""Kueue's opt-in for workload slices (an annotation, value "true"), copied like the queue label."""
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
"""Kueue labels each Workload with the uid of the Job it stands for."""
WORKLOAD_ANNOTATION = "kueue.x-k8s.io/workload"
"""Kueue (TopologyAwareScheduling, on by default) writes the admitted Workload's name here on the Job's
pod template when it unsuspends the Job."""
KUEUE_API = "kueue.x-k8s.io/v1beta2"
"""The Kueue API carbontrack speaks (Kueue v0.17 and later; tested with v0.19.2)."""
ADMISSION_CHECK_CONTROLLER = "carbontrack.io/budget"
"""spec.controllerName of an AdmissionCheck that carbontrack answers."""

CANARY_CONDITION = "CanaryStages"
ADMISSION_CONDITION = "BudgetAdmission"


@dataclass(frozen=True)
class Queueing:
    """A CarbonTrackedJob queued by Kueue."""

    queue: str
    elastic: bool
    """Staged scale-up through workload slices: the elastic-job annotation on the CR and the operator
    told that Kueue runs with ElasticJobsViaWorkloadSlices (it cannot read Kueue's feature gates)."""


def queueing(
    labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None, elastic_enabled: bool
) -> Queueing | None:
    """None for a job Kueue does not queue (no queue-name label on the CarbonTrackedJob)."""
    queue = (labels or {}).get(QUEUE_LABEL, "")
    if not queue:
        return None
    asked = (annotations or {}).get(ELASTIC_ANNOTATION) == "true"
    return Queueing(queue=queue, elastic=asked and elastic_enabled)


def kueue_missing(q: Queueing | None, served: bool) -> str | None:
    """Why a queued job cannot run on this cluster (None: it can, or it is not queued).

    A queue label says the job is to be admitted by a queue, against the quota the queue shares out.
    Without Kueue nothing would admit, suspend or count it: it would run at once at full size, beside
    the queue, and every halt through its Workload would fail. So it is refused (phase Invalid) with
    this message rather than run unqueued."""
    if q is None or served:
        return None
    return (
        f"labelled {QUEUE_LABEL}={q.queue}, but this cluster serves no Kueue API ({KUEUE_API} workloads): "
        "nothing would queue it, and it would run unqueued at full size. Install Kueue (then edit the "
        "job to run it), or remove the label to run it without a queue"
    )


def job_metadata(
    labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The Kueue labels and annotations of the CarbonTrackedJob that the Job must carry."""
    out_labels = {k: v for k, v in (labels or {}).items() if k in (QUEUE_LABEL, PRIORITY_LABEL)}
    out_annotations = {k: v for k, v in (annotations or {}).items() if k == ELASTIC_ANNOTATION}
    return out_labels, out_annotations


def effective_spec(spec: CarbonTrackedJobSpec, q: Queueing | None) -> CarbonTrackedJobSpec:
    """The spec the promotion runs: unchanged unless queued without elastic Jobs, where the canary is
    the full job (canary.replicas = replicas, one stage of 100 %): the Job is admitted at its full
    size once and never rescaled, and the gates are judged after canary.minSteps as before."""
    if q is None or q.elastic:
        return spec
    canary = spec.canary.model_copy(update={"replicas": spec.replicas, "stages": [100]})
    gates = spec.gates
    if gates.approval is not None:  # an approval before a stage that no longer exists becomes one before 100
        approval = gates.approval.model_copy(update={"stages": [100]})
        gates = gates.model_copy(update={"approval": approval})
    return spec.model_copy(update={"canary": canary, "gates": gates})


def canary_condition(spec: CarbonTrackedJobSpec, q: Queueing | None) -> ConditionUpdate | None:
    """CanaryStages: whether the staged scale-up runs under Kueue, and what still applies if not."""
    if q is None:
        return None
    if q.elastic:
        return ConditionUpdate(
            CANARY_CONDITION,
            True,
            "KueueElastic",
            f"queue {q.queue}: each stage is a Kueue workload slice, admitted before the Job grows",
        )
    return ConditionUpdate(
        CANARY_CONDITION,
        False,
        "KueueNotElastic",
        f"queue {q.queue} without elastic Jobs: the Job is admitted at its full size "
        f"({spec.replicas} workers) and never rescaled; the gates are still judged after canary.minSteps "
        f"and a failure halts it through its Workload. For staged scale-up annotate the CarbonTrackedJob "
        f'{ELASTIC_ANNOTATION}: "true", with Kueue\'s ElasticJobsViaWorkloadSlices gate on '
        "(operator: Helm value kueue.elasticJobs)",
    )


def workload_annotations(
    current: Mapping[str, str] | None, changes: Mapping[str, str | None]
) -> dict[str, str]:
    """A Workload's pod-template annotations after a resume's merge patch `changes` (None deletes a key).

    While a halted Job's Workload is inactive, Kueue puts the Workload's copy of the pod template (the
    template it was created with: for an elastic Job's slice, before the last promotion) back on the
    suspended Job on every pass, also after the operator's resume wrote the stage's world size and the
    checkpoint on the Job: so the resume writes them on the Workload's copy too
    (integrations.kueue.client.set_workload_annotations)."""
    out = dict(current or {})
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def workload_releasing_quota(workloads: tuple[WorkloadView, ...]) -> str | None:
    """The halted Workload a resume waits for, if any: deactivated, unfinished, and still holding quota.

    Kueue refuses a change of a Workload's pod template while it holds quota, and releases a deactivated
    one's once the workers are gone; until then its copy is the one Kueue puts back on the Job, so a
    resume writes nothing before the Workload holds no quota."""
    for wl in workloads:
        if not wl.finished and not wl.active and wl.holds_quota:
            return wl.name
    return None


# ------------------------------------------------------------------------------ budget admission


@dataclass(frozen=True)
class Verdict:
    """The budget AdmissionCheck's answer: Ready, or Rejected with the reason in words."""

    ready: bool
    message: str


def admission_verdict(
    spec: CarbonTrackedJobSpec,
    status: CarbonTrackedJobStatus,
    intensity_g_per_kwh: float,
    intensity_source: str,
) -> Verdict:
    """Admit unless the budgets are spent or projected past, on the best evidence there is.

    Evidence, strongest first: what the job already spent (status totals, a resumed job); the projection
    from its measured rate (status.projected); before any step ran, the spec's declared
    carbon.expectedJoulesPerStep x totalSteps x PUE x the zone's intensity. Without any of these the job
    is admitted and said so: the canary measures, and its carbon and privacy gates halt it (the check
    refuses only what is known to exceed, it does not replace the gates). Epsilon cannot be projected
    before the trainer reports its DP-SGD parameters, so privacy is refused only on evidence in status.
    """
    found = [
        _privacy_admission(spec, status),
        _carbon_admission(spec, status, intensity_g_per_kwh, intensity_source),
    ]
    reasons = [text for refused, text in found if refused]
    checked = [text for refused, text in found if text and not refused]
    if reasons:
        return Verdict(False, "; ".join(reasons))
    if not checked:
        return Verdict(True, "no carbon or privacy budget to check")
    return Verdict(True, "within budget: " + "; ".join(checked))


def _privacy_admission(spec: CarbonTrackedJobSpec, status: CarbonTrackedJobStatus) -> tuple[bool, str]:
    """(refused, why) for the privacy budget; (False, "") without one. Only evidence in status counts:
    epsilon cannot be projected before the trainer reports its DP-SGD parameters."""
    privacy = spec.gates.privacy
    if privacy is None:
        return False, ""
    budget_eps = privacy.epsilon
    projected_eps = status.projected.epsilon if status.projected else None
    if status.epsilon is not None and status.epsilon > budget_eps:
        return True, f"privacy budget spent: epsilon {status.epsilon:.3g} > {budget_eps:g}"
    if projected_eps is not None and projected_eps > budget_eps:
        return True, f"projected epsilon {projected_eps:.3g} > budget {budget_eps:g}"
    if projected_eps is not None:
        return False, f"projected epsilon {projected_eps:.3g} <= {budget_eps:g}"
    return False, "epsilon not projectable before the trainer reports DP-SGD parameters"


def _carbon_admission(
    spec: CarbonTrackedJobSpec,
    status: CarbonTrackedJobStatus,
    intensity_g_per_kwh: float,
    intensity_source: str,
) -> tuple[bool, str]:
    """(refused, why) for the carbon budget; (False, "") without one. The projection from the measured
    rate where status has one, else from the spec's declared joules per step."""
    budget_kg = spec.carbon.budget_kg
    if budget_kg is None:
        return False, ""
    budget_g = budget_kg * 1000
    projected_g = status.projected.emissions_grams if status.projected else None
    source = "measured rate"
    if projected_g is None and spec.carbon.expected_joules_per_step is not None:
        joules = spec.carbon.expected_joules_per_step * spec.total_steps * spec.carbon.pue
        projected_g = joules / 3.6e6 * intensity_g_per_kwh
        source = (
            f"declared {spec.carbon.expected_joules_per_step:g} J/step x {spec.total_steps} steps x "
            f"PUE {spec.carbon.pue:g} at {intensity_g_per_kwh:g} gCO2e/kWh ({intensity_source})"
        )
    if status.emissions_grams > budget_g:
        return True, f"carbon budget spent: {status.emissions_grams / 1000:.3g} kg > {budget_kg:g} kg"
    if projected_g is not None and projected_g > budget_g:
        return True, f"projected emissions {projected_g / 1000:.3g} kg > budget {budget_kg:g} kg ({source})"
    if projected_g is not None:
        return False, f"projected emissions {projected_g / 1000:.3g} kg <= {budget_kg:g} kg ({source})"
    return False, "no emissions estimate before the canary (set carbon.expectedJoulesPerStep)"


@dataclass(frozen=True)
class CheckState:
    """One AdmissionCheck's state on a Workload."""

    name: str
    state: str
    """Pending | Ready | Retry | Rejected (Kueue's CheckState)."""
    message: str


@dataclass(frozen=True)
class WorkloadView:
    """What carbontrack reads of one Workload of a Job."""

    name: str
    active: bool
    admitted: bool
    finished: bool
    checks: tuple[CheckState, ...] = ()
    holds_quota: bool = False


def admission_condition(workloads: tuple[WorkloadView, ...], ours: frozenset[str]) -> ConditionUpdate | None:
    """BudgetAdmission on the CarbonTrackedJob, mirroring the budget check's state on its Workload
    (`ours`: the AdmissionChecks whose controller is carbontrack.io/budget); None without such a check."""
    for wl in workloads:
        if wl.finished:
            continue
        for check in wl.checks:
            if check.name not in ours:
                continue
            ready = check.state == "Ready"
            message = f"workload {wl.name}, check {check.name}: {check.message or check.state}"
            return ConditionUpdate(ADMISSION_CONDITION, ready, f"Check{check.state}", message)
    return None
