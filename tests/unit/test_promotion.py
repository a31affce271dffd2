"""The promotion state machine, one row per transition."""

from __future__ import annotations

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec, GateResult
from carbontrack.core.gates.judgement import Report
from carbontrack.core.rollout.promotion import State, stage_replicas, step
from tests.cases.crs import valid_spec

PASS = Report((GateResult(name="quality.score", passed=True),))
FAIL = Report((GateResult(name="quality.score", passed=False, observed=0.7, threshold=0.8, message="bad"),))


def spec(**kw: object) -> CarbonTrackedJobSpec:
    # replicas 8, canary 1 replica, minSteps 200, stages 25/50/100
    return CarbonTrackedJobSpec.model_validate(valid_spec(**kw))


S = spec()


@pytest.mark.parametrize(
    (
        "state",
        "global_step",
        "generation",
        "report",
        "budget",
        "want_phase",
        "want_replicas",
        "want_suspend",
        "reason",
    ),
    [
        (State(), 0, 1, PASS, None, "Canary", 1, False, "CanaryStarted"),
        (State("Canary", -1, 0), 199, 1, PASS, None, "Canary", 1, False, None),
        (State("Canary", -1, 0), 200, 1, PASS, None, "Promoting", 2, False, "GatesPassed"),
        (State("Canary", -1, 0), 200, 1, FAIL, None, "Halted", 1, True, "GateFailed"),
        (State("Promoting", 0, 200), 399, 1, PASS, None, "Promoting", 2, False, None),
        (State("Promoting", 0, 200), 400, 1, PASS, None, "Promoting", 4, False, "GatesPassed"),
        (State("Promoting", 1, 400), 600, 1, PASS, None, "Running", 8, False, "Promoted"),
        (State("Promoting", 1, 400), 600, 1, FAIL, None, "Halted", 4, True, "GateFailed"),
        (State("Running", 2, 600), 5000, 1, PASS, None, "Running", 8, False, None),
        (State("Running", 2, 600), 5000, 1, PASS, "epsilon 8.1 > 8", "Halted", 8, True, "BudgetExceeded"),
        (State("Halted", 0, 200, "Promoting", 1), 450, 1, PASS, None, "Halted", 2, True, None),
        (State("Halted", 0, 200, "Promoting", 1), 450, 2, FAIL, None, "Halted", 2, True, "GateFailed"),
        (State("Halted", 0, 200, "Promoting", 1), 450, 2, PASS, None, "Promoting", 2, False, "Resumed"),
        (State("Succeeded", 2, 600), 9000, 3, FAIL, "x", "Succeeded", 8, False, None),
        (State("Failed", 0, 0), 10, 3, FAIL, "x", "Failed", 2, False, None),
    ],
)
def test_transition(
    state: State, global_step: int, generation: int, report: Report, budget: str | None,
    want_phase: str, want_replicas: int, want_suspend: bool, reason: str | None,
) -> None:  # fmt: skip
    d = step(
        S,
        state,
        global_step=global_step,
        generation=generation,
        judge=lambda: report,
        over_budget=lambda: budget,
    )
    assert (d.state.phase, d.replicas, d.suspend) == (want_phase, want_replicas, want_suspend)
    assert [e.reason for e in d.events] == ([reason] if reason else [])


def test_gates_are_not_judged_before_min_steps() -> None:
    def boom() -> Report:
        raise AssertionError("judged too early")

    step(S, State("Canary", -1, 100), global_step=299, generation=1, judge=boom, over_budget=lambda: None)


def test_user_suspend_halts_and_resume_re_judges() -> None:
    suspended = spec(suspend=True)
    d = step(
        suspended,
        State("Promoting", 0, 200),
        global_step=250,
        generation=2,
        judge=lambda: PASS,
        over_budget=lambda: None,
    )
    assert (d.state.phase, d.suspend, d.events[0].reason) == ("Halted", True, "Suspended")
    resumed = step(S, d.state, global_step=260, generation=3, judge=lambda: PASS, over_budget=lambda: None)
    assert (resumed.state.phase, resumed.suspend, resumed.state.stage_start_step) == ("Promoting", False, 260)


def test_stage_replicas_round_up_and_never_below_the_canary() -> None:
    s = spec(replicas=3, canary={"replicas": 2, "minSteps": 10, "stages": [10, 50, 100]})
    assert [stage_replicas(s, i) for i in (-1, 0, 1, 2)] == [2, 2, 2, 3]


def test_failed_gate_event_names_gate_observed_and_threshold() -> None:
    d = step(
        S, State("Canary", -1, 0), global_step=200, generation=1, judge=lambda: FAIL, over_budget=lambda: None
    )
    assert d.events[0].type == "Warning" and "quality.score: bad" in d.events[0].message
