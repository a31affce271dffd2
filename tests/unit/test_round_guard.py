"""controller.round_guard: a judgement round that fails is condition Judged=False and one Warning Event, its
patch is voided (never one the apiserver refuses), and the next round runs; the first to succeed says so."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import kopf
import pytest

from carbontrack.controller import round_guard
from carbontrack.controller.context import JobCall
from carbontrack.controller.round_guard import RoundFailed, guarded
from carbontrack.state.conditions import condition
from tests.cases.crs import valid_spec

Posted = list[tuple[str, str, str]]


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> Posted:
    """The Events the guard posts (kopf.event needs a running operator)."""
    out: Posted = []

    def event(body: Any, type: str, reason: str, message: str) -> None:
        out.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return out


def call_with(status: dict[str, Any]) -> JobCall:
    from carbontrack.api.crd import CarbonTrackedJobSpec

    spec = CarbonTrackedJobSpec.model_validate(valid_spec())
    body: Any = {"metadata": {"name": "j", "namespace": "ns"}, "status": status}
    return JobCall(body, "j", "ns", status, kopf.Patch(), spec, None, 3)  # type: ignore[arg-type]


def judged(call: JobCall) -> dict[str, Any]:
    (condition,) = [c for c in call.patch["status"]["conditions"] if c["type"] == "Judged"]
    return dict(condition)


def run(round_: Any, call: JobCall, reason: str = "JudgementFailed") -> None:
    asyncio.run(guarded(round_, call, reason))


async def writes_then_fails(call: JobCall, exc: Exception) -> None:
    call.patch.status["phase"] = "Halted"
    call.patch.metadata.annotations["carbontrack.io/approve"] = None
    raise exc


def test_a_round_that_raises_is_a_condition_and_one_event_and_its_patch_is_void(posted: Posted) -> None:
    call = call_with({"phase": "Canary"})
    run(writes_then_fails(call, OverflowError("date value out of range")), call, "DeferralFailed")
    assert set(call.patch) == {"status"} and set(call.patch["status"]) == {"conditions"}
    found = judged(call)
    assert (found["status"], found["reason"], found["observedGeneration"]) == ("False", "DeferralFailed", 3)
    message = "OverflowError: date value out of range; tried again every judgement round"
    assert found["message"] == message
    assert posted == [("Warning", "DeferralFailed", message)]


def test_the_same_failure_again_posts_no_second_event(posted: Posted) -> None:
    first = call_with({})
    run(writes_then_fails(first, ValueError("x")), first)
    again = call_with({"conditions": first.patch["status"]["conditions"]})
    run(writes_then_fails(again, ValueError("y")), again)
    assert judged(again)["message"].startswith("ValueError: y")
    assert [reason for _, reason, _ in posted] == ["JudgementFailed"]
    other = call_with({"conditions": again.patch["status"]["conditions"]})
    run(writes_then_fails(other, RoundFailed("HaltNotApplied", "halting the Job failed: 403")), other)
    assert [reason for _, reason, _ in posted] == ["JudgementFailed", "HaltNotApplied"]


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({"measurements": [{"name": "m", "measurements": [{"value": math.inf}]}]}, "not JSON"),
        ({"gateSummary": "x", "replicas": -1}, "status.replicas"),
    ],
)
def test_a_patch_the_apiserver_would_refuse_is_a_failure_not_a_dead_timer(
    posted: Posted, status: dict[str, Any], why: str
) -> None:
    call = call_with({})

    async def refused_patch() -> None:
        call.patch.status.update(status)

    run(refused_patch(), call)
    found = judged(call)
    assert found["reason"] == "StatusRefused" and why in found["message"], found
    assert set(call.patch["status"]) == {"conditions"}
    assert posted[0][:2] == ("Warning", "StatusRefused")


def test_the_first_round_that_succeeds_turns_the_condition_true(posted: Posted) -> None:
    failed = call_with({})
    run(writes_then_fails(failed, ValueError("x")), failed)
    call = call_with({"conditions": failed.patch["status"]["conditions"]})

    async def works() -> None:
        call.patch.status["phase"] = "Canary"
        call.patch.status["conditions"] = [condition("Ready", True, "Started", "", 3)]

    run(works(), call)
    assert call.patch["status"]["phase"] == "Canary"
    assert [c["type"] for c in call.patch["status"]["conditions"]] == ["Ready", "Judged"]
    assert (judged(call)["status"], judged(call)["reason"]) == ("True", "JudgementResumed")
    assert posted[-1] == ("Normal", "JudgementResumed", "the judgement runs again")


def test_a_round_that_succeeds_with_no_failure_before_is_left_alone(posted: Posted) -> None:
    call = call_with({"conditions": [{"type": "Ready", "status": "True"}]})

    async def works() -> None:
        call.patch.status["phase"] = "Canary"

    run(works(), call)
    assert dict(call.patch) == {"status": {"phase": "Canary"}} and posted == []


def test_a_long_cause_is_cut_to_one_short_line() -> None:
    reason, message = round_guard.describe(ValueError("a\nb " + "c" * 1000), "JudgementFailed")
    assert reason == "JudgementFailed" and "\n" not in message and len(message) < 360
