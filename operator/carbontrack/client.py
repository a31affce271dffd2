"""Trainer-side client: tell the carbontrack sidecar where step boundaries are.

Standard library only, so it fits any training image (copy this one file if the package is not
installed). Every call sends one UDP datagram to the sidecar on the pod's loopback and returns:
it never blocks, never raises into the training loop, and does nothing when no sidecar is
configured (CARBONTRACK_SIDECAR_ADDR unset), so the same script runs anywhere.

    from carbontrack import client
    client.step(global_step)                  # once per optimizer step, after it completes

Datagram (JSON): v (version), c (client id, new per process), q (sequence number, so the sidecar
counts losses), t (CLOCK_MONOTONIC in integer nanoseconds, shared by all processes of the node), k (kind:
hello | step | eval | dp | end), s (global step), and per kind m (metrics), dp (DP-SGD params).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

VERSION = 1
ENV_ADDR = "CARBONTRACK_SIDECAR_ADDR"
MAX_DATAGRAM = 60_000  # stay under the 64 KiB UDP limit; larger messages are dropped, not split


class Client:
    """One sender per trainer process. Cheap: the step message is a preformatted byte template."""

    def __init__(self, addr: str | None = None) -> None:
        self.sent = 0
        self.errors = 0
        self._seq = 0
        self._last_step = 0
        self._id = uuid.uuid4().hex[:12]
        self._sock: socket.socket | None = None
        addr = addr if addr is not None else os.environ.get(ENV_ADDR, "")
        if not addr:
            return
        try:
            host, _, port = addr.rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((host.strip("[]") or "127.0.0.1", int(port)))
        except (OSError, ValueError):
            self.errors += 1
            return
        self._sock = sock
        head = f'{{"v":{VERSION},"c":"{self._id}","k":"step","q":'
        self._step_fmt = (head + '%d,"t":%d,"s":%d}').encode()
        self._send(self._message("hello", 0, **_identity()))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def step(self, step: int, metrics: dict[str, float] | None = None) -> bool:
        """The global step `step` has just finished. Returns whether a datagram left."""
        if self._sock is None:
            return False
        self._last_step = step
        if metrics:
            return self._send(self._message("step", step, m=metrics))
        self._seq += 1
        try:
            self._sock.send(self._step_fmt % (self._seq, time.monotonic_ns(), step))
        except (OSError, TypeError):
            self.errors += 1
            return False
        self.sent += 1
        return True

    def report_eval(self, metrics: dict[str, float], step: int | None = None) -> bool:
        """Evaluation results (e.g. eval_accuracy) for the quality gate."""
        if self._sock is None:
            return False
        return self._send(self._message("eval", self._step_or_last(step), m=metrics))

    def report_dp(
        self,
        noise_multiplier: float,
        sample_rate: float,
        delta: float,
        accountant_epsilon: float | None = None,
        step: int | None = None,
    ) -> bool:
        """DP-SGD parameters; the operator recomputes epsilon from them and shows yours beside it."""
        if self._sock is None:
            return False
        dp = {"noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "delta": delta}
        if accountant_epsilon is not None:
            dp["accountant_epsilon"] = accountant_epsilon
        return self._send(self._message("dp", self._step_or_last(step), dp=dp))

    def end(self, step: int | None = None) -> bool:
        """Training is over; the sidecar closes the last step and flushes."""
        if self._sock is None:
            return False
        return self._send(self._message("end", self._step_or_last(step)))

    def _step_or_last(self, step: int | None) -> int:
        return self._last_step if step is None else step

    def _message(self, kind: str, step: int, **fields: Any) -> bytes | None:
        self._seq += 1
        body = {
            "v": VERSION,
            "c": self._id,
            "k": kind,
            "q": self._seq,
            "t": time.monotonic_ns(),
            "s": step,
            **fields,
        }
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError):
            self.errors += 1
            return None

    def _send(self, data: bytes | None) -> bool:
        if self._sock is None or data is None or len(data) > MAX_DATAGRAM:
            self.errors += data is not None
            return False
        try:
            self._sock.send(data)
        except OSError:
            self.errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _identity() -> dict[str, Any]:
    """What the sidecar needs to know which GPUs are this trainer's (the device plugin's env)."""
    return {
        "pid": os.getpid(),
        "visible": os.environ.get("NVIDIA_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES"),
        "rank": os.environ.get("RANK"),
    }


_default: Client | None = None


def default() -> Client:
    """The process-wide client, created on first use from the environment."""
    global _default
    if _default is None:
        _default = Client()
    return _default


def step(step: int, metrics: dict[str, float] | None = None) -> bool:
    return default().step(step, metrics)


def report_eval(metrics: dict[str, float], step: int | None = None) -> bool:
    return default().report_eval(metrics, step)


def report_dp(
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    accountant_epsilon: float | None = None,
    step: int | None = None,
) -> bool:
    return default().report_dp(noise_multiplier, sample_rate, delta, accountant_epsilon, step)


def end(step: int | None = None) -> bool:
    return default().end(step)
