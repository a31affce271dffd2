"""Parsing the trainer's datagrams: strict, and a bad one is counted, never fatal."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

KINDS = {"hello", "step", "eval", "dp", "end", "gpus", "sample", "ckpt", "poll"}
MAX_URI = 1024
MAX_METRICS = 64
MAX_GPUS = 64
MAX_UUID = 96


class BadMarker(ValueError):
    pass


@dataclass(frozen=True)
class GpuReport:
    """One GPU of the trainer's inventory, as its own NVML names it."""

    uuid: str
    nvml_index: int
    name: str = ""
    has_counter: bool = True
    mig_devices: tuple[str, ...] | None = None
    """MIG instances the trainer sees on this GPU; None when MIG is off."""
    foreign_processes: int = 0
    lost: bool = False


@dataclass(frozen=True)
class GpuSample:
    """One raw reading of one GPU: the counter (mJ) or, without one, power (mW); lost when neither."""

    uuid: str
    energy_mj: int | None
    power_mw: int | None
    lost: bool
    dt_s: float = 0.0
    """When this GPU was read, relative to the sample's t (each GPU is timestamped at its own call)."""


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
    gpus: tuple[GpuReport, ...] | None = None
    """kind gpus: the trainer's inventory (empty with `error` when its NVML did not load)."""
    samples: tuple[GpuSample, ...] | None = None
    error: str | None = None
    uri: str | None = None
    """kind ckpt: where the checkpoint was saved."""


def _uuid(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_UUID:
        raise BadMarker("a GPU uuid must be a string of 1-96 characters")
    return value


def _optional_count(value: Any, what: str) -> int | None:
    return None if value is None else _count(value, what)


def _gpu_list(raw: Any) -> list[Any]:
    if not isinstance(raw, list) or len(raw) > MAX_GPUS:
        raise BadMarker("g must be a list of at most 64 GPUs")
    return raw


def _inventory(raw: Any) -> tuple[GpuReport, ...]:
    out = []
    for g in _gpu_list(raw):
        if not isinstance(g, dict):
            raise BadMarker("an inventory entry must be an object")
        mig = g.get("mig")
        if mig is not None and (not isinstance(mig, list) or len(mig) > 8):
            raise BadMarker("mig must be a list of at most 8 uuids")
        out.append(
            GpuReport(
                uuid=_uuid(g.get("u")),
                nvml_index=_count(g.get("i", 0), "i"),
                name=str(g.get("n", ""))[:96],
                has_counter=bool(g.get("c", True)),
                mig_devices=None if mig is None else tuple(_uuid(m) for m in mig),
                foreign_processes=_count(g.get("f", 0), "f"),
                lost=bool(g.get("lost", False)),
            )
        )
    return tuple(out)


def _samples(raw: Any) -> tuple[GpuSample, ...]:
    out = []
    for g in _gpu_list(raw):
        if not isinstance(g, list) or len(g) not in (4, 5):
            raise BadMarker("a sample entry must be [uuid, energy_mj, power_mw, lost, dt_ns]")
        dt = g[4] if len(g) == 5 else 0
        if isinstance(dt, bool) or not isinstance(dt, int) or abs(dt) > 10**9:
            raise BadMarker("dt_ns must be an integer within a second of the sample's t")
        out.append(
            GpuSample(
                _uuid(g[0]),
                _optional_count(g[1], "energy_mj"),
                _optional_count(g[2], "power_mw"),
                bool(g[3]),
                dt / 1e9,
            )
        )
    return tuple(out)


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
    uri = msg.get("u")
    if kind == "ckpt" and (not isinstance(uri, str) or not 0 < len(uri) <= MAX_URI):
        raise BadMarker("a ckpt marker needs u, a URI of 1-1024 characters")
    visible = msg.get("visible")
    error = msg.get("err")
    return Marker(
        client=str(msg.get("c", ""))[:64],
        seq=_count(msg.get("q"), "q"),
        t=_count(msg.get("t"), "t") / 1e9,
        kind=kind,
        step=_count(msg.get("s", 0), "s"),
        metrics=metrics,
        dp=dp,
        visible=visible if isinstance(visible, str) else None,
        gpus=_inventory(msg.get("g")) if kind == "gpus" else None,
        samples=_samples(msg.get("g")) if kind == "sample" else None,
        error=str(error)[:300] if error else None,
        uri=uri if kind == "ckpt" else None,
    )
