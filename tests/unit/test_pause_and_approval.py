"""Inconclusive gates, approvals and rejections: one row per transition, exact values."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from carbontrack.api.contract import APPROVE_ANNOTATION, REJECT_ANNOTATION, Phase
from carbontrack.api.crd import CarbonTrackedJobSpec, DecisionRecord, GateResult
from carbontrack.core.gates.judgement import Evidence, Report, judge
from carbontrack.core.rollout.approvals import annotation_value, person_decision
from carbontrack.core.rollout.evaluation import Inputs, JobScale, evaluate
from carbontrack.core.rollout.promotion import PersonDecision, State, step
from carbontrack.state import status as st
from tests.cases.crs import merged_spec
from tests.cases.evaluation import canary_aggregate, inputs

AT = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC)
PASS = Report((GateResult(name="quality.score", passed=True),))
FAIL = Report((GateResult(name="quality.score", passed=False, observed=0.7, threshold=0.8, message="bad"),))
UNSURE = Report(
    (
        GateResult(name="tests.passRate", passed=True),
        GateResult(
            name="quality.score", passed=False, verdict="Inconclusive", observed=0.83, threshold=0.85,
            message="eval_accuracy 0.83 is between 0.8 and 0.85",
        ),
    )
)  # fmt: skip
APPROVE = PersonDecision(True, "alice", "fine for this data", "t1", AT)
REJECT = PersonDecision(False, "bob", "long-context regression", "t2", AT)


def spec(gates: dict[str, Any] | None = None, **kw: Any) -> CarbonTrackedJobSpec:
    # replicas 8, canary 1 replica, minSteps 200, stages 25/50/100
    return CarbonTrackedJobSpec.model_validate(merged_spec(gates, **kw))


S = spec()
HOLD = spec({"suspendWhenPaused": True})
GATE_100 = spec({"approval": {"stages": [100], "requiredFor": ["production"]}})
GATE_50_100 = spec({"approval": {"stages": [50, 100]}})
STAGING_100 = spec({"context": "staging", "approval": {"stages": [100], "requiredFor": ["production"]}})
SUSPENDED = spec(suspend=True)

PAUSED_CANARY = State(Phase.PAUSED, -1, 0, paused_from=Phase.CANARY, pause_reason="Inconclusive")
PAUSED_50 = State(Phase.PAUSED, 1, 400, paused_from=Phase.PROMOTING, pause_reason="ApprovalRequired")
PAUSED_25 = State(Phase.PAUSED, 0, 200, paused_from=Phase.PROMOTING, pause_reason="Inconclusive")


def boom() -> Report:
    raise AssertionError("the gates were judged")


@pytest.mark.parametrize(
    ("spec_", "state", "at_step", "generation", "report", "person",
     "want", "replicas", "suspend", "reasons"),
    [
        # a stage's gates Inconclusive: Paused, the Job keeps its scale and keeps training
        (S, State(Phase.CANARY, -1, 0), 200, 1, UNSURE, None, PAUSED_CANARY, 1, False, ["GateInconclusive"]),
        # ... suspended while it waits when the spec says so
        (HOLD, State(Phase.CANARY, -1, 0), 200, 1, UNSURE, None,
         PAUSED_CANARY, 1, True, ["GateInconclusive"]),
        # a failure among inconclusive gates is a failure
        (S, State(Phase.CANARY, -1, 0), 200, 1, Report((*UNSURE.results, *FAIL.results)), None,
         State(Phase.HALTED, -1, 0, halted_from=Phase.CANARY, halted_generation=1), 1, True, ["GateFailed"]),
        # Paused waits for a person, whatever the steps: the gates are not judged again
        (S, PAUSED_CANARY, 5000, 1, None, None, PAUSED_CANARY, 1, False, []),
        (HOLD, PAUSED_CANARY, 5000, 1, None, None, PAUSED_CANARY, 1, True, []),
        # approved: the promotion continues as if the gates had passed (no judgement)
        (S, PAUSED_CANARY, 250, 1, None, APPROVE,
         State(Phase.PROMOTING, 0, 250, consumed_decision="t1"), 2, False, ["Approved", "GatesPassed"]),
        # rejected: halted, as a failed gate; a new generation re-judges it, as any halt
        (S, PAUSED_CANARY, 250, 3, None, REJECT,
         State(Phase.HALTED, -1, 0, halted_from=Phase.CANARY, halted_generation=3, consumed_decision="t2"),
         1, True, ["Rejected"]),
        # a decision already acted on is not acted on again
        (S, State(**{**PAUSED_CANARY.__dict__, "consumed_decision": "t1"}), 250, 1, None, APPROVE,
         State(**{**PAUSED_CANARY.__dict__, "consumed_decision": "t1"}), 1, False, []),
        # a decision while not Paused is consumed and recorded as Ignored, never kept for a later pause
        (S, State(Phase.RUNNING, 2, 600), 700, 1, None, APPROVE,
         State(Phase.RUNNING, 2, 600, consumed_decision="t1"), 8, False, ["DecisionIgnored"]),
        (S, State(Phase.CANARY, -1, 0), 200, 1, UNSURE, APPROVE,
         State(**{**PAUSED_CANARY.__dict__, "consumed_decision": "t1"}), 1, False,
         ["DecisionIgnored", "GateInconclusive"]),
        # spec.suspend wins over an approval
        (SUSPENDED, PAUSED_CANARY, 250, 2, None, APPROVE,
         State(Phase.HALTED, -1, 0, halted_from=Phase.PAUSED, halted_generation=2, paused_from=Phase.CANARY,
               pause_reason="Inconclusive", consumed_decision="t1"),
         1, True, ["DecisionIgnored", "Suspended"]),
        # approval before 100%: 25% -> 50% goes on, 50% -> 100% pauses with the gates passed
        (GATE_100, State(Phase.PROMOTING, 0, 200), 400, 1, PASS, None,
         State(Phase.PROMOTING, 1, 400), 4, False, ["GatesPassed"]),
        (GATE_100, State(Phase.PROMOTING, 1, 400), 600, 1, PASS, None,
         PAUSED_50, 4, False, ["ApprovalRequired"]),
        (GATE_100, PAUSED_50, 650, 1, None, APPROVE,
         State(Phase.RUNNING, 2, 650, consumed_decision="t1"), 8, False, ["Approved", "Promoted"]),
        (GATE_100, PAUSED_50, 650, 1, None, REJECT,
         State(Phase.HALTED, 1, 400, halted_from=Phase.PROMOTING, halted_generation=1,
               consumed_decision="t2"),
         4, True, ["Rejected"]),
        # requiredFor names the contexts: a staging job is not asked
        (STAGING_100, State(Phase.PROMOTING, 1, 400), 600, 1, PASS, None,
         State(Phase.RUNNING, 2, 600), 8, False, ["Promoted"]),
        # one approval of an Inconclusive stage also covers the approval its next stage asks for
        (GATE_50_100, PAUSED_25, 450, 1, None, APPROVE,
         State(Phase.PROMOTING, 1, 450, consumed_decision="t1"), 4, False, ["Approved", "GatesPassed"]),
        # a failing gate halts before any approval is asked
        (GATE_100, State(Phase.PROMOTING, 1, 400), 600, 1, FAIL, None,
         State(Phase.HALTED, 1, 400, halted_from=Phase.PROMOTING, halted_generation=1),
         4, True, ["GateFailed"]),
        # a halted job re-judged by a new generation that is still Inconclusive waits for a person again
        (S, State(Phase.HALTED, 0, 200, halted_from=Phase.PROMOTING, halted_generation=1), 450, 2, UNSURE,
         None, PAUSED_25, 2, False, ["GateInconclusive"]),
        # halted while Paused (spec.suspend), resumed: back to the same pause, never a pause of a pause
        (S, State(Phase.HALTED, -1, 0, halted_from=Phase.PAUSED, halted_generation=2,
                  paused_from=Phase.CANARY, pause_reason="Inconclusive"), 250, 3, PASS, None,
         State(**{**PAUSED_CANARY.__dict__, "stage_start_step": 250}), 1, False, ["Resumed"]),
        (HOLD, State(Phase.HALTED, -1, 0, halted_from=Phase.PAUSED, halted_generation=2,
                     paused_from=Phase.CANARY, pause_reason="Inconclusive"), 250, 3, UNSURE, None,
         PAUSED_CANARY, 1, True, ["GateInconclusive"]),
    ],
)  # fmt: skip
def test_transition(
    spec_: CarbonTrackedJobSpec, state: State, at_step: int, generation: int, report: Report | None,
    person: PersonDecision | None, want: State, replicas: int, suspend: bool, reasons: list[str],
) -> None:  # fmt: skip
    d = step(
        spec_, state, global_step=at_step, generation=generation,
        judge=(lambda: report) if report is not None else boom, over_budget=lambda: None, person=person,
    )  # fmt: skip
    assert (d.state, d.replicas, d.suspend) == (want, replicas, suspend)
    assert [e.reason for e in d.events] == reasons


def test_decisions_are_recorded_with_who_why_when_and_where() -> None:
    approved = step(S, PAUSED_CANARY, global_step=250, generation=1, judge=boom, over_budget=lambda: None,
                    person=APPROVE)  # fmt: skip
    assert approved.record == DecisionRecord(
        decision="Approved", by="alice", reason="fine for this data", at=AT, stage="canary", phase="Paused"
    )
    assert approved.events[0].message == "approved by alice at stage canary: fine for this data"
    rejected = step(GATE_100, PAUSED_50, global_step=650, generation=1, judge=boom, over_budget=lambda: None,
                    person=REJECT)  # fmt: skip
    assert rejected.record == DecisionRecord(
        decision="Rejected", by="bob", reason="long-context regression", at=AT, stage="50%", phase="Paused"
    )
    assert (rejected.events[0].type, rejected.events[0].message) == (
        "Warning",
        "rejected by bob at stage 50%: long-context regression",
    )
    ignored = step(S, State(Phase.RUNNING, 2, 600), global_step=700, generation=1, judge=boom,
                   over_budget=lambda: None, person=APPROVE)  # fmt: skip
    assert ignored.record is not None and (ignored.record.decision, ignored.record.stage) == (
        "Ignored",
        "100%",
    )
    assert ignored.events[0].message == "approval by alice ignored: the job is Running, not Paused"


def test_pause_events_say_what_to_do() -> None:
    d = step(S, State(Phase.CANARY, -1, 0), global_step=200, generation=1, judge=lambda: UNSURE,
             over_budget=lambda: None)  # fmt: skip
    assert d.events[0].message == (
        "quality.score: eval_accuracy 0.83 is between 0.8 and 0.85; "
        "approve or reject with `carbontrack approve|reject NAME --reason ...`"
    )
    d = step(GATE_100, State(Phase.PROMOTING, 1, 400), global_step=600, generation=1, judge=lambda: PASS,
             over_budget=lambda: None)  # fmt: skip
    assert d.events[0].message == (
        "gates passed; scaling to 100% needs a person's approval: "
        "approve or reject with `carbontrack approve|reject NAME --reason ...`"
    )


# --- the gate's verdicts --------------------------------------------------------------------------


def _quality(value: float, higher: bool = True) -> GateResult:
    bounds = {"minScore": 0.8, "passScore": 0.85} if higher else {"minScore": 2.0, "passScore": 1.5}
    s = spec({"quality": {"metric": "m", "higherIsBetter": higher, **bounds}})
    return judge(s, Evidence(metrics={"m": value})).results[0]


@pytest.mark.parametrize(
    ("value", "higher", "verdict", "threshold", "message"),
    [
        (0.79, True, "Failed", 0.8, "m 0.79 < 0.8"),
        (0.8, True, "Inconclusive", 0.85, "m 0.8 is between 0.8 and 0.85: inconclusive, a person decides"),
        (0.84, True, "Inconclusive", 0.85, "m 0.84 is between 0.8 and 0.85: inconclusive, a person decides"),
        (0.85, True, "Passed", 0.85, "m 0.85 >= 0.85"),
        (0.9, True, "Passed", 0.85, "m 0.9 >= 0.85"),
        (2.1, False, "Failed", 2.0, "m 2.1 > 2"),
        (1.7, False, "Inconclusive", 1.5, "m 1.7 is between 1.5 and 2: inconclusive, a person decides"),
        (1.5, False, "Passed", 1.5, "m 1.5 <= 1.5"),
    ],
)
def test_pass_score_makes_an_inconclusive_band(
    value: float, higher: bool, verdict: str, threshold: float, message: str
) -> None:
    r = _quality(value, higher)
    assert (r.name, r.verdict, r.passed, r.observed, r.threshold, r.message) == (
        "quality.score",
        verdict,
        verdict == "Passed",
        value,
        threshold,
        message,
    )


def test_without_pass_score_nothing_is_inconclusive() -> None:
    r = judge(spec({"quality": {"metric": "m", "minScore": 0.8}}), Evidence(metrics={"m": 0.8})).results[0]
    assert (r.verdict, r.passed) == ("Passed", True)


def test_report_verdict_and_summary() -> None:
    assert (PASS.verdict(), PASS.summary()) == ("Passed", "1/1 passed")
    assert (UNSURE.verdict(), UNSURE.summary()) == ("Inconclusive", "quality.score inconclusive")
    both = Report((*UNSURE.results, *FAIL.results))
    assert (both.verdict(), both.summary()) == ("Failed", "quality.score failed")
    error = Report((GateResult(name="p", passed=False, verdict="Error"),))
    assert (error.verdict(), error.summary(), [r.name for r in error.failed()]) == (
        "Error",
        "p error",
        ["p"],
    )


def test_gate_result_verdict_defaults_from_passed_and_must_agree() -> None:
    assert GateResult(name="a", passed=True).verdict == "Passed"
    assert GateResult(name="a", passed=False).verdict == "Failed"
    with pytest.raises(ValueError, match="passed must equal verdict == Passed"):
        GateResult(name="a", passed=True, verdict="Inconclusive")


# --- the annotation -------------------------------------------------------------------------------


def _managed(key: str, manager: str, time: str) -> dict[str, Any]:
    return {
        "manager": manager, "operation": "Update", "time": time, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{key}": {}}}},
    }  # fmt: skip


def test_the_cli_value_names_the_user_it_read() -> None:
    annotations = {APPROVE_ANNOTATION: annotation_value("system:admin", "looks right")}
    managed = [_managed(APPROVE_ANNOTATION, "carbontrack-cli", "2026-12-01T22:00:00Z")]
    d = person_decision(annotations, managed, AT)
    assert d is not None and (d.approve, d.by, d.reason, d.at) == (True, "system:admin", "looks right", AT)
    assert annotations[APPROVE_ANNOTATION] == '{"by":"system:admin","reason":"looks right"}'


def test_a_bare_annotation_is_recorded_with_its_field_manager() -> None:
    managed = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "time": "2026-12-01T21:00:00Z",
         "fieldsV1": {"f:spec": {}}},
        _managed(REJECT_ANNOTATION, "kubectl-annotate", "2026-12-01T22:00:05Z"),
    ]  # fmt: skip
    d = person_decision({REJECT_ANNOTATION: "too slow"}, managed, AT)
    assert d is not None and (d.approve, d.by, d.reason) == (
        False,
        "kubectl-annotate (Update at 2026-12-01T22:00:05Z; user not recorded)",
        "too slow",
    )


def test_rejection_wins_over_approval_and_each_setting_is_a_new_decision() -> None:
    both = {APPROVE_ANNOTATION: "yes", REJECT_ANNOTATION: "no"}
    d = person_decision(both, [], AT)
    assert d is not None and (d.approve, d.reason, d.by) == (
        False,
        "no",
        "unknown (no managedFields entry; user not recorded)",
    )
    first = person_decision({APPROVE_ANNOTATION: "ok"}, [_managed(APPROVE_ANNOTATION, "k", "T1")], AT)
    again = person_decision({APPROVE_ANNOTATION: "ok"}, [_managed(APPROVE_ANNOTATION, "k", "T2")], AT)
    assert first is not None and again is not None and first.token != again.token
    assert person_decision({"other": "x"}, None, AT) is None


# --- the judgement and status -------------------------------------------------------------------


def _paused_inputs(**kw: Any) -> Inputs:
    base: dict[str, Any] = {"state": PAUSED_CANARY, "spec": S}
    base.update(kw)
    return inputs(canary_aggregate(), **base)


def test_a_paused_job_keeps_its_scale_and_reports_not_ready() -> None:
    unsure = spec({"quality": {"metric": "eval_accuracy", "minScore": 0.8, "passScore": 0.9}},
                  canary={"replicas": 1, "minSteps": 10, "stages": [50, 100]})  # fmt: skip
    plan = evaluate(inputs(canary_aggregate(), spec=unsure))
    assert plan.decision.state.phase == Phase.PAUSED and plan.scale is None
    assert plan.conditions[0].type == "Ready" and plan.conditions[0].status is False
    assert plan.conditions[0].reason == "GateInconclusive"
    assert plan.decision.report is not None and plan.decision.report.summary() == "quality.score inconclusive"
    held = evaluate(inputs(canary_aggregate(), spec=unsure.model_copy(
        update={"gates": unsure.gates.model_copy(update={"suspend_when_paused": True})})))  # fmt: skip
    assert held.scale == JobScale(1, True)


def test_an_acted_on_decision_is_cleared_and_recorded_in_status() -> None:
    plan = evaluate(_paused_inputs(person=APPROVE))
    assert plan.clear_decision is True and plan.decision.state.consumed_decision == "t1"
    patch = st.plan_update({}, S, plan, "j")
    assert patch["phase"] == "Promoting"
    assert patch["decisions"] == [
        {"decision": "Approved", "by": "alice", "reason": "fine for this data", "at": "2026-12-01T22:00:00Z",
         "stage": "canary", "phase": "Paused"}
    ]  # fmt: skip
    assert patch["promotion"]["consumedDecision"] == "t1"
    # the history keeps the last 10
    old = [dict(patch["decisions"][0], reason=str(i)) for i in range(10)]
    again = st.plan_update({"decisions": old}, S, plan, "j")
    assert len(again["decisions"]) == 10 and again["decisions"][0]["reason"] == "1"
    # a consumed one still on the object (the removal was lost) is cleared, not acted on again
    stale = evaluate(_paused_inputs(state=State(**{**PAUSED_CANARY.__dict__, "consumed_decision": "t1"}),
                                    person=APPROVE))  # fmt: skip
    assert stale.clear_decision is True and stale.decision.state.phase == Phase.PAUSED
    assert stale.decision.record is None


def test_promotion_state_round_trips_through_status() -> None:
    state = State(Phase.PAUSED, 1, 400, paused_from=Phase.PROMOTING, pause_reason="ApprovalRequired",
                  consumed_decision="abc")  # fmt: skip
    stored = st.parse({"phase": "Paused", "promotion": st.promotion_status(state).to_api()})
    assert st.promotion_state(stored) == state
