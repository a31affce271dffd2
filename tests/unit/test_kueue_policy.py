"""Kueue rules: queueing from labels, the full-size spec without elastic Jobs, the budget verdict."""

from __future__ import annotations

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec, CarbonTrackedJobStatus, Projection
from carbontrack.core.events import ConditionUpdate
from carbontrack.core.scheduling import kueue as kp
from tests.cases.crs import merged_spec, valid_spec

SPEC = CarbonTrackedJobSpec.model_validate(valid_spec())
QUEUE = {kp.QUEUE_LABEL: "team-a"}
ELASTIC = {kp.ELASTIC_ANNOTATION: "true"}


@pytest.mark.parametrize(
    ("labels", "annotations", "enabled", "expected"),
    [
        (None, None, True, None),
        ({"app": "x"}, ELASTIC, True, None),
        ({kp.QUEUE_LABEL: ""}, None, True, None),
        (QUEUE, None, True, kp.Queueing("team-a", elastic=False)),
        (QUEUE, ELASTIC, False, kp.Queueing("team-a", elastic=False)),
        (QUEUE, {kp.ELASTIC_ANNOTATION: "yes"}, True, kp.Queueing("team-a", elastic=False)),
        (QUEUE, ELASTIC, True, kp.Queueing("team-a", elastic=True)),
    ],
)
def test_queueing_needs_the_label_and_elastic_needs_annotation_and_gate(
    labels: dict[str, str] | None,
    annotations: dict[str, str] | None,
    enabled: bool,
    expected: kp.Queueing | None,
) -> None:
    assert kp.queueing(labels, annotations, enabled) == expected


def test_job_metadata_copies_only_kueue_keys() -> None:
    labels = {**QUEUE, kp.PRIORITY_LABEL: "high", "team": "a"}
    annotations = {**ELASTIC, "note": "x"}
    assert kp.job_metadata(labels, annotations) == (
        {kp.QUEUE_LABEL: "team-a", kp.PRIORITY_LABEL: "high"},
        {kp.ELASTIC_ANNOTATION: "true"},
    )


def test_not_elastic_makes_the_canary_the_full_job_with_one_stage() -> None:
    spec = CarbonTrackedJobSpec.model_validate(
        valid_spec(gates={**valid_spec()["gates"], "approval": {"stages": [50, 100]}})
    )
    out = kp.effective_spec(spec, kp.Queueing("q", elastic=False))
    assert (out.canary.replicas, out.canary.stages, out.canary.min_steps) == (8, [100], 200)
    assert out.gates.approval is not None and out.gates.approval.stages == [100]
    assert spec.canary.replicas == 1  # the original is untouched


@pytest.mark.parametrize(
    ("current", "changes", "expected"),
    [
        (None, {"a": "1"}, {"a": "1"}),
        (
            {"kueue.x-k8s.io/workload": "s1", "a": "1"},
            {"kueue.x-k8s.io/workload": None, "a": "2"},
            {"a": "2"},
        ),
        ({"b": "x"}, {"gone": None}, {"b": "x"}),
    ],
)
def test_workload_annotations_apply_a_merge_patch(
    current: dict[str, str] | None, changes: dict[str, str | None], expected: dict[str, str]
) -> None:
    assert kp.workload_annotations(current, changes) == expected


def _slice(
    name: str, *, active: bool = False, finished: bool = False, quota: bool = False
) -> kp.WorkloadView:
    return kp.WorkloadView(name, active=active, admitted=quota, finished=finished, holds_quota=quota)


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        ((), None),
        ((_slice("s1"),), None),  # halted, quota released: the resume writes
        ((_slice("s1", finished=True, quota=True), _slice("s2", quota=True)), "s2"),  # Kueue still evicts s2
        ((_slice("s1", finished=True, quota=True), _slice("s2")), None),  # a replaced slice never blocks
        ((_slice("s2", active=True, quota=True),), None),  # running: not a halted slice
    ],
)
def test_a_resume_waits_for_a_halted_workload_to_release_its_quota(
    slices: tuple[kp.WorkloadView, ...], expected: str | None
) -> None:
    assert kp.workload_releasing_quota(slices) == expected


@pytest.mark.parametrize("q", [None, kp.Queueing("q", elastic=True)])
def test_unqueued_or_elastic_keeps_the_stages(q: kp.Queueing | None) -> None:
    assert kp.effective_spec(SPEC, q) is SPEC


def test_canary_condition_says_what_still_applies() -> None:
    assert kp.canary_condition(SPEC, None) is None
    c = kp.canary_condition(SPEC, kp.Queueing("team-a", elastic=False))
    assert c is not None and (c.type, c.status, c.reason) == ("CanaryStages", False, "KueueNotElastic")
    assert "full size (8 workers)" in c.message and "gates are still judged" in c.message
    e = kp.canary_condition(SPEC, kp.Queueing("team-a", elastic=True))
    assert e is not None and (e.status, e.reason) == (True, "KueueElastic")


def _spec(**carbon: object) -> CarbonTrackedJobSpec:
    return CarbonTrackedJobSpec.model_validate(merged_spec(carbon={"pue": 1.5, **carbon}, totalSteps=10000))


# 360 J/step x 10000 steps x PUE 1.5 = 5.4 MJ = 1.5 kWh; at 400 g/kWh: 600 g
@pytest.mark.parametrize(
    ("spec", "status", "ready", "message"),
    [
        (
            _spec(budgetKg=0.5, expectedJoulesPerStep=360),
            CarbonTrackedJobStatus(),
            False,
            "projected emissions 0.6 kg > budget 0.5 kg (declared 360 J/step x 10000 steps x PUE 1.5 "
            "at 400 gCO2e/kWh (static:DE))",
        ),
        (
            _spec(budgetKg=0.7, expectedJoulesPerStep=360),
            CarbonTrackedJobStatus(),
            True,
            "within budget: epsilon not projectable before the trainer reports DP-SGD parameters; "
            "projected emissions 0.6 kg <= 0.7 kg (declared 360 J/step x 10000 steps x PUE 1.5 "
            "at 400 gCO2e/kWh (static:DE))",
        ),
        (
            _spec(budgetKg=0.7),
            CarbonTrackedJobStatus(),
            True,
            "within budget: epsilon not projectable before the trainer reports DP-SGD parameters; "
            "no emissions estimate before the canary (set carbon.expectedJoulesPerStep)",
        ),
        (  # the measured projection wins over the declaration
            _spec(budgetKg=0.7, expectedJoulesPerStep=1),
            CarbonTrackedJobStatus(projected=Projection(emissions_grams=800.0, epsilon=2.0)),
            False,
            "projected emissions 0.8 kg > budget 0.7 kg (measured rate)",
        ),
        (
            _spec(budgetKg=0.7),
            CarbonTrackedJobStatus(emissions_grams=701.0, epsilon=9.0),
            False,
            "privacy budget spent: epsilon 9 > 8; carbon budget spent: 0.701 kg > 0.7 kg",
        ),
        (
            _spec(budgetKg=0.7),
            CarbonTrackedJobStatus(projected=Projection(epsilon=8.5)),
            False,
            "projected epsilon 8.5 > budget 8",
        ),
    ],
)
def test_admission_verdict(
    spec: CarbonTrackedJobSpec, status: CarbonTrackedJobStatus, ready: bool, message: str
) -> None:
    assert kp.admission_verdict(spec, status, 400.0, "static:DE") == kp.Verdict(ready, message)


def test_no_budget_is_ready() -> None:
    spec = CarbonTrackedJobSpec.model_validate(
        valid_spec(carbon={"zone": "DE"}, gates={"context": "development"})
    )
    assert kp.admission_verdict(spec, CarbonTrackedJobStatus(), 400.0, "x") == kp.Verdict(
        True, "no carbon or privacy budget to check"
    )


def test_admission_condition_mirrors_our_check_on_the_live_workload() -> None:
    ours = frozenset({"budget"})
    done = kp.WorkloadView("old", active=True, admitted=True, finished=True,
                           checks=(kp.CheckState("budget", "Ready", "fine"),))  # fmt: skip
    live = kp.WorkloadView(
        "job-x-1", active=False, admitted=False, finished=False,
        checks=(kp.CheckState("other", "Ready", ""), kp.CheckState("budget", "Rejected", "too much")),
    )  # fmt: skip
    assert kp.admission_condition((done, live), ours) == ConditionUpdate(
        "BudgetAdmission", False, "CheckRejected", "workload job-x-1, check budget: too much"
    )
    assert kp.admission_condition((live,), frozenset({"none"})) is None


def test_workload_view_reads_active_admitted_finished_and_checks() -> None:
    from carbontrack.integrations.kueue.client import view

    wl = {
        "metadata": {"name": "job-a-1"},
        "spec": {"active": False},
        "status": {
            "conditions": [
                {"type": "Admitted", "status": "True"},
                {"type": "Finished", "status": "False"},
                {"type": "QuotaReserved", "status": "True"},
            ],
            "admissionChecks": [{"name": "budget", "state": "Rejected", "message": "m"}],
        },
    }
    assert view(wl) == kp.WorkloadView(
        "job-a-1",
        active=False,
        admitted=True,
        finished=False,
        checks=(kp.CheckState("budget", "Rejected", "m"),),
        holds_quota=True,
    )
    assert view({"metadata": {"name": "w"}}) == kp.WorkloadView(
        "w", active=True, admitted=False, finished=False
    )


@pytest.mark.parametrize(
    ("carbon", "default_zone", "expected"),
    [
        ({"zone": "DE", "intensity": {"gramsPerKwh": 123}}, "", (123.0, "override")),
        ({"zone": "DE"}, "FR", ("DE",)),
        ({}, "FR", ("FR",)),
        ({}, "", (481.0, "world average: no zone before the pods are placed")),
    ],
)
def test_pre_admission_intensity_override_then_zone_then_world_average(
    carbon: dict[str, object], default_zone: str, expected: tuple[object, ...]
) -> None:
    from carbontrack.integrations.kueue.client import pre_admission_intensity
    from carbontrack.intensity import static
    from carbontrack.state.config import OperatorConfig

    spec = CarbonTrackedJobSpec.model_validate(valid_spec(carbon=carbon))
    got = pre_admission_intensity(spec, OperatorConfig(default_zone=default_zone))
    if len(expected) == 1:  # a zone: the static table's own figure and source
        found = static.lookup(str(expected[0]))
        assert got == (found.g_per_kwh, found.source)
    else:
        assert got == expected


def test_a_queued_job_on_a_cluster_without_kueue_is_refused_saying_why() -> None:
    queued = kp.Queueing("team-a", elastic=False)
    message = kp.kueue_missing(queued, served=False)
    assert message is not None
    assert message.startswith(
        "labelled kueue.x-k8s.io/queue-name=team-a, but this cluster serves no Kueue API"
    )
    assert "run unqueued" in message and "remove the label" in message
    assert kp.kueue_missing(queued, served=True) is None
    assert kp.kueue_missing(None, served=False) is None  # an unqueued job needs no Kueue
