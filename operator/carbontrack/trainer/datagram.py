"""The datagrams between a trainer process and its sidecar, on the pod's loopback (UDP, compact JSON).

To the sidecar: v (VERSION), c (client id, new per process), q (sequence number per sender, so the
sidecar counts losses), t (CLOCK_MONOTONIC in integer nanoseconds, shared by all processes of the
node), k (kind: hello | step | eval | dp | end | gpus | sample | ckpt | poll), s (global step), and per
kind m (metrics), dp (DP-SGD params), g (the GPUs: an inventory, or one counter sample per GPU), u (a
checkpoint's URI).

From the sidecar, while the operator halts the job or when polled: `{"v":1,"k":"ctl","stop":true}`,
with the job's running totals as `"job":{...}` once the operator has answered the sidecar (a client
that does not know a key ignores it).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, TypedDict

VERSION = 1
MAX_DATAGRAM = 60_000  # stay under the 64 KiB UDP limit; larger messages are dropped, not split


def encode(client_id: str, kind: str, seq: int, t_ns: int, step: int, **fields: Any) -> bytes:
    """One datagram to the sidecar. Raises TypeError or ValueError for a field JSON cannot carry
    (NaN and infinities included: the sidecar would refuse them)."""
    body = {"v": VERSION, "c": client_id, "k": kind, "q": seq, "t": t_ns, "s": step, **fields}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


class JobTotals(TypedDict):
    """The job's totals as the operator last answered the sidecar (all pods, not this one's)."""

    emissions_g: float
    """CO2e in grams, PUE included, each interval at the grid intensity then in force."""
    energy_j: float
    """GPU energy measured, before PUE."""
    zone: str
    """The grid zone whose intensity applies."""
    gpus: dict[str, int]
    """GPU model name -> GPUs of it seen ("" where a model was not reported)."""


class Control(NamedTuple):
    """A control datagram from the sidecar."""

    stop: bool
    """Whether the operator halts the job: checkpoint, report it, and hold."""
    job: JobTotals | None
    """The job's totals, when the datagram carries them."""


def decode_control(data: bytes) -> Control | None:
    """The control datagram in `data`, or None for anything else (never raises)."""
    try:
        msg = json.loads(data)
    except ValueError:
        return None
    if not (isinstance(msg, dict) and msg.get("k") == "ctl" and isinstance(msg.get("stop"), bool)):
        return None
    return Control(msg["stop"], _job_totals(msg.get("job")))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _job_totals(raw: Any) -> JobTotals | None:
    """The `job` object of a control datagram, or None when it is not one (never raises)."""
    if not isinstance(raw, dict):
        return None
    emissions, energy, zone, gpus = (raw.get(k) for k in ("emissionsGrams", "energyJoules", "zone", "gpus"))
    e_g, e_j = _number(emissions), _number(energy)
    if e_g is None or e_j is None or not isinstance(zone, str) or not isinstance(gpus, dict):
        return None
    counts = {k: v for k, v in gpus.items() if isinstance(k, str) and type(v) is int and v >= 0}
    return JobTotals(emissions_g=e_g, energy_j=e_j, zone=zone, gpus=counts)
