"""Parsing the trainer's datagrams: strict, and a bad one is counted, never fatal."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

KINDS = {"hello", "step", "eval", "dp", "end"}
MAX_METRICS = 64


class BadMarker(ValueError):
    pass


@dataclass(frozen=True)
class Marker:
    client: str
    seq: int
    t: float
    kind: str
    step: int
    metrics: dict[str, float]
    dp: dict[str, float] | None
    visible: str | None


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadMarker(f"{what} must be a finite number")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadMarker(f"{what} must be a non-negative integer")
    return value


def parse(data: bytes) -> Marker:
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMarker(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise BadMarker("not a JSON object")
    if msg.get("v") != 1:
        raise BadMarker(f"unsupported marker version {msg.get('v')!r}")
    kind = msg.get("k")
    if kind not in KINDS:
        raise BadMarker(f"unknown kind {kind!r}")
    raw_metrics = msg.get("m") or {}
    if not isinstance(raw_metrics, dict) or len(raw_metrics) > MAX_METRICS:
        raise BadMarker("m must be an object of at most 64 metrics")
    metrics = {str(k)[:128]: _finite(v, f"metric {k}") for k, v in raw_metrics.items()}
    dp = None
    if kind == "dp":
        raw = msg.get("dp")
        if not isinstance(raw, dict):
            raise BadMarker("dp marker without dp parameters")
        dp = {k: _finite(raw[k], k) for k in ("noise_multiplier", "sample_rate", "delta") if k in raw}
        if len(dp) != 3:
            raise BadMarker("dp needs noise_multiplier, sample_rate and delta")
        if raw.get("accountant_epsilon") is not None:
            dp["accountant_epsilon"] = _finite(raw["accountant_epsilon"], "accountant_epsilon")
    visible = msg.get("visible")
    return Marker(
        client=str(msg.get("c", ""))[:64],
        seq=_count(msg.get("q"), "q"),
        t=_count(msg.get("t"), "t") / 1e9,
        kind=kind,
        step=_count(msg.get("s", 0), "s"),
        metrics=metrics,
        dp=dp,
        visible=visible if isinstance(visible, str) else None,
    )
