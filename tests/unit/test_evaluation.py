"""One judgement as a pure function: exact plans from exact inputs, including after a restart."""

from __future__ import annotations

import pytest

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.gates.privacy import epsilon
from carbontrack.core.rollout.accountant import EpsilonQuery, epsilon_query
from carbontrack.core.rollout.evaluation import JobScale, evaluate, job_outcome
from carbontrack.core.rollout.promotion import State
from carbontrack.state import status as st
from tests.cases.crs import valid_spec
from tests.cases.evaluation import SPEC, canary_aggregate, inputs


def test_canary_with_passing_evidence_is_promoted_to_the_first_stage() -> None:
    plan = evaluate(inputs(canary_aggregate()))
    assert plan.decision.state.phase == Phase.PROMOTING
    assert plan.scale == JobScale(4, False)
    assert plan.decision.report is not None and plan.decision.report.summary() == "9/9 passed"
    assert plan.gauges.gates["quality.score"] is True and plan.gauges.phase == Phase.PROMOTING
    assert plan.epsilon == epsilon(1.1, 0.001, 12, 1e-5, "rdp")
    assert plan.projected is not None and plan.projected.epsilon == round(epsilon(1.1, 0.001, 20000, 1e-5), 6)
    assert len(plan.conditions) == 1 and (plan.conditions[0].reason, plan.conditions[0].status) == (
        "GatesPassed",
        True,
    )


def test_evidence_restored_from_status_gives_the_same_verdict_as_before_a_restart() -> None:
    """The operator is killed after the eval was acknowledged: status is all the next one has."""
    live = canary_aggregate()
    stored = st.parse(st.telemetry_update(live, st.Intensity(300.0, "DE", "static"), 1100.0)["status"])
    restored = st.restore(stored)
    assert (restored.evals, restored.dp, restored.energy_j) == (live.evals, live.dp, live.energy_j)
    before, after = evaluate(inputs(live)), evaluate(inputs(restored))
    assert after.decision == before.decision and after.decision.state.phase == Phase.PROMOTING


def test_without_the_restored_evidence_production_would_fail_closed() -> None:
    agg = canary_aggregate()
    agg.evals = {}
    plan = evaluate(inputs(agg))
    assert plan.decision.state.phase == Phase.HALTED and plan.scale == JobScale(1, True)
    assert plan.decision.report is not None and plan.decision.report.summary() == "quality.score failed (+1)"


@pytest.mark.parametrize(
    ("context", "phase", "passed", "warning"),
    [("production", Phase.HALTED, False, False), ("staging", Phase.HALTED, False, False),
     ("development", Phase.PROMOTING, True, True)],
)  # fmt: skip
def test_unmeasured_energy_fails_the_carbon_gate_closed_outside_development(
    context: str, phase: Phase, passed: bool, warning: bool
) -> None:
    raw = valid_spec(canary={"replicas": 1, "minSteps": 10, "stages": [50, 100]})
    raw["gates"]["context"] = context
    spec = CarbonTrackedJobSpec.model_validate(raw)
    plan = evaluate(inputs(canary_aggregate(method="unavailable"), spec))
    carbon = next(r for r in plan.decision.report.results if r.name == "carbon.budget")  # type: ignore[union-attr]
    assert (carbon.passed, carbon.warning, carbon.threshold) == (passed, warning, 40_000)
    assert "energy was not measured" in carbon.message
    assert plan.decision.state.phase == phase


def test_a_stage_still_counting_steps_judges_nothing_and_changes_nothing() -> None:
    plan = evaluate(inputs(canary_aggregate(step=5)))
    assert plan.decision.state == State(Phase.CANARY, -1, 0) and plan.scale is None
    assert plan.decision.report is None and plan.conditions == () and plan.gauges.gates == {}


def test_running_over_the_carbon_budget_so_far_halts() -> None:
    agg = canary_aggregate(step=500)
    agg.emissions_g = 40_001.0
    plan = evaluate(inputs(agg, state=State(Phase.RUNNING, 1, 20), replicas=8))
    assert plan.decision.state.phase == Phase.HALTED and plan.scale == JobScale(8, True)
    assert [c.message for c in plan.conditions] == ["carbon budget exceeded: 40 kg > 40 kg"]


def test_epsilon_query_uses_global_steps_and_the_spec_accountant() -> None:
    agg = canary_aggregate(step=12)
    assert epsilon_query(SPEC, agg) == EpsilonQuery(1.1, 0.001, 12, 20000, 1e-5, "rdp")
    no_privacy = CarbonTrackedJobSpec.model_validate(valid_spec(gates={"context": "development"}))
    assert epsilon_query(no_privacy, agg) is None


@pytest.mark.parametrize(
    ("conditions", "want"),
    [
        (None, None),
        ([{"type": "Suspended", "status": "True"}], None),
        ([{"type": "Complete", "status": "True"}], (Phase.SUCCEEDED, "the training Job completed")),
        ([{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}],
         (Phase.FAILED, "the training Job failed: BackoffLimitExceeded")),
        ([{"type": "Failed", "status": "False"}], None),
    ],
)  # fmt: skip
def test_job_outcome(conditions: list[dict[str, object]] | None, want: tuple[Phase, str] | None) -> None:
    assert job_outcome(conditions) == want


def test_an_unknown_zone_is_a_warning_once_and_a_condition_until_fixed() -> None:
    agg = canary_aggregate(step=5)
    first = evaluate(inputs(agg, zone="XX-TYPO", zone_known=False, intensity_g_per_kwh=481.0))
    message = (
        "grid zone 'XX-TYPO' is in no intensity table: emissions use the world average, 481 gCO2e/kWh; "
        "set spec.carbon.zone to a known zone"
    )
    assert [(c.type, c.status, c.reason, c.message) for c in first.conditions] == [
        ("ZoneResolved", False, "UnknownZone", message)
    ]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "UnknownZone")]
    again = evaluate(
        inputs(agg, zone="XX-TYPO", zone_known=False, zone_warned=True, intensity_g_per_kwh=481.0)
    )
    assert again.events == () and again.conditions == first.conditions
    fixed = evaluate(inputs(agg, zone="DE", zone_known=True, zone_warned=True))
    assert [(c.type, c.status, c.reason) for c in fixed.conditions] == [("ZoneResolved", True, "ZoneKnown")]
    assert evaluate(inputs(agg, zone="DE")).conditions == ()


def test_a_pld_epsilon_in_a_thread_leaves_the_event_loop_serving() -> None:
    """The handler runs EpsilonQuery.compute in a thread: PLD takes up to a second, telemetry goes on."""
    import asyncio
    import time

    query = EpsilonQuery(1.1, 0.01, 3000, 20000, 1e-5, "pld")

    async def run() -> tuple[float, float]:
        gaps: list[float] = []
        done = False

        async def ticker() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        await asyncio.to_thread(query.compute)
        took = time.perf_counter() - started
        done = True
        await tick
        return took, max(gaps)

    took, worst_gap = asyncio.run(run())
    assert worst_gap < max(0.25, took / 4), (took, worst_gap)  # the loop ran throughout


def test_telemetry_refused_for_room_is_a_condition_and_one_warning() -> None:
    agg = canary_aggregate(step=5)
    assert evaluate(inputs(agg)).conditions == ()
    agg.refused = {"too_many_pods": 3, "implausible": 1}
    first = evaluate(inputs(agg))
    message = (
        "telemetry refused for room: batches from pods beyond the 2000 a job's status holds; their energy "
        "is not in the totals (status.telemetry.refused counts the batches; their sidecars keep sending "
        "cumulative counters)"
    )
    assert [(c.type, c.status, c.reason, c.message) for c in first.conditions] == [
        ("TelemetryAccepted", False, "PodLimit", message)
    ]
    assert [(e.type, e.reason, e.message) for e in first.events] == [("Warning", "TelemetryRefused", message)]
    agg.refused["too_many_pods"] = 40  # more of the same: the same condition, no second Event
    again = evaluate(inputs(agg, telemetry_warned=True))
    assert again.conditions == first.conditions and again.events == ()
    agg.refused["status_full"] = 1
    both = evaluate(inputs(agg, telemetry_warned=True)).conditions
    assert [(c.reason, "524288 bytes" in c.message) for c in both] == [("StatusLimits", True)]
