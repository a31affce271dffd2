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
a later pause (a stale approval must not wave a future stage through). An approval the spec rules
out (`PersonDecision.refused`: gates.approval.distinctFrom) is recorded as Refused and used up too.

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
    """Where a job is in its promotion, as status holds it: all a restarted operator needs."""

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
    refused: str = ""
    """Why this approval may not count (gates.approval.distinctFrom), or empty: recorded as Refused."""


@dataclass(frozen=True)
class Decision:
    """The next state, the Job's scale and suspend, the report it was judged on, and what to tell people."""

    state: State
    replicas: int
    suspend: bool
    report: Report | None = None
    events: tuple[Event, ...] = field(default_factory=tuple)
    record: DecisionRecord | None = None
    """A person's decision to append to status.decisions."""


def stage_replicas(spec: CarbonTrackedJobSpec, stage: int) -> int:
    """Workers at a stage: the canary's, or the stage's percentage of replicas (never below the canary)."""
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


@dataclass(frozen=True)
class _Round:
    """What one step knows: the spec, the state as status holds it, and how to judge on demand."""

    spec: CarbonTrackedJobSpec
    state: State
    global_step: int
    generation: int
    judge: Callable[[], Report]
    over_budget: Callable[[], str | None]
    collecting: bool = False

    @property
    def replicas(self) -> int:
        """The scale of the stage the job is in."""
        return stage_replicas(self.spec, self.state.stage)

    def stay(self, suspend: bool) -> Decision:
        """No change of state: the stage's scale, held suspended or not."""
        return Decision(self.state, self.replicas, suspend)


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
    r = _Round(spec, state, global_step, generation, judge, over_budget, collecting)
    if state.phase in (Phase.SUCCEEDED, Phase.FAILED):
        return r.stay(False)
    if person is None or person.token == state.consumed_decision:
        return _step(r)
    consumed = replace(r, state=replace(state, consumed_decision=person.token))
    if person.refused:
        return _refuse(consumed, person, state)
    if state.phase != Phase.PAUSED or spec.suspend:
        return _ignore(consumed, person, state)
    if not person.approve:
        return _reject(consumed, person, state)
    return _approve(consumed, person, state)


def _record(
    r: _Round,
    person: PersonDecision,
    before: State,
    decision: Literal["Approved", "Rejected", "Ignored", "Refused"],
) -> DecisionRecord:
    """The entry for status.decisions: who decided what, why, and where the job was."""
    return DecisionRecord(
        decision=decision,
        by=person.by[:512],
        reason=person.reason[:1024],
        at=person.at,
        stage=stage_label(r.spec, before.stage),
        phase=before.phase.value,
    )


def _why(person: PersonDecision) -> str:
    return f": {person.reason}" if person.reason else ""


def _ignore(r: _Round, person: PersonDecision, before: State) -> Decision:
    """A decision while the job is not Paused is recorded as Ignored, never kept for a later pause."""
    inner = _step(r)
    verb = "approval" if person.approve else "rejection"
    now = Phase.HALTED if r.spec.suspend else before.phase
    text = f"{verb} by {person.by} ignored: the job is {now}, not Paused"
    ignored = Event("Warning", "DecisionIgnored", text)
    return replace(inner, events=(ignored, *inner.events), record=_record(r, person, before, "Ignored"))


def _refuse(r: _Round, person: PersonDecision, before: State) -> Decision:
    """An approval the spec rules out is recorded as Refused and used up; the job goes on without it."""
    inner = _step(r)
    refused = Event("Warning", "ApprovalRefused", f"approval by {person.by} refused: {person.refused}")
    return replace(inner, events=(refused, *inner.events), record=_record(r, person, before, "Refused"))


def _reject(r: _Round, person: PersonDecision, before: State) -> Decision:
    """A rejection halts the job as a failed gate would, where the pause interrupted it."""
    halted = replace(
        r.state,
        phase=Phase.HALTED,
        halted_from=before.paused_from or Phase.CANARY,
        halted_generation=r.generation,
        paused_from=None,
        pause_reason=None,
    )
    where = stage_label(r.spec, before.stage)
    event = Event("Warning", "Rejected", f"rejected by {person.by} at stage {where}{_why(person)}")
    return Decision(halted, r.replicas, True, events=(event,), record=_record(r, person, before, "Rejected"))


def _approve(r: _Round, person: PersonDecision, before: State) -> Decision:
    """An approval continues the promotion the pause interrupted, as if the gates passed."""
    resumed = replace(r.state, phase=before.paused_from or Phase.CANARY, paused_from=None, pause_reason=None)
    where = stage_label(r.spec, before.stage)
    approved = Event("Normal", "Approved", f"approved by {person.by} at stage {where}{_why(person)}")
    d = _advance(r.spec, resumed, r.global_step, None, approved=True)
    return replace(d, events=(approved, *d.events), record=_record(r, person, before, "Approved"))


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


def _step(r: _Round) -> Decision:
    """The next state without a person's decision: spec.suspend first, then the rule of the phase."""
    if r.spec.suspend:
        return _suspend(r)
    return _BY_PHASE.get(r.state.phase, _judge_stage)(r)


def _suspend(r: _Round) -> Decision:
    """spec.suspend halts the job where it is; it resumes on the next generation (see `_halted`)."""
    if r.state.phase == Phase.HALTED:
        return r.stay(True)
    halted = replace(r.state, phase=Phase.HALTED, halted_from=r.state.phase, halted_generation=r.generation)
    event = Event("Normal", "Suspended", "spec.suspend is true: the Job is suspended")
    return Decision(halted, r.replicas, True, events=(event,))


def _pending(r: _Round) -> Decision:
    canary = State(phase=Phase.CANARY, stage=-1, stage_start_step=r.global_step)
    n = stage_replicas(r.spec, -1)
    return Decision(canary, n, False, events=(Event("Normal", "CanaryStarted", f"canary with {n} workers"),))


def _halted(r: _Round) -> Decision:
    """A halted job stays halted until a new spec generation, which is judged at once."""
    state, generation = r.state, r.generation
    if state.halted_generation == generation:
        return r.stay(True)
    report = r.judge()
    if report.verdict() == "Inconclusive":
        return _rejudged_inconclusive(r, report)
    if not report.all_passed():
        again = replace(state, halted_generation=generation)
        event = Event("Warning", "GateFailed", f"re-judged generation {generation}: {_verdict_text(report)}")
        return Decision(again, r.replicas, True, report, (event,))
    # A resumed stage observes minSteps of fresh evidence before it is judged for promotion again.
    resumed = replace(
        state,
        phase=state.halted_from or Phase.CANARY,
        halted_from=None,
        halted_generation=None,
        stage_start_step=r.global_step,
    )
    event = Event("Normal", "Resumed", f"generation {generation} passes the gates; resuming {resumed.phase}")
    hold = resumed.phase == Phase.PAUSED and r.spec.gates.suspend_when_paused
    return Decision(resumed, r.replicas, hold, report, (event,))


def _rejudged_inconclusive(r: _Round, report: Report) -> Decision:
    """A resumed stage that is still undecided waits for a person, as it would have before the halt."""
    state = r.state
    resumed = replace(
        state, phase=state.halted_from or Phase.CANARY, halted_from=None, halted_generation=None
    )
    # halted while Paused (spec.suspend): back to that pause, which keeps what it interrupted
    paused = resumed if resumed.phase == Phase.PAUSED else _paused(resumed, "Inconclusive")
    message = f"re-judged generation {r.generation}: {_inconclusive_text(report)}; {_how_to_decide()}"
    event = Event("Warning", "GateInconclusive", message)
    return Decision(paused, r.replicas, r.spec.gates.suspend_when_paused, report, (event,))


def _paused_phase(r: _Round) -> Decision:
    """Paused until a person decides (see `step`)."""
    return r.stay(r.spec.gates.suspend_when_paused)


def _running(r: _Round) -> Decision:
    """At full scale the budgets are watched: one exceeded so far halts the job at once."""
    exceeded = r.over_budget()
    if not exceeded:
        return r.stay(False)
    halted = replace(r.state, phase=Phase.HALTED, halted_from=Phase.RUNNING, halted_generation=r.generation)
    return Decision(halted, r.replicas, True, events=(Event("Warning", "BudgetExceeded", exceeded),))


def _judge_stage(r: _Round) -> Decision:
    """Canary or Promoting: judged once the stage has seen minSteps global steps and no metric gate is
    still collecting; fails halt, Inconclusive pauses, a pass advances."""
    state = r.state
    if r.global_step - state.stage_start_step < r.spec.canary.min_steps or r.collecting:
        return r.stay(False)
    report = r.judge()
    if report.failed():
        halted = replace(state, phase=Phase.HALTED, halted_from=state.phase, halted_generation=r.generation)
        event = Event("Warning", "GateFailed", _verdict_text(report))
        return Decision(halted, r.replicas, True, report, (event,))
    if report.inconclusive():
        paused = _paused(state, "Inconclusive")
        event = Event("Warning", "GateInconclusive", f"{_inconclusive_text(report)}; {_how_to_decide()}")
        return Decision(paused, r.replicas, r.spec.gates.suspend_when_paused, report, (event,))
    return _advance(r.spec, state, r.global_step, report, approved=False)


_BY_PHASE: dict[Phase, Callable[[_Round], Decision]] = {
    Phase.PENDING: _pending,
    Phase.HALTED: _halted,
    Phase.PAUSED: _paused_phase,
    Phase.RUNNING: _running,
}
"""The rule of each phase; any other phase (Canary, Promoting) is a stage being judged."""
