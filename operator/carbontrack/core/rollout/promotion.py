"""The promotion state machine: where a job is, what it should become, as a pure function.

    Pending -> Canary --gates pass after minSteps--> Promoting(stage i) --gates pass--> ... -> Running
       any gate fails -> Halted (the Job is suspended, the verdict says which gate, observed, threshold)
       a gate is Inconclusive, or the next stage needs an approval -> Paused (the Job keeps its scale
         and keeps training unless gates.suspendWhenPaused)
       Paused: a person approves -> the promotion continues as if the gates passed;
               a person rejects -> Halted, as a failed gate
       Running: a budget (epsilon or emissions) exceeded *so far* -> Halted at once
       Halted: a new spec generation (an edit, or suspend set back to false) re-judges now
         (passes -> resume; Inconclusive -> Paused)
       the Job completes or fails -> Succeeded / Failed (terminal)

A person's decision (`PersonDecision`, from the approve/reject annotation) is used once: the state
keeps its hash. One that arrives while the job is not Paused is recorded as Ignored, never kept for
a later pause (a stale approval must not wave a future stage through).

`step()` gets the current state and the evidence and returns the next state plus the Events to post;
the handler only applies it. Gates are judged lazily, only when a decision needs them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec, DecisionRecord
from carbontrack.core.events import Event
from carbontrack.core.gates.judgement import Report

PauseReason = Literal["Inconclusive", "ApprovalRequired"]


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.PENDING
    stage: int = -1
    """-1: the canary; i >= 0: spec.canary.stages[i]."""
    stage_start_step: int = 0
    halted_from: Phase | None = None
    """The phase a halt interrupted, so a resume continues there."""
    halted_generation: int | None = None
    paused_from: Phase | None = None
    """The phase a pause interrupted (Canary or Promoting), continued on approval."""
    pause_reason: PauseReason | None = None
    consumed_decision: str | None = None
    """Hash of the last person's decision acted on."""


@dataclass(frozen=True)
class PersonDecision:
    """An approve/reject annotation as the controller read it."""

    approve: bool
    by: str
    reason: str
    token: str
    """A hash of the annotation (value and when it was set): the same decision is used once."""
    at: dt.datetime


@dataclass(frozen=True)
class Decision:
    state: State
    replicas: int
    suspend: bool
    report: Report | None = None
    events: tuple[Event, ...] = field(default_factory=tuple)
    record: DecisionRecord | None = None
    """A person's decision to append to status.decisions."""


def stage_replicas(spec: CarbonTrackedJobSpec, stage: int) -> int:
    if stage < 0:
        return spec.canary.replicas
    return max(spec.canary.replicas, math.ceil(spec.replicas * spec.canary.stages[stage] / 100))


def stage_label(spec: CarbonTrackedJobSpec, stage: int) -> str:
    return "canary" if stage < 0 else f"{spec.canary.stages[stage]}%"


def _verdict_text(report: Report) -> str:
    return "; ".join(f"{r.name}: {r.message}" for r in report.failed()) or "all gates passed"


def _inconclusive_text(report: Report) -> str:
    return "; ".join(f"{r.name}: {r.message}" for r in report.inconclusive())


def _how_to_decide() -> str:
    return "approve or reject with `carbontrack approve|reject NAME --reason ...`"


def _paused(state: State, reason: PauseReason) -> State:
    return replace(state, phase=Phase.PAUSED, paused_from=state.phase, pause_reason=reason)


def step(
    spec: CarbonTrackedJobSpec,
    state: State,
    *,
    global_step: int,
    generation: int,
    judge: Callable[[], Report],
    over_budget: Callable[[], str | None],
    person: PersonDecision | None = None,
    collecting: bool = False,
) -> Decision:
    """The next state. `judge` runs the gates; `over_budget` says which budget is exceeded so far, if any;
    `person` is the approve/reject annotation, if one is on the object; `collecting`: a metric gate
    still takes its measurements, so the stage is not judged yet."""
    phase = state.phase
    if phase in (Phase.SUCCEEDED, Phase.FAILED):
        return Decision(state, stage_replicas(spec, state.stage), False)
    fresh = person if person is not None and person.token != state.consumed_decision else None
    if fresh is None:
        return _step(spec, state, global_step, generation, judge, over_budget, collecting)
    consumed = replace(state, consumed_decision=fresh.token)
    verb = "approval" if fresh.approve else "rejection"
    why = f": {fresh.reason}" if fresh.reason else ""

    def record(decision: Literal["Approved", "Rejected", "Ignored"]) -> DecisionRecord:
        return DecisionRecord(
            decision=decision, by=fresh.by[:512], reason=fresh.reason[:1024], at=fresh.at,
            stage=stage_label(spec, state.stage), phase=phase.value,
        )  # fmt: skip

    if phase != Phase.PAUSED or spec.suspend:
        inner = _step(spec, consumed, global_step, generation, judge, over_budget, collecting)
        now = Phase.HALTED if spec.suspend else phase
        ignored = Event(
            "Warning", "DecisionIgnored", f"{verb} by {fresh.by} ignored: the job is {now}, not Paused"
        )
        return replace(inner, events=(ignored, *inner.events), record=record("Ignored"))
    where = stage_label(spec, state.stage)
    if not fresh.approve:
        halted = replace(
            consumed, phase=Phase.HALTED, halted_from=state.paused_from or Phase.CANARY,
            halted_generation=generation, paused_from=None, pause_reason=None,
        )  # fmt: skip
        event = Event("Warning", "Rejected", f"rejected by {fresh.by} at stage {where}{why}")
        return Decision(
            halted, stage_replicas(spec, state.stage), True, events=(event,), record=record("Rejected")
        )
    resumed = replace(consumed, phase=state.paused_from or Phase.CANARY, paused_from=None, pause_reason=None)
    approved = Event("Normal", "Approved", f"approved by {fresh.by} at stage {where}{why}")
    d = _advance(spec, resumed, global_step, None, approved=True)
    return replace(d, events=(approved, *d.events), record=record("Approved"))


def _needs_approval(spec: CarbonTrackedJobSpec, first: int, target: int) -> bool:
    """An approval is asked before stages[first..target] (a jump to full scale skips stages)."""
    a = spec.gates.approval
    if a is None or spec.gates.context not in a.required_for:
        return False
    return any(spec.canary.stages[i] in a.stages for i in range(first, target + 1))


def _advance(
    spec: CarbonTrackedJobSpec, state: State, global_step: int, report: Report | None, *, approved: bool
) -> Decision:
    """The gates passed (or a person approved): the next stage, or a pause for the approval it needs."""
    nxt = state.stage + 1
    last = len(spec.canary.stages) - 1
    n = stage_replicas(spec, min(nxt, last))
    full = nxt >= last or n >= spec.replicas
    target = last if full else nxt
    if not approved and _needs_approval(spec, min(nxt, last), target):
        paused = _paused(state, "ApprovalRequired")
        percent = spec.canary.stages[target]
        message = f"gates passed; scaling to {percent}% needs a person's approval: {_how_to_decide()}"
        event = Event("Normal", "ApprovalRequired", message)
        return Decision(
            paused, stage_replicas(spec, state.stage), spec.gates.suspend_when_paused, report, (event,)
        )
    if full:
        # The last stage is full scale: reaching it is the promotion to Running (budgets watched from now on).
        done = replace(state, phase=Phase.RUNNING, stage=last, stage_start_step=global_step)
        event = Event("Normal", "Promoted", f"gates passed; running at full scale ({spec.replicas} workers)")
        return Decision(done, spec.replicas, False, report, (event,))
    promoted = replace(state, phase=Phase.PROMOTING, stage=nxt, stage_start_step=global_step)
    percent = spec.canary.stages[nxt]
    event = Event("Normal", "GatesPassed", f"gates passed; scaling to {n} workers ({percent}%)")
    return Decision(promoted, n, False, report, (event,))


def _step(
    spec: CarbonTrackedJobSpec,
    state: State,
    global_step: int,
    generation: int,
    judge: Callable[[], Report],
    over_budget: Callable[[], str | None],
    collecting: bool = False,
) -> Decision:
    phase = state.phase

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
        if report.verdict() == "Inconclusive":
            # A resumed stage that is still undecided waits for a person, as it would have before.
            resumed = replace(
                state, phase=state.halted_from or Phase.CANARY, halted_from=None, halted_generation=None
            )
            # halted while Paused (spec.suspend): back to that pause, which keeps what it interrupted
            paused = resumed if resumed.phase == Phase.PAUSED else _paused(resumed, "Inconclusive")
            message = f"re-judged generation {generation}: {_inconclusive_text(report)}; {_how_to_decide()}"
            event = Event("Warning", "GateInconclusive", message)
            return Decision(
                paused, stage_replicas(spec, state.stage), spec.gates.suspend_when_paused, report, (event,)
            )
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
        hold = resumed.phase == Phase.PAUSED and spec.gates.suspend_when_paused
        return Decision(resumed, stage_replicas(spec, state.stage), hold, report, (event,))

    if phase == Phase.PAUSED:  # until a person decides (see `step`)
        return Decision(state, stage_replicas(spec, state.stage), spec.gates.suspend_when_paused)

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
    if global_step - state.stage_start_step < spec.canary.min_steps or collecting:
        return Decision(state, stage_replicas(spec, state.stage), False)
    report = judge()
    if report.failed():
        halted = replace(state, phase=Phase.HALTED, halted_from=phase, halted_generation=generation)
        event = Event("Warning", "GateFailed", _verdict_text(report))
        return Decision(halted, stage_replicas(spec, state.stage), True, report, (event,))
    if report.inconclusive():
        paused = _paused(state, "Inconclusive")
        event = Event("Warning", "GateInconclusive", f"{_inconclusive_text(report)}; {_how_to_decide()}")
        return Decision(
            paused, stage_replicas(spec, state.stage), spec.gates.suspend_when_paused, report, (event,)
        )
    return _advance(spec, state, global_step, report, approved=False)
