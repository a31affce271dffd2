"""Metric gates as a progressive-delivery analysis, pure: measurements in, a gate's verdict out.

Per stage, a metric gate takes one measurement per judgement round once `initialDelaySteps` of the
stage have run, until it has `count` measurements with a value. Each measurement is Passed, Failed,
Inconclusive (between a fail bound and an inconclusive bound) or Error (the provider could not be read,
or gave no single finite sample: NaN, ±Inf and numbers past a float's range are errors, quoted). The gate is:
  Error         after more than consecutiveErrorLimit errors in a row (an outage is not a bad canary);
  Failed        after more than failureLimit failed measurements;
  Inconclusive  with fewer than `count` measurements, or any Inconclusive one;
  Passed        otherwise.
The stage is not judged while a gate is still collecting (see `collecting`), so a slow provider delays
a promotion rather than failing it. Counts live in status (`MetricHistory`), with the last 10
measurements for people to read. The I/O (the HTTP query) is the controller's.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from carbontrack.api.crd import GateResult, GateVerdict, Measurement, MetricGate, MetricHistory

HISTORY = 10


class MeasurementError(ValueError):
    """The provider's answer holds no single number: an error, never a failure."""


API_ERROR_TYPES = frozenset(
    {"timeout", "canceled", "execution", "bad_data", "internal", "unavailable", "not_found", "not_acceptable"}
)
"""The `errorType`s of Prometheus's HTTP API: an answer with another is no Prometheus error."""

REASON_CHARS = 120
"""How much of an endpoint's error text a measurement keeps: enough for a PromQL parse error, too little
for a page of whatever else the endpoint holds."""


def short_reason(text: object, limit: int = REASON_CHARS) -> str:
    """`text` as one line of printable ASCII, at most `limit` characters (an ellipsis says it was cut)."""
    flat = " ".join("".join(c if c.isascii() and c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _api_error(body: Any) -> MeasurementError:
    """A refused query: Prometheus's errorType and a short reason; no text from an answer of another shape."""
    if not isinstance(body, Mapping):
        return MeasurementError("query failed: not a Prometheus API answer")
    kind = body.get("errorType")
    if kind not in API_ERROR_TYPES:
        return MeasurementError("query failed: not a Prometheus API answer")
    return MeasurementError(f"query failed ({kind}): {short_reason(body.get('error') or 'no reason given')}")


def _number(raw: Any) -> float:
    """The sample as a finite float; anything else (text, NaN, ±Inf, past float's range) quoted."""
    quoted = short_reason(repr(raw), 40)
    try:
        value = float(raw)
    except OverflowError:  # an integer past float's range
        value = math.inf
    except (TypeError, ValueError) as exc:
        raise MeasurementError(f"the sample {quoted} is not a number") from exc
    if not math.isfinite(value):
        raise MeasurementError(f"the sample {quoted} is not a finite number")
    return value


def parse_query_result(body: Any) -> float:
    """The one sample of a Prometheus `/api/v1/query` answer (a scalar, or a vector of one series)."""
    if not isinstance(body, Mapping) or body.get("status") != "success":
        raise _api_error(body)
    data = body.get("data")
    data = data if isinstance(data, Mapping) else {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        raw = result[1]
    elif kind == "vector" and isinstance(result, list):
        if len(result) != 1:
            raise MeasurementError(
                f"the query returned {len(result)} series; it must return one (aggregate with sum/avg/max)"
            )
        sample = result[0].get("value") if isinstance(result[0], Mapping) else None
        raw = sample[1] if isinstance(sample, list) and len(sample) == 2 else None
    else:
        raise MeasurementError(
            f"result type {short_reason(repr(kind), 40)}: expected a scalar or an instant vector"
        )
    return _number(raw)


def classify(gate: MetricGate, value: float) -> tuple[GateVerdict, str]:
    """One value against the gate's bounds; a bound itself is on its passing side."""
    if gate.min is not None and value < gate.min:
        return "Failed", f"{value:g} < min {gate.min:g}"
    if gate.max is not None and value > gate.max:
        return "Failed", f"{value:g} > max {gate.max:g}"
    if gate.inconclusive_below is not None and value < gate.inconclusive_below:
        return "Inconclusive", f"{value:g} is between min {gate.min:g} and {gate.inconclusive_below:g}"
    if gate.inconclusive_above is not None and value > gate.inconclusive_above:
        return "Inconclusive", f"{value:g} is between {gate.inconclusive_above:g} and max {gate.max:g}"
    bounds = [
        f"min {gate.min:g}" if gate.min is not None else "",
        f"max {gate.max:g}" if gate.max is not None else "",
    ]
    return "Passed", f"{value:g} within {' and '.join(b for b in bounds if b)}"


def current(history: MetricHistory | None, name: str, stage: int, stage_start_step: int) -> MetricHistory:
    """The history with its counts for this stage (fresh counts when the stage changed)."""
    if history is None:
        return MetricHistory(name=name, stage=stage, stage_start_step=stage_start_step)
    if (history.stage, history.stage_start_step) != (stage, stage_start_step):
        return MetricHistory(
            name=name, stage=stage, stage_start_step=stage_start_step, measurements=history.measurements
        )
    return history


def _over_limits(gate: MetricGate, h: MetricHistory) -> bool:
    return h.consecutive_errors > gate.consecutive_error_limit or h.failed > gate.failure_limit


def due(gate: MetricGate, h: MetricHistory, global_step: int) -> bool:
    """A measurement is taken this round: past the initial delay, short of `count`, within the limits."""
    if global_step - h.stage_start_step < gate.initial_delay_steps:
        return False
    return h.measured < gate.count and not _over_limits(gate, h)


def collecting(gate: MetricGate, h: MetricHistory) -> bool:
    """The gate has no verdict yet and will have one after more rounds: the stage waits for it."""
    return h.measured < gate.count and not _over_limits(gate, h)


def record(
    gate: MetricGate,
    h: MetricHistory,
    global_step: int,
    at: dt.datetime,
    value: float | None = None,
    error: str | None = None,
) -> MetricHistory:
    """`h` with one more measurement: a value, or the error that prevented one."""
    if error is not None or value is None:
        m = Measurement(
            stage=h.stage, step=global_step, at=at, verdict="Error", message=(error or "no value")[:512]
        )
        return h.model_copy(
            update={
                "errors": h.errors + 1,
                "consecutive_errors": h.consecutive_errors + 1,
                "measurements": [*h.measurements, m][-HISTORY:],
            }
        )
    verdict, message = classify(gate, value)
    m = Measurement(stage=h.stage, step=global_step, at=at, verdict=verdict, value=value, message=message)
    return h.model_copy(
        update={
            "measured": h.measured + 1,
            "failed": h.failed + (verdict == "Failed"),
            "inconclusive": h.inconclusive + (verdict == "Inconclusive"),
            "consecutive_errors": 0,
            "measurements": [*h.measurements, m][-HISTORY:],
        }
    )


def verdict(gate: MetricGate, h: MetricHistory) -> GateResult:
    """The gate's verdict on this stage's counts (see the module docstring for the order)."""
    name = f"metric.{gate.name}"
    last = h.measurements[-1] if h.measurements else None
    observed = next(
        (m.value for m in reversed(h.measurements) if m.value is not None and m.stage == h.stage), None
    )
    threshold = gate.min if gate.min is not None else gate.max
    counts = f"{h.measured} measured, {h.failed} failed, {h.inconclusive} inconclusive, {h.errors} errors"

    def result(v: GateVerdict, message: str) -> GateResult:
        return GateResult(
            name=name,
            passed=v == "Passed",
            verdict=v,
            observed=observed,
            threshold=threshold,
            message=f"{message} ({counts})",
        )

    if h.consecutive_errors > gate.consecutive_error_limit:
        why = last.message if last is not None else ""
        limit = f"consecutiveErrorLimit {gate.consecutive_error_limit}"
        return result("Error", f"{h.consecutive_errors} errors in a row > {limit}: {why}")
    if h.failed > gate.failure_limit:
        failed = next((m for m in reversed(h.measurements) if m.verdict == "Failed"), None)
        why = failed.message if failed is not None else ""
        return result("Failed", f"{h.failed} failed > failureLimit {gate.failure_limit}: {why}")
    if h.measured < gate.count:
        return result("Inconclusive", f"{h.measured} of {gate.count} measurements")
    if h.inconclusive:
        unsure = next((m for m in reversed(h.measurements) if m.verdict == "Inconclusive"), None)
        return result("Inconclusive", unsure.message if unsure is not None else "inconclusive")
    return result("Passed", last.message if last is not None else "passed")


def by_name(histories: Sequence[MetricHistory]) -> dict[str, MetricHistory]:
    return {h.name: h for h in histories}
