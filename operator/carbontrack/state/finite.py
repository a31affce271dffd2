"""Status never receives a non-finite number: the check every status patch body passes at the boundary.

JSON has no Infinity or NaN: the apiserver refuses a patch that holds one (400), and everything else in
that patch is lost with it, every round, for as long as the number stays. So the status writers
(state.status) hand each body through `finite_fields`: a top-level field holding a non-finite number
anywhere is left out of the patch, which leaves it as stored (a merge patch changes only what it names),
and the rest is written. What was left out is logged with its path; the sources of such numbers make
them errors of their own (a metric gate's `+Inf` is an Error measurement, core.gates.metric_gates).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("carbontrack.status")


def non_finite_paths(value: Any, path: str = "") -> Iterator[str]:
    """The paths (e.g. `measurements[0].measurements[2].value`) of every non-finite float in `value`."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from non_finite_paths(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from non_finite_paths(item, f"{path}[{index}]")


def is_finite(value: Any) -> bool:
    """No non-finite float anywhere in `value` (plain loops: a status of thousands of pods is walked on
    every telemetry write)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        for item in value.values():
            if not is_finite(item):
                return False
    elif isinstance(value, list | tuple):
        for item in value:
            if not is_finite(item):
                return False
    return True


def finite_fields(patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` (status fields by name) without the fields that hold a non-finite number anywhere."""
    out: dict[str, Any] = {}
    for name, value in patch.items():
        if is_finite(value):
            out[name] = value
            continue
        bad = list(non_finite_paths(value, name))[:5]
        log.error("status field left as stored: it holds a non-finite number", extra={"paths": bad})
    return out
