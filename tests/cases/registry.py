"""The kopf handlers the operator registers, read back from a fresh registry."""

from __future__ import annotations

from typing import Any

import kopf

from carbontrack.controller.registration import register
from carbontrack.state.config import OperatorConfig


def registered(config: OperatorConfig) -> dict[str, list[Any]]:
    """Handler id -> its handlers, from a fresh registry (kopf keeps them by kind, behind `_`)."""
    registry = register(config, kopf.OperatorRegistry())
    out: dict[str, list[Any]] = {}
    for kind in (registry._activities, registry._changing, registry._spawning, registry._watching):
        for handler in kind.get_all_handlers():
            out.setdefault(handler.id, []).append(handler)
    return out
