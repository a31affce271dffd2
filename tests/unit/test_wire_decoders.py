"""The operator's two decoders of a telemetry batch answer alike: msgspec's (api.wire_fast, the one the
server uses) and pydantic's (api.wire.parse_batch, the models that define the wire rules). The same
bodies, good and hostile, go to both; the decisions, the refusals' reasons and messages, and the decoded
values must be identical."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from carbontrack.api.wire import MAX_GPUS, TelemetryBatch, WireError, parse_batch
from carbontrack.api.wire_fast import decode_batch, decode_fast
from carbontrack.sidecar.app import encode_batch
from tests.cases.bodies import GOOD, HOSTILE
from tests.cases.wire_strategies import batches, body_mutations

pytestmark = pytest.mark.unit


def _plain(batch: TelemetryBatch) -> str:
    """Every decoded value with its type (repr: 1 and 1.0 differ), and which fields the body set."""

    def fields_set(model: Any) -> Any:
        nested = {k: v for k, v in vars(model).items() if k != "steps"}
        inner = {
            k: [fields_set(x) for x in v] if isinstance(v, list) else fields_set(v)
            for k, v in nested.items()
            if isinstance(v, BaseModel) or (isinstance(v, list) and v and isinstance(v[0], BaseModel))
        }
        return (sorted(model.model_fields_set), inner)

    steps = [(s.step, s.first_step, s.energy_joules, s.duration_s, s.ended_at) for s in batch.steps]
    values = {k: v for k, v in vars(batch).items() if k != "steps"}
    return repr((values, steps, fields_set(batch)))


def _outcome(decode: Any, raw: bytes) -> tuple[str, str]:
    try:
        return ("ok", _plain(decode(raw)))
    except WireError as exc:
        return (exc.reason, str(exc))


def _both_answer_alike(raw: bytes) -> None:
    fast = decode_fast(raw)
    if fast is not None:  # msgspec answered: pydantic accepts the body too, with the same values
        assert _outcome(parse_batch, raw) == ("ok", _plain(fast))
    assert _outcome(decode_batch, raw) == _outcome(parse_batch, raw)


texts = st.text(st.sampled_from("ab-é😀\u00a0"), max_size=70)
"""Around the length limits (64, 96), with characters of 2 and 4 UTF-8 bytes: limits count characters."""
full_gpus = st.fixed_dictionaries(
    {"index": st.integers(0, MAX_GPUS), "energyJoules": st.floats(0, 1e15), "lost": st.booleans()},
    optional={
        "uuid": texts, "name": texts, "sharing": st.sampled_from(["exclusive", "shared", "mig", "x"]),
        "foreignProcesses": st.integers(-1, 3), "uncertaintyJoules": st.floats(-1, 10),
        "method": st.none() | st.sampled_from(["simulated", "energy-counter"]),
    },
)  # fmt: skip
evals = st.fixed_dictionaries(
    {"step": st.integers(0, 10), "metrics": st.dictionaries(texts, st.floats(-1e300, 1e300), max_size=3)}
)
extras = st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.lists(full_gpus, max_size=4), "evals": st.lists(evals, max_size=2),
        "methodReason": texts, "bootId": texts, "checkpoint": st.none() | st.fixed_dictionaries(
            {"step": st.integers(0, 5), "uri": st.text(max_size=3)}),
        "markersDropped": st.integers(0, 5), "recordsDropped": st.integers(0, 5),
    },
)  # fmt: skip


@settings(max_examples=400)
@given(batches, st.data())
def test_both_decoders_answer_alike_on_mutated_bodies(batch: TelemetryBatch, data: st.DataObject) -> None:
    """Repeated keys, escapes, spacing, wrong versions, retyped and garbled bodies (test_wire_properties)."""
    _both_answer_alike(body_mutations(json.loads(batch.model_dump_json(by_alias=True)), data))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])  # a shared, busy machine
@given(batches, extras, st.data())
def test_both_decoders_answer_alike_at_the_limits(
    batch: TelemetryBatch, changes: dict[str, Any], data: st.DataObject
) -> None:
    """Optional fields present or absent, values at and past their bounds, strings of multi-byte
    characters around their length limits, GPUs repeated by index or UUID, 64 and 65 GPUs."""
    doc = {**json.loads(batch.model_dump_json(by_alias=True)), **changes}
    if data.draw(st.booleans()):
        doc["gpus"] = [
            {"index": i % MAX_GPUS, "energyJoules": 1} for i in range(data.draw(st.integers(63, 66)))
        ]
    _both_answer_alike(json.dumps(doc, ensure_ascii=False).encode())


@pytest.mark.parametrize(("name", "body", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_both_decoders_refuse_each_hostile_body_alike(name: str, body: bytes, reason: str) -> None:
    _both_answer_alike(body)
    with pytest.raises(WireError) as refused:
        decode_batch(body)
    assert refused.value.reason == reason


def test_msgspec_answers_what_a_sidecar_sends() -> None:
    """The sidecar's own body (every default written, None left out) and the good table body take the
    fast path, so the pydantic path is the exception, not the rule."""
    step = {"step": 2, "firstStep": 1, "energyJoules": 1.5, "durationS": 0.1, "endedAt": time.time()}
    batch = TelemetryBatch.model_validate({**GOOD, "steps": [step]})
    for raw in (encode_batch(batch), json.dumps(GOOD).encode()):
        fast = decode_fast(raw)
        assert fast is not None
        assert _plain(fast) == _plain(parse_batch(raw))
