"""Properties of the telemetry wire models (hypothesis): what a sidecar sends is what the operator reads,
and a value outside the protocol's ranges is refused wherever it sits in the batch."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from carbontrack.api.wire import MAX_GPUS, TelemetryBatch, WireError, _parse_batch_checked, parse_batch
from tests.cases.wire_strategies import batches, body_mutations, names


@settings(max_examples=300)
@given(batches)
def test_what_a_sidecar_sends_is_what_the_operator_reads(batch: TelemetryBatch) -> None:
    wire = batch.model_dump_json(by_alias=True)
    assert TelemetryBatch.model_validate_json(wire) == batch
    assert TelemetryBatch.model_validate(json.loads(wire)) == batch  # the operator's path: json, then model


BAD = [-1.0, math.nan, math.inf, 1e30]


def _paths(doc: dict[str, Any]) -> list[tuple[Any, str]]:
    """Every numeric joules/seconds field of a batch document, as (container, key)."""
    out: list[tuple[Any, str]] = [(g, "energyJoules") for g in doc["gpus"]]
    out += [(s, k) for s in doc["steps"] for k in ("energyJoules", "durationS")]
    return [*out, (doc, "sentAt")]


@settings(max_examples=200)
@given(batches.filter(lambda b: bool(b.gpus)), st.sampled_from(BAD), st.data())
def test_a_value_outside_the_protocol_is_refused_wherever_it_sits(
    batch: TelemetryBatch, bad: float, data: st.DataObject
) -> None:
    doc = json.loads(batch.model_dump_json(by_alias=True))
    container, key = data.draw(st.sampled_from(_paths(doc)))
    container[key] = bad
    with pytest.raises(ValidationError):
        TelemetryBatch.model_validate(doc)


@settings(max_examples=100)
@given(batches.filter(lambda b: bool(b.gpus)), st.data())
def test_a_gpu_listed_twice_is_refused_by_index_or_uuid(batch: TelemetryBatch, data: st.DataObject) -> None:
    """Counted twice, a GPU would double its energy: the same index, or the same UUID under two indices."""
    doc = json.loads(batch.model_dump_json(by_alias=True))
    gpu = data.draw(st.sampled_from(doc["gpus"]))
    twice = [*doc["gpus"], {**gpu, "energyJoules": 0.0}]
    with pytest.raises(ValidationError, match="is listed more than once"):
        TelemetryBatch.model_validate({**doc, "gpus": twice})
    free = next(i for i in range(MAX_GPUS) if i not in {g["index"] for g in doc["gpus"]})
    uuids = [{**g, "uuid": f"GPU-{g['index']}"} for g in doc["gpus"]]
    with pytest.raises(ValidationError, match=r"'GPU-\d+' is listed more than once"):
        TelemetryBatch.model_validate({**doc, "gpus": [*uuids, {**uuids[0], "index": free}]})
    with pytest.raises(WireError, match="is listed more than once"):
        parse_batch(json.dumps({**doc, "gpus": twice}).encode())


@given(batches, names)
def test_unknown_fields_are_refused(batch: TelemetryBatch, extra: str) -> None:
    doc = json.loads(batch.model_dump_json(by_alias=True))
    doc[f"x-{extra}"] = 1
    with pytest.raises(ValidationError):
        TelemetryBatch.model_validate(doc)


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every scalar in a batch document, with its path."""
    if isinstance(doc, dict):
        return [leaf for k, v in doc.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(doc, list):
        return [leaf for i, v in enumerate(doc) for leaf in _leaves(v, (*path, i))]
    return [(path, doc)]


def _coercible(value: Any) -> list[Any]:
    """Values of another JSON type that lax parsing would have coerced into `value`'s type."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), float(value)]
    if isinstance(value, int):
        return [float(value), str(value)] + ([bool(value)] if value in (0, 1) else [])
    if isinstance(value, float):
        return [str(value), True, False]
    if isinstance(value, str):
        return [1, 1.5, True] if value else []
    return []


@settings(max_examples=300)
@given(batches, st.data())
def test_no_field_coerces_another_json_type(batch: TelemetryBatch, data: st.DataObject) -> None:
    """Strict wire types: `true` is not 1, `1.0` is not an integer, `"5"` is not a number, anywhere."""
    doc = json.loads(batch.model_dump_json(by_alias=True))
    path, value = data.draw(st.sampled_from([leaf for leaf in _leaves(doc) if _coercible(leaf[1])]))
    wrong = data.draw(st.sampled_from(_coercible(value)))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = wrong
    with pytest.raises(ValidationError):
        TelemetryBatch.model_validate(doc)


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return ("ok", parse(raw))
    except WireError as exc:
        return (exc.reason, str(exc))


@settings(max_examples=400)
@given(batches, st.data())
def test_the_fast_parse_answers_exactly_as_the_checked_parse(
    batch: TelemetryBatch, data: st.DataObject
) -> None:
    """parse_batch's one-pass path (model_validate_json) accepts what the checked path accepts, equal,
    and refuses the rest with the checked path's reason and message."""
    raw = body_mutations(json.loads(batch.model_dump_json(by_alias=True)), data)
    assert _outcome(parse_batch, raw) == _outcome(_parse_batch_checked, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"version":1,"seq":1,"seq":2}',
        b'{"job":{"name":"a","name":"b"}}',
        b'{"a":"x\\":{","a\\u0062":1,"ab":2}',
    ],
)
def test_a_repeated_key_is_refused_by_name(raw: bytes) -> None:
    reason, message = _outcome(parse_batch, raw)
    assert reason == "malformed" and "duplicate key" in message
