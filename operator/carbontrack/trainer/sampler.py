"""The trainer's GPU sampler: energy read in the process that holds the GPUs, sent beside the step markers.

A container that requests no GPU often cannot see any (CDI-based GPU Operator >= v25.10, GKE,
Bottlerocket), while the process using a GPU can always read its own devices' energy without
privileges. NvmlSampler runs in a daemon thread when libnvidia-ml.so.1 loads (trainer.nvml: ctypes, no
pynvml in the training image), identifies devices by NVML UUID (never by NVIDIA_VISIBLE_DEVICES, which
reads `void` under CDI and `all` on GKE), and sends timestamped raw counter samples at
CARBONTRACK_SAMPLE_HZ and within one poll (POLL_S) after each step marker. The client's step() never
calls NVML: the sampler notices a new marker by reading the client's sequence number.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from typing import Any, Protocol

from carbontrack.trainer.datagram import encode
from carbontrack.trainer.nvml import (
    NVML_GPU_IS_LOST,
    NVML_LIBRARY,
    NVML_NOT_SUPPORTED,
    Nvml,
    NvmlError,
    load_library,
)

ENV_NVML = "CARBONTRACK_NVML"
"""`off` disables the trainer-side NVML sampler (the sidecar then measures, or reports `unavailable`)."""
ENV_NVML_LIBRARY = "CARBONTRACK_NVML_LIBRARY"
"""Explicit path of the NVML library; default `libnvidia-ml.so.1`, found by the dynamic loader."""
ENV_SAMPLE_HZ = "CARBONTRACK_SAMPLE_HZ"
READ_WINDOW_NS = 50_000
"""The widest call window whose midpoint still stands for the instant of the reading."""


class SamplerOwner(Protocol):
    """The client a sampler sends beside."""

    @property
    def sock(self) -> socket.socket | None:
        """The client's connected socket to the sidecar; None once closed (the sampler then sends nothing)."""
        ...

    @property
    def client_id(self) -> str: ...

    @property
    def markers(self) -> int:
        """The client's sequence number: it changes with every datagram the training thread sends."""
        ...


def own_pid(pid: int) -> bool:
    """A process of this container: the driver names it by a PID of our namespace (drivers that do
    not translate PIDs name host PIDs, which do not exist here: see README on shared GPUs)."""
    return pid == os.getpid() or os.path.exists(f"/proc/{pid}")


class NvmlSampler:
    """Reads this process's GPUs in a daemon thread and sends raw samples beside the step markers.

    Never raises into the trainer: a library that does not load or init is reported once to the
    sidecar (inventory with `err`), a GPU that fails is reported lost, an unexpected error stops
    the sampler and is counted in `errors`.
    """

    POLL_S = 0.01
    """How often the thread checks for a new step marker (100 wake-ups a second, no NVML call)."""
    SCAN_S = 5.0
    """How often MIG mode and the GPU's processes are re-read and the inventory re-sent."""

    def __init__(self, owner: SamplerOwner, lib: ctypes.CDLL, library: str, sample_hz: float = 10.0) -> None:
        self.owner = owner
        self.lib = lib
        self.library = library
        self.period_s = 1.0 / max(sample_hz, 0.1)
        self.nvml: Nvml | None = None
        self.handles: list[ctypes.c_void_p] = []
        self.uuids: list[str] = []
        self.counter: list[bool] = []
        self.lost: list[bool] = []
        self.error = ""
        self.errors = 0
        self.sent = 0
        self.samples = 0
        self.first_ns = self.last_ns = 0
        """CLOCK_MONOTONIC of the first and the newest sample."""
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carbontrack-nvml", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2)

    def _open(self) -> bool:
        try:
            self.nvml = Nvml(self.lib)
            self.handles = self.nvml.handles()
            self.uuids = [self.nvml.uuid(h) for h in self.handles]
            for h in self.handles:
                try:
                    self.nvml.energy_mj(h)
                    self.counter.append(True)
                except NvmlError as exc:
                    self.counter.append(exc.code != NVML_NOT_SUPPORTED)
            self.lost = [False] * len(self.handles)
        except (OSError, NvmlError, AttributeError) as exc:
            self.error = f"{self.library}: {exc}"[:300]
            self.nvml = None
            self._send("gpus", g=[], err=self.error)
            return False
        self.scan()
        return True

    def scan(self) -> None:
        """Inventory: UUID, name, counter, MIG instances and foreign processes of every GPU."""
        if self.nvml is None:
            return
        gpus = []
        for i, h in enumerate(self.handles):
            entry: dict[str, Any] = {"u": self.uuids[i], "i": i, "c": self.counter[i]}
            try:
                entry["n"] = self.nvml.name(h)
                mig = self.nvml.mig_devices(h)
                if mig is not None:
                    entry["mig"] = mig
                pids = self.nvml.pids(h)
                entry["f"] = sum(not own_pid(p) for p in pids)
            except NvmlError as exc:
                if exc.code == NVML_GPU_IS_LOST:
                    self.lost[i] = True
            entry["lost"] = self.lost[i]
            gpus.append(entry)
        self._send("gpus", g=gpus)

    def sample_now(self) -> None:
        """Read every GPU's counter (or power) once and send it with the time of the reading."""
        nvml = self.nvml
        if nvml is None:
            return
        with self._lock:
            g: list[list[Any]] = []
            t = time.monotonic_ns()
            for i, h in enumerate(self.handles):
                if self.lost[i]:
                    g.append([self.uuids[i], None, None, 1, 0])
                    continue
                try:
                    value, at = self._read(nvml, i, h)
                    pair = [value, None] if self.counter[i] else [None, value]
                    g.append([self.uuids[i], *pair, 0, at - t])
                except NvmlError as exc:
                    self.lost[i] = exc.code == NVML_GPU_IS_LOST
                    g.append([self.uuids[i], None, None, int(self.lost[i]), 0])
            self.samples += 1
            self.first_ns, self.last_ns = self.first_ns or t, t
            self._send("sample", t=t, g=g)

    def _read(self, nvml: Nvml, i: int, handle: ctypes.c_void_p) -> tuple[int, int]:
        """One reading and its own instant: the midpoint of a call window of at most READ_WINDOW_NS.

        Another thread may take the GIL between the clock and the call; a window that grew past the
        bound is read again (five tries), so the timestamp belongs to the reading, not to a pause."""
        read = nvml.energy_mj if self.counter[i] else nvml.power_mw
        for _ in range(5):
            before = time.monotonic_ns()
            value = read(handle)
            after = time.monotonic_ns()
            if after - before <= READ_WINDOW_NS:
                break
        return value, (before + after) // 2

    def _send(self, kind: str, t: int | None = None, **fields: Any) -> None:
        """Own sequence numbers and counters: the client's are the training thread's alone."""
        sock = self.owner.sock
        if sock is None:
            return
        self._seq += 1
        try:
            sock.send(encode(self.owner.client_id, kind, self._seq, t or time.monotonic_ns(), 0, **fields))
            self.sent += 1
        except (OSError, ValueError, TypeError):
            self.errors += 1

    def _run(self) -> None:
        try:
            if not self._open():
                return
            last_seq, last_sample, last_scan = -1, 0.0, time.monotonic()
            while not self._stop.wait(self.POLL_S):
                now = time.monotonic()
                seq = self.owner.markers
                if seq != last_seq or now - last_sample >= self.period_s:
                    self.sample_now()
                    last_seq, last_sample = seq, now
                if now - last_scan >= self.SCAN_S:
                    self.scan()
                    last_scan = now
        except Exception as exc:  # never into the trainer: stop sampling, say why
            self.errors += 1
            self.error = f"sampler stopped: {type(exc).__name__}: {exc}"[:300]
        finally:
            with self._lock:
                if self.nvml is not None:
                    self.nvml.shutdown()
                    self.nvml = None


def open_sampler(owner: SamplerOwner, nvml: bool | str | None) -> tuple[NvmlSampler | None, str]:
    """The sampler `nvml` asks for (False: none; a string: that library; None: as the environment says),
    not yet started, or None and why not (for the client's hello)."""
    if nvml is None:
        nvml = os.environ.get(ENV_NVML, "").lower() not in ("off", "false", "0")
    if nvml is False:
        return None, "disabled (CARBONTRACK_NVML=off)"
    library = (nvml if isinstance(nvml, str) else os.environ.get(ENV_NVML_LIBRARY, "")) or NVML_LIBRARY
    try:
        hz = float(os.environ.get(ENV_SAMPLE_HZ, "") or 10.0)
        return NvmlSampler(owner, load_library(library), library, sample_hz=hz), ""
    except (OSError, ValueError) as exc:  # no driver library in this image: say so, once
        return None, f"{library}: {exc}"[:300]
