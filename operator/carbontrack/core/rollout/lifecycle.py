"""Where a job's life starts, and which step its timer runs, as pure functions of the spec and status.

The reconcile handler creates or re-scales the Job as `plan_reconcile` says: suspended or not, and,
for a job with no phase yet (or an Invalid one), the first phase with its Ready condition. Only the
judgement lifts a gate's halt and stops running workers (after their checkpoint); a carbon-aware start
creates the Job suspended, and only the deferral starts it.

The judgement timer asks `round_for` which step runs this round: the carbon-aware start
(core.scheduling.rounds) or the judgement (core.rollout.evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec, HaltStatus
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.rollout import halting
from carbontrack.core.rollout.evaluation import suspended

SETTLED = (Phase.INVALID, Phase.SUCCEEDED, Phase.FAILED)
"""Phases the timer judges nothing in: it only loads the job's state, for its metrics."""

JUDGEMENT_OWNS_READY = (Phase.HALTED, Phase.PAUSED, Phase.DEFERRED)
"""Phases whose Ready condition the judgement writes (it alone lifts them)."""


@dataclass(frozen=True)
class ReconcilePlan:
    """The Job as the reconcile writes it, and the status it records once the Job exists."""

    replicas: int
    """The Job's parallelism and completions: the scale status records, else the canary's."""
    suspend: bool
    """The Job's spec.suspend (a Job Kueue queues leaves it to Kueue, and moves its Workload instead)."""
    first_phase: Phase | None
    """The phase once the Job exists (Pending, or Deferred for a carbon-aware start); None: unchanged."""
    ready: ConditionUpdate | None
    """The Ready condition once the Job exists; None where the judgement owns it."""
    events: tuple[Event, ...] = ()


def phase_of(raw: object) -> Phase | None:
    """status.phase as kopf hands it over (a string, or nothing yet)."""
    return Phase(str(raw)) if raw else None


def plan_reconcile(
    spec: CarbonTrackedJobSpec, phase: Phase | None, halt: HaltStatus | None, replicas: int | None
) -> ReconcilePlan | None:
    """The Job's scale and suspend, the first phase and the Ready condition; None for a finished job."""
    if phase in (Phase.SUCCEEDED, Phase.FAILED):
        return None
    scale = int(replicas or spec.canary.replicas)
    starting = phase in (None, Phase.INVALID)
    deferring = spec.carbon.schedule is not None and starting
    suspend = (
        (spec.suspend and starting) or deferring or halting.workers_stopped(suspended(spec, phase), halt)
    )
    running = ConditionUpdate("Ready", True, "JobRunning", f"{scale} of {spec.replicas} workers")
    if not starting:
        ready = None if phase in JUDGEMENT_OWNS_READY else running
        return ReconcilePlan(scale, suspend, None, ready)
    first = Phase.DEFERRED if deferring else Phase.PENDING
    if deferring:
        running = ConditionUpdate(
            "Ready", False, "Deferred", "waiting for a clean grid (spec.carbon.schedule)"
        )
    changed = Event("Normal", "PhaseChanged", f"phase {phase or 'none'} -> {first}")
    return ReconcilePlan(scale, suspend, first, running, (changed,))


class Round(Enum):
    """The step one round of the job's timer runs."""

    LOAD = "load"
    """A settled job (Invalid, Succeeded, Failed): its state is loaded for its metrics, nothing judged."""
    WAIT = "wait"
    """Nothing to do this round: the Job is not created yet, or the spec cannot be used."""
    DEFER = "defer"
    """The carbon-aware start decides (a Deferred job, or a dirty-grid pause)."""
    JUDGE = "judge"
    """gather -> evaluate -> apply."""


def round_for(phase: Phase | None, job_seen: bool, spec: CarbonTrackedJobSpec | None) -> Round:
    """The step this round runs. `job_seen`: the Job watch has shown the job's Job; `spec`: None when it
    cannot be used (the reconcile says why).

    No phase yet counts as Pending: the reconcile's own status patch can be lost (kopf drops a patch
    that meets a 404 while a new CRD's storage initialises). The judgement cannot move past Pending
    before the Job exists, because applying its first decision scales the Job, so a job with no phase
    whose Job the watch has not shown yet waits for the next round. With a schedule and no phase, the
    reconcile's Deferred may have been lost: the deferral decides, never a start past it."""
    if phase in SETTLED:
        return Round.LOAD
    if (phase is None and not job_seen) or spec is None:
        return Round.WAIT
    if phase == Phase.DEFERRED or (phase is None and spec.carbon.schedule is not None):
        return Round.DEFER
    return Round.JUDGE
