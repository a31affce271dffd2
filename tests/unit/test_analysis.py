"""Metric gates as an analysis: bounds, limits, counts per stage and the Prometheus answer, exact."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec, MetricGate, MetricHistory
from carbontrack.core.gates import metric_gates as analysis
from carbontrack.core.gates.metric_gates import (
    MeasurementError,
    classify,
    parse_query_result,
    record,
    verdict,
)
from carbontrack.core.rollout.evaluation import evaluate
from carbontrack.core.rollout.promotion import State
from carbontrack.state import status as st
from tests.cases.crs import valid_spec
from tests.cases.evaluation import canary_aggregate, inputs

AT = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC)
PROM = {"endpoint": "main", "query": "sum(rate(errors[1m]))"}


def gate(**kw: Any) -> MetricGate:
    return MetricGate.model_validate({"name": "success", "prometheus": PROM, **kw})


G = gate(min=0.95, inconclusiveBelow=0.98, max=1.0)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (0.94, ("Failed", "0.94 < min 0.95")),
        (0.95, ("Inconclusive", "0.95 is between min 0.95 and 0.98")),
        (0.97, ("Inconclusive", "0.97 is between min 0.95 and 0.98")),
        (0.98, ("Passed", "0.98 within min 0.95 and max 1")),
        (1.0, ("Passed", "1 within min 0.95 and max 1")),
        (1.01, ("Failed", "1.01 > max 1")),
    ],
)
def test_bounds(value: float, want: tuple[str, str]) -> None:
    assert classify(G, value) == want


def test_upper_inconclusive_band() -> None:
    g = gate(max=500, inconclusiveAbove=300)
    assert [classify(g, v)[0] for v in (200, 300, 301, 500, 501)] == [
        "Passed", "Passed", "Inconclusive", "Inconclusive", "Failed"
    ]  # fmt: skip


def run(g: MetricGate, values: list[float | str]) -> MetricHistory:
    """Measurements in one stage: a float is a value, a string an error."""
    h = analysis.current(None, g.name, 0, 100)
    for i, v in enumerate(values):
        h = record(g, h, 100 + i, AT, error=v) if isinstance(v, str) else record(g, h, 100 + i, AT, value=v)
    return h


@pytest.mark.parametrize(
    ("g", "values", "want", "message"),
    [
        (gate(min=0.95), [0.99], "Passed",
         "0.99 within min 0.95 (1 measured, 0 failed, 0 inconclusive, 0 errors)"),
        (gate(min=0.95), [0.9], "Failed",
         "1 failed > failureLimit 0: 0.9 < min 0.95 (1 measured, 1 failed, 0 inconclusive, 0 errors)"),
        (gate(min=0.95, failureLimit=1, count=3), [0.9, 0.99, 0.99], "Passed",
         "0.99 within min 0.95 (3 measured, 1 failed, 0 inconclusive, 0 errors)"),
        (gate(min=0.95, failureLimit=1, count=3), [0.9, 0.9], "Failed",
         "2 failed > failureLimit 1: 0.9 < min 0.95 (2 measured, 2 failed, 0 inconclusive, 0 errors)"),
        (gate(min=0.95, count=3), [0.99], "Inconclusive",
         "1 of 3 measurements (1 measured, 0 failed, 0 inconclusive, 0 errors)"),
        (G, [0.99, 0.96], "Inconclusive",
         "0.96 is between min 0.95 and 0.98 (2 measured, 0 failed, 1 inconclusive, 0 errors)"),
        # an unreachable provider is an error: under the limit it never fails the gate ...
        (gate(min=0.95, consecutiveErrorLimit=2), ["refused", "refused", 0.99], "Passed",
         "0.99 within min 0.95 (1 measured, 0 failed, 0 inconclusive, 2 errors)"),
        # ... over it, the gate is Error (not Failed)
        (gate(min=0.95, consecutiveErrorLimit=2), ["refused", "refused", "refused"], "Error",
         "3 errors in a row > consecutiveErrorLimit 2: refused"
         " (0 measured, 0 failed, 0 inconclusive, 3 errors)"),
        # errors that are not in a row reset
        (gate(min=0.95, consecutiveErrorLimit=1, count=3), ["x", 0.99, "x", 0.99, "x", 0.99], "Passed",
         "0.99 within min 0.95 (3 measured, 0 failed, 0 inconclusive, 3 errors)"),
    ],
)  # fmt: skip
def test_verdict(g: MetricGate, values: list[float | str], want: str, message: str) -> None:
    r = verdict(g, run(g, values))
    assert (r.name, r.verdict, r.message) == ("metric.success", want, message)


def test_collecting_and_due() -> None:
    g = gate(min=0.95, count=2, initialDelaySteps=20)
    fresh = analysis.current(None, "success", 0, 100)
    assert (analysis.due(g, fresh, 119), analysis.due(g, fresh, 120)) == (False, True)
    assert analysis.collecting(g, fresh) is True
    one = record(g, fresh, 120, AT, value=0.99)
    assert (analysis.due(g, one, 121), analysis.collecting(g, one)) == (True, True)
    two = record(g, one, 121, AT, value=0.99)
    assert (analysis.due(g, two, 122), analysis.collecting(g, two)) == (False, False)
    failed = record(g, fresh, 120, AT, value=0.5)  # over the failure limit: no more waiting
    assert (analysis.due(g, failed, 121), analysis.collecting(g, failed)) == (False, False)


def test_history_is_bounded_and_a_new_stage_counts_afresh() -> None:
    g = gate(min=0.95, count=10, consecutiveErrorLimit=10)
    h = run(g, [0.99] * 5 + ["e"] * 8)
    assert len(h.measurements) == 10 and (h.measured, h.errors, h.consecutive_errors) == (5, 8, 8)
    nxt = analysis.current(h, "success", 1, 300)
    assert (nxt.stage, nxt.stage_start_step, nxt.measured, nxt.errors) == (1, 300, 0, 0)
    assert nxt.measurements == h.measurements  # the window is kept for people to read
    assert analysis.current(h, "success", 0, 100) is h


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "0.97"]}}, 0.97),
        ({"status": "success", "data": {"resultType": "vector",
          "result": [{"metric": {"job": "x"}, "value": [1.7e9, "12"]}]}}, 12.0),
    ],
)  # fmt: skip
def test_prometheus_answers(body: dict[str, Any], want: float) -> None:
    assert parse_query_result(body) == want


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "success", "data": {"resultType": "vector", "result": []}},
         "the query returned 0 series; it must return one (aggregate with sum/avg/max)"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}] * 2}},
         "the query returned 2 series; it must return one (aggregate with sum/avg/max)"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"},
         "query failed (bad_data): parse error at char 4"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}},
         "result type 'matrix': expected a scalar or an instant vector"),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "NaN"]}},
         "the sample 'NaN' is not a finite number"),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "x"]}},
         "the sample 'x' is not a number"),
        (["not", "an", "object"], "query failed: not a Prometheus API answer"),
        ({"status": "success", "data": "x"}, "result type None: expected a scalar or an instant vector"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": "1"}]}},
         "the sample None is not a number"),
    ],
)  # fmt: skip
def test_prometheus_answers_without_one_number_are_errors(body: Any, message: str) -> None:
    with pytest.raises(MeasurementError) as err:
        parse_query_result(body)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [("+Inf", "'+Inf'"), ("-Inf", "'-Inf'"), ("NaN", "'NaN'"), ("1e999", "'1e999'"), (10**400, "1000000000")],
)
def test_non_finite_and_out_of_range_samples_are_errors_that_quote_the_value(raw: Any, quoted: str) -> None:
    """+Inf from `1/0`, a number past float's range: an Error measurement that says which value it was,
    never a value (a status patch with Infinity in it is refused by the apiserver)."""
    for body in (
        {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, raw]}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, raw]}]}},
    ):
        with pytest.raises(MeasurementError, match="is not a finite number") as err:
            parse_query_result(body)
        assert f"the sample {quoted}" in str(err.value)
        assert len(str(err.value)) < 80


NOT_PROMETHEUS = "query failed: not a Prometheus API answer"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # the text of an answer that is no Prometheus error is never kept
        ({"status": "error", "error": "aws_secret_access_key=AKIA..."}, NOT_PROMETHEUS),
        ({"status": "error", "errorType": "teapot", "error": "token=abc"}, NOT_PROMETHEUS),
        ({"error": "password=hunter2"}, NOT_PROMETHEUS),
        # a Prometheus error keeps one printable line of at most 120 characters
        ({"status": "error", "errorType": "execution", "error": "line one\nline\ttwo\x1b[31m"},
         "query failed (execution): line one line two [31m"),
        ({"status": "error", "errorType": "bad_data", "error": "x" * 5000},
         "query failed (bad_data): " + "x" * 117 + "..."),
    ],
)  # fmt: skip
def test_an_endpoints_error_text_is_kept_only_as_a_short_printable_reason(body: Any, message: str) -> None:
    with pytest.raises(MeasurementError) as err:
        parse_query_result(body)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"name": "a", "prometheus": PROM}, "min"),
        ({"name": "a", "prometheus": PROM, "min": 1, "inconclusiveBelow": 0.5}, "inconclusiveBelow"),
        ({"name": "a", "prometheus": PROM, "min": 1, "inconclusiveAbove": 2}, "inconclusiveAbove"),
        ({"name": "a", "prometheus": {**PROM, "address": "http://127.0.0.1:9090"}, "min": 1}, "address"),
        ({"name": "a", "prometheus": {**PROM, "endpoint": "http://127.0.0.1:9090"}, "min": 1}, "endpoint"),
        ({"name": "A b", "prometheus": PROM, "min": 1}, "name"),
        ({"name": "a", "prometheus": PROM, "min": 1, "count": 11}, "count"),
    ],
)
def test_malformed_metric_gates_are_refused(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MetricGate.model_validate(raw)


# --- in the judgement ----------------------------------------------------------------------------

SPEC = CarbonTrackedJobSpec.model_validate(
    valid_spec(canary={"replicas": 1, "minSteps": 10, "stages": [50, 100]})
    | {"gates": {"context": "production", "metrics": [{"name": "success", "prometheus": PROM, "min": 0.95,
                                                        "inconclusiveBelow": 0.98, "count": 2}]}}
)  # fmt: skip


def _h(values: list[float | str]) -> MetricHistory:
    g = SPEC.gates.metrics[0]
    h = analysis.current(None, g.name, -1, 0)
    for i, v in enumerate(values):
        h = record(g, h, 10 + i, AT, error=v) if isinstance(v, str) else record(g, h, 10 + i, AT, value=v)
    return h


@pytest.mark.parametrize(
    ("values", "phase", "summary"),
    [
        ([0.99], Phase.CANARY, None),  # still collecting: the stage waits, nothing is judged
        (["refused"], Phase.CANARY, None),
        ([0.99, 0.99], Phase.PROMOTING, "2/2 passed"),
        ([0.99, 0.96], Phase.PAUSED, "metric.success inconclusive"),
        ([0.5], Phase.HALTED, "metric.success failed"),
        (["refused"] * 5, Phase.HALTED, "metric.success error"),
    ],
)
def test_metric_gates_in_the_judgement(values: list[float | str], phase: Phase, summary: str | None) -> None:
    plan = evaluate(inputs(canary_aggregate(), spec=SPEC, metrics=(_h(values),)))
    assert plan.decision.state.phase == phase
    assert (plan.decision.report.summary() if plan.decision.report else None) == summary
    assert plan.measurements is not None
    # a promotion writes the new stage's fresh counts with the new phase; the history stays
    promoted = phase == Phase.PROMOTING
    assert plan.measurements[0].stage == (0 if promoted else -1)
    assert plan.measurements[0].measured == (0 if promoted else sum(not isinstance(v, str) for v in values))
    written = st.plan_update({}, SPEC, plan, "j")["measurements"][0]
    assert written["name"] == "success" and len(written["measurements"]) == len(values)


def test_an_error_halts_naming_the_provider_not_a_failure() -> None:
    plan = evaluate(inputs(canary_aggregate(), spec=SPEC, metrics=(_h(["http://p unreachable"] * 5),)))
    assert plan.decision.report is not None
    (result,) = [r for r in plan.decision.report.results if r.name == "metric.success"]
    assert result.verdict == "Error" and "unreachable" in result.message
    assert plan.decision.events[0].reason == "GateFailed"


def test_a_halted_job_re_judged_leaves_metric_gates_to_the_resumed_stage() -> None:
    halted = State(Phase.HALTED, -1, 0, halted_from=Phase.CANARY, halted_generation=1)
    plan = evaluate(inputs(canary_aggregate(), spec=SPEC, state=halted, generation=2, metrics=(_h([0.5]),)))
    assert plan.decision.state.phase == Phase.CANARY  # the failed stage's measurements are not reused
