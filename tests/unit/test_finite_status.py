"""Status never receives a non-finite number: every float field of the status models, walked, is checked
at the boundary where the patch body is built (state.finite, called by state.status)."""

from __future__ import annotations

import datetime as dt
import json
import math
import types
import typing
from collections.abc import Iterator
from typing import Any, Union

import pytest
from pydantic import BaseModel

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobStatus, ScheduleStatus
from carbontrack.core.events import ConditionUpdate
from carbontrack.state import status as st
from carbontrack.state.finite import finite_fields, is_finite, non_finite_paths

Path = tuple[str | int, ...]
"""A place in a status body: field names (aliases) and 0 for a list's first item."""


def _args(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation admits (Optional[X] -> X; list[X] stays as is)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def float_paths(model: type[BaseModel], prefix: Path = ()) -> Iterator[Path]:
    """Every float field reachable from `model`: in sub-models, in lists of them, in lists of floats."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        for kind in _args(info.annotation):
            yield from _paths_of(kind, (*prefix, key))


def _paths_of(kind: Any, here: Path) -> Iterator[Path]:
    if kind is float:
        yield here
    elif typing.get_origin(kind) is list:
        for item in _args(typing.get_args(kind)[0]):
            yield from _paths_of(item, (*here, 0))
    elif isinstance(kind, type) and issubclass(kind, BaseModel):
        yield from float_paths(kind, here)


PATHS = sorted(set(float_paths(CarbonTrackedJobStatus)), key=str)


def body_with(path: Path, value: float) -> dict[str, Any]:
    """A status body holding `value` at `path`, beside a phase (which must survive)."""
    leaf: Any = value
    for key in reversed(path[1:]):
        leaf = [leaf] if isinstance(key, int) else {key: leaf}
    return {"phase": "Canary", str(path[0]): leaf}


def test_the_walk_finds_the_float_fields() -> None:
    """A walk that found nothing would pass every case below: it must see the fields it is about."""
    assert len(PATHS) > 40
    for expected in [
        ("energyJoules",),
        ("measurements", 0, "measurements", 0, "value"),
        ("gates", 0, "observed"),
        ("telemetry", "sources", 0, "gpuEnergyJoules", 0),
        ("schedule", "plannedGramsPerKwh"),
    ]:
        assert expected in PATHS


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_a_non_finite_number_in_any_float_field_never_reaches_status(path: Path, bad: float) -> None:
    body = body_with(path, bad)
    out = finite_fields(body)
    assert out == {"phase": "Canary"}  # the field stays as stored; the rest is written
    json.dumps(out, allow_nan=False)  # what the apiserver would accept


@pytest.mark.parametrize("path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_a_finite_number_in_any_float_field_is_written(path: Path) -> None:
    body = body_with(path, 1e308)
    assert finite_fields(body) == body


def test_the_paths_of_non_finite_numbers_are_named() -> None:
    body = {"measurements": [{"measurements": [{"value": 1.0}, {"value": math.inf}]}], "gates": [{}]}
    assert list(non_finite_paths(body)) == ["measurements[0].measurements[1].value"]
    assert is_finite({"a": [1.0, {"b": 2}], "c": "inf"}) and not is_finite({"a": [1.0, {"b": math.nan}]})


def test_the_status_writers_build_their_bodies_through_the_check() -> None:
    """A writer given a non-finite number (here the deferral's) writes everything else, and JSON."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    schedule = ScheduleStatus(planned_grams_per_kwh=math.inf, deferred_since=now)
    out = st.deferral_update({}, schedule, Phase.DEFERRED, ConditionUpdate("Deferred", True, "X", "x"), 1)
    assert "schedule" not in out and out["phase"] == "Deferred" and out["conditions"][0]["reason"] == "X"
    json.dumps(out, allow_nan=False)
