"""Hypothesis strategies for telemetry batches on the wire, shared by the wire's property tests and the
test that holds the fast decoder to the pydantic one."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from carbontrack.api.wire import MAX_GPUS, TelemetryBatch

names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=20)
joules = st.floats(0, 1e15, allow_nan=False)
counts = st.integers(0, 1 << 53)

# dicts with the wire's (camelCase) names, validated: st.builds(Model) would also pass the aliases it
# reads from the models' signatures beside the names given here
gpus = st.fixed_dictionaries(
    {"index": st.integers(0, MAX_GPUS - 1), "energyJoules": joules, "lost": st.booleans()}
)
steps = st.fixed_dictionaries({
    "step": counts, "firstStep": counts, "energyJoules": joules,
    "durationS": st.floats(0, 1e9, allow_nan=False), "endedAt": st.floats(0, 1e11, allow_nan=False),
})  # fmt: skip
dps = st.fixed_dictionaries({
    "step": counts, "noiseMultiplier": st.floats(1e-6, 1e6), "sampleRate": st.floats(1e-9, 1.0),
    "delta": st.floats(1e-12, 0.5), "accountantEpsilon": st.none() | st.floats(0, 1e6),
})  # fmt: skip
refs = st.fixed_dictionaries({"namespace": names, "name": names})
batches = st.fixed_dictionaries({
    "version": st.just(1), "job": refs, "pod": refs, "bootId": names, "seq": counts,
    "sentAt": st.floats(0, 1e11, allow_nan=False),
    "method": st.sampled_from(["energy-counter", "power-integration", "simulated", "unavailable"]),
    "gpus": st.lists(gpus, max_size=4, unique_by=lambda g: g["index"]),
    "steps": st.lists(steps, max_size=4), "dp": st.none() | dps,
    "stepsSeen": counts, "globalStep": counts, "final": st.booleans(),
}).map(TelemetryBatch.model_validate)  # fmt: skip


def body_mutations(doc: dict[str, Any], data: st.DataObject) -> bytes:
    """The batch's body, compact or spaced, sometimes with a key repeated, a value of another JSON type,
    an escape, a key/value swapped for text, or a version other than 1."""
    text = json.dumps(doc, separators=data.draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " :")])))
    kind = data.draw(st.sampled_from(["as-is", "dup", "escape", "version", "retype", "garble"]))
    if kind == "dup":
        key = data.draw(st.sampled_from(sorted(doc)))
        text = text[:-1] + f',"{key}":' + json.dumps(doc[key]) + "}"
    elif kind == "escape":
        text = text.replace('"seq"', '"s\\u0065q"', 1)
    elif kind == "version":
        text = text.replace(
            '"version":1', '"version":' + data.draw(st.sampled_from(["1.0", "true", "2", '"1"']))
        )
    elif kind == "retype":
        text = text.replace('"final":', '"final":0,"x":', 1)
    elif kind == "garble":
        at = data.draw(st.integers(0, len(text) - 1))
        text = text[:at] + data.draw(st.sampled_from(['"', ":", "{", "}", "\\", ",", '":'])) + text[at:]
    return text.encode()
