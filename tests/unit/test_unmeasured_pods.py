"""A running pod that never reports fails the carbon gates and the budget watch closed outside
development: one judgement, evaluated with exact values.

The canary of tests.cases.evaluation is pod p0 at step 12, 300 J/step: alone it projects 600 g at step
20000. With a 1 kg budget, a judgement that took p0 for the whole job would pass a two-pod canary that
really projects twice that.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.rollout.coverage import RunningPod
from carbontrack.core.rollout.evaluation import JobScale, Plan, evaluate
from carbontrack.core.rollout.promotion import State
from tests.cases.crs import valid_spec
from tests.cases.evaluation import canary_aggregate, inputs

NOW = dt.datetime.fromtimestamp(2000.0, dt.UTC)
TWO_PODS = (RunningPod("p0", 1000.0), RunningPod("p1", 1000.0))
SILENT = (
    "1 running pod(s) unmeasured (p1): no telemetry counted from them, so the job's energy is a lower bound"
)


def spec(context: str = "production", **carbon: Any) -> CarbonTrackedJobSpec:
    raw = valid_spec(canary={"replicas": 2, "minSteps": 10, "stages": [50, 100]})
    raw["gates"]["context"] = context
    raw["carbon"].update({"budgetKg": 1, **carbon})
    return CarbonTrackedJobSpec.model_validate(raw)


def judged(job: CarbonTrackedJobSpec, pods: tuple[RunningPod, ...] | None = TWO_PODS, **kw: Any) -> Plan:
    base: dict[str, Any] = {"pods": pods, "measurement_grace_s": 35.0, "now": NOW, "replicas": 2}
    return evaluate(inputs(canary_aggregate(), job, **{**base, **kw}))


def carbon(plan: Plan) -> Any:
    assert plan.decision.report is not None
    return next(r for r in plan.decision.report.results if r.name == "carbon.budget")


def test_before_it_the_reporting_pod_alone_passed_the_gate() -> None:
    """Pods not listed: the judgement as it was, p0 taken for the whole job (600 g <= 1000 g)."""
    plan = judged(spec(), pods=None)
    assert carbon(plan).passed and plan.decision.state.phase == Phase.PROMOTING


@pytest.mark.parametrize("context", ["production", "staging"])
def test_a_silent_pod_halts_the_canary_naming_it(context: str) -> None:
    plan = judged(spec(context))
    result = carbon(plan)
    assert (result.passed, result.warning) == (False, False)
    assert result.message == f"{SILENT}: failing closed"
    assert plan.decision.state.phase == Phase.HALTED and plan.scale == JobScale(2, True)
    assert plan.pod_coverage is not None and plan.pod_coverage.unmeasured_names() == ("p1",)
    assert plan.projected is not None and plan.projected.emissions_grams == 0.36 + 2 * (600.0 - 0.36)


def test_development_passes_with_a_warning_and_projects_for_both_pods() -> None:
    plan = judged(spec("development"))
    result = carbon(plan)
    assert (result.passed, result.warning, result.message) == (True, True, SILENT)
    assert plan.decision.state.phase == Phase.PROMOTING
    assert plan.projected is not None and plan.projected.energy_joules == 3600.0 + 2 * 5_996_400.0


def test_the_per_point_gate_fails_closed_too() -> None:
    plan = judged(spec(maxGramsPerMetricPoint=1e9))
    assert plan.decision.report is not None
    per_point = next(r for r in plan.decision.report.results if r.name == "carbon.perMetricPoint")
    assert not per_point.passed and per_point.message == f"{SILENT}: failing closed"


def test_a_stage_waits_while_a_pod_awaits_its_first_batch() -> None:
    """p1 started 20 s ago, within the 35 s grace: the carbon gate is not judged on p0 alone."""
    young = (RunningPod("p0", 1000.0), RunningPod("p1", 1980.0))
    plan = judged(spec(), pods=young)
    assert plan.decision.report is None and plan.decision.state == State(Phase.CANARY, -1, 0)
    assert plan.scale is None and plan.conditions == () and plan.events == ()
    # development does not wait: judged now, on a projection that stands p0 for both pods
    development = carbon(judged(spec("development"), pods=young))
    assert not development.passed and development.observed == 0.36 + 2 * (600.0 - 0.36)


def test_no_carbon_gate_no_wait() -> None:
    raw = valid_spec(canary={"replicas": 2, "minSteps": 10, "stages": [50, 100]})
    del raw["carbon"]["budgetKg"]
    job = CarbonTrackedJobSpec.model_validate(raw)
    plan = judged(job, pods=(RunningPod("p0", 1000.0), RunningPod("p1", 1980.0)))
    assert plan.decision.state.phase == Phase.PROMOTING


def test_the_condition_and_one_event_name_the_pod() -> None:
    plan = judged(spec())
    condition = next(c for c in plan.conditions if c.type == "PodsMeasured")
    assert (condition.status, condition.reason) == (False, "PodsUnmeasured")
    assert condition.message == (
        "1 running pod(s) unmeasured: p1: no telemetry batch accepted within 35 s of their start, so the "
        "job's energy is a lower bound and the carbon gates and the budget watch fail closed; check the "
        "pods' carbontrack-sidecar container (its logs) and that it can reach the operator"
    )
    assert [(e.type, e.reason, e.message) for e in plan.events if e.reason == "PodsUnmeasured"] == [
        ("Warning", "PodsUnmeasured", condition.message)
    ]
    again = judged(spec(), pods_warned=condition.message)
    assert not [e for e in again.events if e.reason == "PodsUnmeasured"]
    assert [c.message for c in again.conditions if c.type == "PodsMeasured"] == [condition.message]


def test_the_condition_turns_true_when_every_pod_reports_and_is_untouched_when_pods_are_not_listed() -> None:
    measured = judged(spec(), pods=(RunningPod("p0", 1000.0),), pods_warned="an older message")
    ok = [(c.status, c.reason) for c in measured.conditions if c.type == "PodsMeasured"]
    assert ok == [(True, "AllPodsReporting")]
    assert not [
        c for c in judged(spec(), pods=(RunningPod("p0", 1000.0),)).conditions if c.type == "PodsMeasured"
    ]
    assert not [c for c in judged(spec(), pods=None, pods_warned="x").conditions if c.type == "PodsMeasured"]


def test_running_with_an_unmeasured_pod_halts_outside_development() -> None:
    running = {"state": State(Phase.RUNNING, 1, 20), "replicas": 8}
    plan = judged(spec(), **running)
    assert plan.decision.state.phase == Phase.HALTED and plan.scale == JobScale(8, True)
    ready = next(c for c in plan.conditions if c.type == "Ready")
    assert ready.message == (
        "carbon budget not watched: 1 running pod(s) unmeasured (p1), so 0.00036 kg so far is a lower "
        "bound of 1 kg: failing closed"
    )
    assert judged(spec("development"), **running).decision.state.phase == Phase.RUNNING


def test_a_restarted_operator_gives_every_silent_pod_the_grace_again() -> None:
    plan = judged(spec(), watched_since=1990.0)
    assert plan.decision.report is None and plan.decision.state.phase == Phase.CANARY


def test_a_pod_whose_sidecar_boot_is_held_out_is_unmeasured_and_halts_the_canary_naming_why() -> None:
    """Telemetry was accepted from p0, but a boot of it (its restarted sidecar) has been refused a place
    (429 live-boots) from 1870 to 1990, two live windows, while other boots of the pod stay live: p0's
    energy is not being counted, so it is unmeasured and the production canary halts."""
    agg = canary_aggregate()
    for at in (1870.0, 1900.0, 1930.0, 1960.0, 1990.0):
        agg.held_out.refused("p0", "restarted-sidecar", at, agg.limits.live_window_s)
    one = (RunningPod("p0", 1000.0),)
    job = spec()
    plan = evaluate(inputs(agg, job, pods=one, measurement_grace_s=35.0, now=NOW, replicas=2))
    assert carbon(plan).message == (
        "1 running pod(s) unmeasured (p0): no telemetry counted from them, so the job's energy is a lower "
        "bound: failing closed"
    )
    assert plan.decision.state.phase == Phase.HALTED
    condition = next(c for c in plan.conditions if c.type == "PodsMeasured")
    assert condition.message == (
        "1 running pod(s) unmeasured: p0: a sidecar boot refused a place (429 live-boots) for two live "
        "windows while other boots of the pod stay live, so the job's energy is a lower bound and the carbon "
        "gates and the budget watch fail closed; check the pods' carbontrack-sidecar container (its logs) "
        "and that it can reach the operator, and who holds the pod's token "
        "(status.telemetry.refused.liveBoots)"
    )
    # a boot refused for less than two windows is an honest restart waiting for its old boot to go quiet
    waiting = canary_aggregate()
    for at in (1880.0, 1990.0):
        waiting.held_out.refused("p0", "restarted-sidecar", at, waiting.limits.live_window_s)
    plan = evaluate(inputs(waiting, job, pods=one, measurement_grace_s=35.0, now=NOW, replicas=2))
    assert carbon(plan).passed and plan.pod_coverage is not None and plan.pod_coverage.unmeasured == ()
