"""The promotion state machine: where a job is, what it should become, as a pure function.

    Pending -> Canary --gates pass after minSteps--> Promoting(stage i) --gates pass--> ... -> Running
       any gate fails -> Halted (the Job is suspended, the verdict says which gate, observed, threshold)
       Running: a budget (epsilon or emissions) exceeded *so far* -> Halted at once
       Halted: a new spec generation (an edit, or suspend set back to false) re-judges now
       the Job completes or fails -> Succeeded / Failed (terminal)

`step()` gets the current state and the evidence and returns the next state plus the Events to post;
the handler only applies it. Gates are judged lazily, only when a decision needs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.gates import Report


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.PENDING
    stage: int = -1
    """-1: the canary; i >= 0: spec.canary.stages[i]."""
    stage_start_step: int = 0
    halted_from: Phase | None = None
    """The phase a halt interrupted, so a resume continues there."""
    halted_generation: int | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    state: State
    replicas: int
    suspend: bool
    report: Report | None = None
    events: tuple[Event, ...] = field(default_factory=tuple)


def stage_replicas(spec: CarbonTrackedJobSpec, stage: int) -> int:
    if stage < 0:
        return spec.canary.replicas
    return max(spec.canary.replicas, math.ceil(spec.replicas * spec.canary.stages[stage] / 100))


def _verdict_text(report: Report) -> str:
    return "; ".join(f"{r.name}: {r.message}" for r in report.failed()) or "all gates passed"


def step(
    spec: CarbonTrackedJobSpec,
    state: State,
    *,
    global_step: int,
    generation: int,
    judge: Callable[[], Report],
    over_budget: Callable[[], str | None],
) -> Decision:
    """The next state. `judge` runs the gates; `over_budget` says which budget is exceeded so far, if any."""
    phase = state.phase
    if phase in (Phase.SUCCEEDED, Phase.FAILED):
        return Decision(state, stage_replicas(spec, state.stage), False)

    if spec.suspend:
        if phase == Phase.HALTED:
            return Decision(state, stage_replicas(spec, state.stage), True)
        halted = replace(state, phase=Phase.HALTED, halted_from=phase, halted_generation=generation)
        event = Event("Normal", "Suspended", "spec.suspend is true: the Job is suspended")
        return Decision(halted, stage_replicas(spec, state.stage), True, events=(event,))

    if phase == Phase.PENDING:
        canary = State(phase=Phase.CANARY, stage=-1, stage_start_step=global_step)
        n = stage_replicas(spec, -1)
        return Decision(
            canary, n, False, events=(Event("Normal", "CanaryStarted", f"canary with {n} workers"),)
        )

    if phase == Phase.HALTED:
        if state.halted_generation == generation:
            return Decision(state, stage_replicas(spec, state.stage), True)
        report = judge()
        if not report.all_passed():
            again = replace(state, halted_generation=generation)
            event = Event(
                "Warning", "GateFailed", f"re-judged generation {generation}: {_verdict_text(report)}"
            )
            return Decision(again, stage_replicas(spec, state.stage), True, report, (event,))
        # A resumed stage observes minSteps of fresh evidence before it is judged for promotion again.
        resumed = replace(
            state, phase=state.halted_from or Phase.CANARY, halted_from=None, halted_generation=None,
            stage_start_step=global_step,
        )  # fmt: skip
        event = Event(
            "Normal", "Resumed", f"generation {generation} passes the gates; resuming {resumed.phase}"
        )
        return Decision(resumed, stage_replicas(spec, state.stage), False, report, (event,))

    if phase == Phase.RUNNING:
        exceeded = over_budget()
        if exceeded:
            halted = replace(
                state, phase=Phase.HALTED, halted_from=Phase.RUNNING, halted_generation=generation
            )
            event = Event("Warning", "BudgetExceeded", exceeded)
            return Decision(halted, stage_replicas(spec, state.stage), True, events=(event,))
        return Decision(state, stage_replicas(spec, state.stage), False)

    # Canary or Promoting: judge once the stage has seen minSteps global steps.
    if global_step - state.stage_start_step < spec.canary.min_steps:
        return Decision(state, stage_replicas(spec, state.stage), False)
    report = judge()
    if not report.all_passed():
        halted = replace(state, phase=Phase.HALTED, halted_from=phase, halted_generation=generation)
        event = Event("Warning", "GateFailed", _verdict_text(report))
        return Decision(halted, stage_replicas(spec, state.stage), True, report, (event,))
    nxt = state.stage + 1
    last = len(spec.canary.stages) - 1
    n = stage_replicas(spec, min(nxt, last))
    if nxt >= last or n >= spec.replicas:
        # The last stage is full scale: reaching it is the promotion to Running (budgets watched from now on).
        done = replace(state, phase=Phase.RUNNING, stage=last, stage_start_step=global_step)
        event = Event("Normal", "Promoted", f"gates passed; running at full scale ({spec.replicas} workers)")
        return Decision(done, spec.replicas, False, report, (event,))
    promoted = replace(state, phase=Phase.PROMOTING, stage=nxt, stage_start_step=global_step)
    percent = spec.canary.stages[nxt]
    event = Event("Normal", "GatesPassed", f"gates passed; scaling to {n} workers ({percent}%)")
    return Decision(promoted, n, False, report, (event,))
