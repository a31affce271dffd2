"""Kubernetes conditions, by the API conventions: one per type, lastTransitionTime only on a change.

Pure functions over plain dicts, so they can be tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def condition(type_: str, status: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
        "observedGeneration": generation,
    }


def set_condition(
    current: list[dict[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The conditions list with ours set: other writers' conditions kept, and lastTransitionTime kept
    when the status did not change (API conventions: it marks a transition, not a write)."""
    new = condition(type_, status, reason, message, generation)
    out: list[dict[str, Any]] = []
    for c in current or []:
        if c.get("type") == type_:
            if c.get("status") == new["status"] and c.get("lastTransitionTime"):
                new["lastTransitionTime"] = c["lastTransitionTime"]
            continue
        out.append(dict(c))
    return [*out, new]
