"""The limits on what a user writes in a spec or on the command line, at their edges."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from carbontrack.api.crd import MAX_DURATION, MAX_DURATION_S, CarbonTrackedJobSpec, duration_s
from carbontrack.api.crdgen import crd_manifest
from carbontrack.cli.main import build_parser
from tests.cases.crs import PROMETHEUS, valid_spec

pytestmark = pytest.mark.unit


def _schedule(duration: str) -> dict[str, Any]:
    return {"maxDelay": duration, "window": duration, "pauseAbove": {"gramsPerKwh": 300, "after": duration}}


@pytest.mark.parametrize("duration", ["8760h", "525600m", "31536000s", "8759h59m60s", "0s", "1h30m"])
def test_every_duration_up_to_a_year_is_accepted_in_any_unit(duration: str) -> None:
    spec = valid_spec()
    spec["carbon"]["schedule"] = _schedule(duration)
    schedule = CarbonTrackedJobSpec.model_validate(spec).carbon.schedule
    assert schedule is not None and schedule.max_delay == duration


@pytest.mark.parametrize("duration", ["8761h", "525601m", "31536001s", "8760h1s", "99999999999h", "00001h"])
def test_a_duration_past_a_year_is_refused_in_every_field(duration: str) -> None:
    spec = valid_spec()
    spec["carbon"]["schedule"] = _schedule(duration)
    with pytest.raises(ValidationError) as err:
        CarbonTrackedJobSpec.model_validate(spec)
    text = str(err.value)
    assert err.value.error_count() == 3 and text.count(f"must be at most {MAX_DURATION}") == 3, text


def test_the_longest_duration_still_makes_a_deadline() -> None:
    """The deferral adds maxDelay to a datetime: the largest allowed one fits with room to spare."""
    assert duration_s(MAX_DURATION) == MAX_DURATION_S
    assert dt.datetime.now(dt.UTC) + dt.timedelta(seconds=MAX_DURATION_S) < dt.datetime.max.replace(
        tzinfo=dt.UTC
    )


def test_every_duration_field_carries_the_same_cel_limit() -> None:
    """Found by walking the CRD: a duration-patterned string without the rule would be unbounded."""
    spec = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("pattern") == "^([0-9]+(s|m|h))+$":
            rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
            assert any(f"duration('{MAX_DURATION}')" in r for r in rules), path
            found.append(path)
        for key, sub in node.get("properties", {}).items():
            if key != "template":
                walk(sub, f"{path}.{key}")

    walk(spec, "spec")
    assert sorted(found) == [
        "spec.carbon.schedule.maxDelay",
        "spec.carbon.schedule.pauseAbove.after",
        "spec.carbon.schedule.window",
    ]


@pytest.mark.parametrize(("low", "high"), [(1, 1), (0, 10), (-5, -1)])
def test_a_metric_gate_with_min_at_most_max_is_accepted(low: float, high: float) -> None:
    gate = {"name": "latency", "prometheus": PROMETHEUS, "min": low, "max": high}
    assert (
        CarbonTrackedJobSpec.model_validate(valid_spec(gates={"metrics": [gate]})).gates.metrics[0].max
        == high
    )


def test_the_report_flag_takes_only_the_hubs_training_types(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["report", "llama", "--training-type", "pretraining"])
    assert exit_.value.code == 2
    assert "invalid choice: 'pretraining'" in capsys.readouterr().err
