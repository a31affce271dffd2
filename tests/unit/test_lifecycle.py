"""The reconcile's plan (the Job's suspend, the first phase, Ready) and the step each timer round runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec, HaltStatus
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.rollout.lifecycle import Round, phase_of, plan_reconcile, round_for
from tests.cases.crs import valid_spec

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ASKING = HaltStatus(requested_at=T0, deadline=T0 + dt.timedelta(minutes=5))
STOPPED = ASKING.model_copy(update={"suspended_at": T0, "outcome": "Checkpointed"})
RUNNING_READY = ConditionUpdate("Ready", True, "JobRunning", "1 of 8 workers")


def spec(**overrides: Any) -> CarbonTrackedJobSpec:
    return CarbonTrackedJobSpec.model_validate(valid_spec(**overrides))


SCHEDULED = {"carbon": {"zone": "DE", "schedule": {"maxGramsPerKwh": 200}}}


@pytest.mark.parametrize(
    ("overrides", "phase", "halt", "suspend", "first", "ready"),
    [
        ({}, None, None, False, Phase.PENDING, RUNNING_READY),
        ({}, Phase.INVALID, None, False, Phase.PENDING, RUNNING_READY),
        ({"suspend": True}, None, None, True, Phase.PENDING, RUNNING_READY),
        (SCHEDULED, None, None, True, Phase.DEFERRED,
         ConditionUpdate("Ready", False, "Deferred", "waiting for a clean grid (spec.carbon.schedule)")),
        # only the judgement stops running workers (after their checkpoint), and only it lifts a halt
        ({"suspend": True}, Phase.CANARY, None, False, None, RUNNING_READY),
        ({}, Phase.HALTED, ASKING, False, None, None),
        ({}, Phase.HALTED, STOPPED, True, None, None),
        ({}, Phase.HALTED, None, True, None, None),
        (SCHEDULED, Phase.DEFERRED, None, True, None, None),
        ({}, Phase.PAUSED, None, False, None, None),
        (SCHEDULED, Phase.RUNNING, None, False, None, RUNNING_READY),
    ],
)  # fmt: skip
def test_the_reconcile_plans_suspend_first_phase_and_ready(
    overrides: dict[str, Any],
    phase: Phase | None,
    halt: HaltStatus | None,
    suspend: bool,
    first: Phase | None,
    ready: ConditionUpdate | None,
) -> None:
    plan = plan_reconcile(spec(**overrides), phase, halt, None)
    assert plan is not None
    assert (plan.replicas, plan.suspend, plan.first_phase, plan.ready) == (1, suspend, first, ready)
    changed = Event("Normal", "PhaseChanged", f"phase {phase or 'none'} -> {first}")
    assert plan.events == (() if first is None else (changed,))


def test_the_job_keeps_the_scale_status_records() -> None:
    plan = plan_reconcile(spec(), Phase.PROMOTING, None, 4)
    assert plan is not None and plan.replicas == 4
    assert plan.ready == ConditionUpdate("Ready", True, "JobRunning", "4 of 8 workers")


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED])
def test_a_finished_job_is_not_reconciled(phase: Phase) -> None:
    assert plan_reconcile(spec(), phase, None, 8) is None


@pytest.mark.parametrize(
    ("phase", "seen", "usable", "step"),
    [
        (Phase.SUCCEEDED, True, None, Round.LOAD),
        (Phase.FAILED, False, None, Round.LOAD),
        (Phase.INVALID, True, None, Round.LOAD),
        (None, False, spec(), Round.WAIT),           # the reconcile has not created the Job yet
        (None, True, spec(), Round.JUDGE),           # its Pending patch was lost: judged as Pending
        (Phase.CANARY, True, None, Round.WAIT),      # a spec that cannot be used: the reconcile says why
        (Phase.CANARY, False, spec(), Round.JUDGE),
        (Phase.DEFERRED, True, spec(**SCHEDULED), Round.DEFER),
        (None, True, spec(**SCHEDULED), Round.DEFER),  # its Deferred patch was lost: never started past it
        (Phase.RUNNING, True, spec(**SCHEDULED), Round.JUDGE),
    ],
)  # fmt: skip
def test_each_timer_round_runs_one_step(
    phase: Phase | None, seen: bool, usable: CarbonTrackedJobSpec | None, step: Round
) -> None:
    assert round_for(phase, seen, usable) is step


def test_the_phase_kopf_hands_over_is_read_as_a_phase() -> None:
    assert (phase_of("Running"), phase_of(None), phase_of("")) == (Phase.RUNNING, None, None)
