"""Which running pods are measured: the pure rule of core.rollout.coverage, with exact values."""

from __future__ import annotations

from typing import Any

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.rollout.coverage import (
    Coverage,
    RunningPod,
    budget_unwatched,
    coverage,
    grace_s,
    named,
    projection,
    running_pod,
)
from tests.cases.crs import valid_spec
from tests.cases.evaluation import canary_aggregate

PODS = (RunningPod("p0", 1000.0), RunningPod("p1", 1000.0), RunningPod("p2", 1030.0))


def test_the_grace_is_two_status_intervals_plus_start_up() -> None:
    assert grace_s(10.0) == 35.0 and grace_s(1.0) == 17.0


def test_a_silent_pod_awaits_within_the_grace_and_is_unmeasured_after_it() -> None:
    cov = coverage(PODS, {"p0", "gone"}, now=1040.0, grace_s=35.0, watched_since=0.0)
    assert cov == Coverage(
        running=3, reporting=1, awaiting=("p2",), unmeasured=(RunningPod("p1", 1000.0),), grace_s=35.0
    )
    assert cov.unmeasured_names() == ("p1",) and cov.projection_scale() == 3.0
    at_the_edge = coverage(PODS, {"p0"}, now=1035.0, grace_s=35.0, watched_since=0.0)
    assert at_the_edge.unmeasured_names() == ("p1",) and at_the_edge.awaiting == ("p2",)
    just_before = coverage(PODS, {"p0"}, now=1034.9, grace_s=35.0, watched_since=0.0)
    assert just_before.unmeasured == () and just_before.awaiting == ("p1", "p2")


def test_after_a_restart_every_silent_pod_gets_the_grace_again() -> None:
    """A batch accepted but not yet in status comes again with the sidecar's next cumulative batch."""
    restarted = coverage(PODS, {"p0"}, now=1120.0, grace_s=35.0, watched_since=1100.0)
    assert restarted.unmeasured == () and restarted.awaiting == ("p1", "p2")
    later = coverage(PODS, {"p0"}, now=1135.0, grace_s=35.0, watched_since=1100.0)
    assert later.unmeasured_names() == ("p1", "p2")


def test_unmeasured_pods_are_listed_longest_silent_first() -> None:
    pods = (RunningPod("b", 1010.0), RunningPod("c", 1000.0), RunningPod("a", 1010.0))
    cov = coverage(pods, set(), now=2000.0, grace_s=35.0, watched_since=0.0)
    assert cov.unmeasured_names() == ("c", "a", "b") and cov.projection_scale() is None


@pytest.mark.parametrize(
    ("running", "reporting", "scale"),
    [(0, 0, 1.0), (2, 2, 1.0), (4, 1, 4.0), (3, 2, 1.5), (2, 0, None)],
)
def test_the_projection_scale_stands_the_reporting_pods_for_all(
    running: int, reporting: int, scale: float | None
) -> None:
    assert Coverage(running, reporting, (), (), 35.0).projection_scale() == scale


def test_a_projection_from_one_pod_of_two_is_scaled_to_both() -> None:
    """p0 steps at 300 J/step: 3600 J at step 12, 0.36 g at PUE 1.2 and 300 g/kWh."""
    agg = canary_aggregate()
    alone = projection(agg, None, 20000, 1.2, 300.0)
    assert alone is not None and (alone.energy_j, alone.emissions_g) == (6_000_000.0, 600.0)
    half = Coverage(2, 1, (), (RunningPod("p1", 1000.0),), 35.0)
    both = projection(agg, half, 20000, 1.2, 300.0)
    assert both is not None and both.energy_j == 3600.0 + 2 * 5_996_400.0
    assert both.emissions_g == 0.36 + 2 * (600.0 - 0.36) and both.emissions_upper_g == both.emissions_g
    assert projection(agg, Coverage(2, 0, (), (), 35.0), 20000, 1.2, 300.0) is None


@pytest.mark.parametrize(
    ("context", "budget_kg", "want"),
    [
        ("production", 1, "carbon budget not watched: 1 running pod(s) unmeasured (p1), so 0.00036 kg so far "
                          "is a lower bound of 1 kg: failing closed"),
        ("staging", 1, "carbon budget not watched: 1 running pod(s) unmeasured (p1), so 0.00036 kg so far "
                       "is a lower bound of 1 kg: failing closed"),
        ("development", 1, None),
        ("production", None, None),
    ],
)  # fmt: skip
def test_the_budget_watch_fails_closed_on_an_unmeasured_pod(
    context: str, budget_kg: float | None, want: str | None
) -> None:
    raw = valid_spec()
    raw["gates"]["context"] = context
    raw["carbon"]["budgetKg"] = budget_kg
    if budget_kg is None:
        del raw["carbon"]["budgetKg"]
    spec = CarbonTrackedJobSpec.model_validate(raw)
    cov = Coverage(2, 1, (), (RunningPod("p1", 1000.0),), 35.0)
    assert budget_unwatched(cov, 0.36, spec) == want
    assert budget_unwatched(Coverage(2, 2, (), (), 35.0), 0.36, spec) is None
    assert budget_unwatched(None, 0.36, spec) is None


def test_messages_name_three_pods_and_count_the_rest() -> None:
    assert named(["a"]) == "a" and named(["a", "b"]) == "a and b" and named(["a", "b", "c"]) == "a, b and c"
    assert named(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more" and named([]) == "no pod"


def _pod(phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "job-0-x", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "status": {"phase": phase, "startTime": "2025-01-01T00:00:10Z", **status},
    }


def test_a_listed_pod_started_when_its_sidecar_was_initialized() -> None:
    initialized = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:05Z"},
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-01T00:01:40Z"},
    ]
    assert running_pod(_pod(conditions=initialized)) == RunningPod("job-0-x", 1735689700.0)
    assert running_pod(_pod()) == RunningPod("job-0-x", 1735689610.0)  # no condition yet: startTime
    not_yet = [{"type": "Initialized", "status": "False", "lastTransitionTime": "2025-01-01T00:02:00Z"}]
    assert running_pod(_pod(conditions=not_yet)) == RunningPod("job-0-x", 1735689610.0)


@pytest.mark.parametrize("phase", ["Pending", "Succeeded", "Failed", "Unknown"])
def test_a_pod_that_does_not_run_is_not_listed(phase: str) -> None:
    assert running_pod(_pod(phase)) is None


def test_a_terminating_pod_is_not_listed() -> None:
    pod = _pod()
    pod["metadata"]["deletionTimestamp"] = "2025-01-01T00:05:00Z"
    assert running_pod(pod) is None
