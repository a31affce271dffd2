"""The fake libnvidia-ml.so.1 (fakenvml.c): built with the machine's gcc once per source version, cached.

    lib = build()                                   # .../libnvidia-ml.so.1, cached by source hash
    cfg = FakeGpus([FakeGpu("GPU-a", Constant(300))]).write(tmp_path / "nvml.conf")
    env = fake_env(lib, cfg)                        # LD_LIBRARY_PATH + FAKE_NVML_CONFIG

The real code paths load it through the one ctypes binding (carbontrack.trainer.nvml): the client's
sampler (by name, through LD_LIBRARY_PATH, or by CARBONTRACK_NVML_LIBRARY) and the sidecar's NVML
backend (by name); pynvml, in the GPU tests' fixture, loads it by name too. Traces are the simulated
backend's, written as piecewise-linear points, so ground truth is the same `Trace.energy_j` the unit
tests use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from carbontrack.energy.simulated import Constant, Piecewise, Ramp, Square, Trace

SOURCE = Path(__file__).with_name("fakenvml.c")
LIB_NAME = "libnvidia-ml.so.1"


def cache_dir() -> Path:
    return Path(os.environ.get("CARBONTRACK_CACHE", Path.home() / ".cache" / "carbontrack")) / "fakenvml"


def build() -> Path:
    """Compile fakenvml.c (once per source hash) and return the path of libnvidia-ml.so.1."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = cache_dir() / digest / LIB_NAME
    if out.exists():
        return out
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("the fake NVML library needs gcc (apt-get install gcc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [
            gcc,
            "-O2",
            "-Wall",
            "-Wno-format-truncation",
            "-shared",
            "-fPIC",
            "-o",
            str(tmp),
            str(SOURCE),
            "-lm",
        ],
        check=True,
    )
    tmp.replace(out)  # atomic: parallel builders cannot see a half-written library
    return out


def points(trace: Trace, duration_s: float) -> list[tuple[float, float]]:
    """A simulated trace as (t, W) points whose piecewise-linear integral is the trace's exact energy."""
    if isinstance(trace, Constant):
        return [(0.0, trace.watts)]
    if isinstance(trace, Ramp):
        return [(0.0, trace.start_w), (trace.duration_s, trace.end_w)]
    if isinstance(trace, Square):
        out: list[tuple[float, float]] = []
        t = 0.0
        while t <= duration_s:
            on = t + trace.duty * trace.period_s
            out += [
                (t, trace.high_w),
                (on, trace.high_w),
                (on, trace.low_w),
                (t + trace.period_s, trace.low_w),
            ]
            t += trace.period_s
        return out
    if isinstance(trace, Piecewise):
        return [(t, w) for t, w in zip(trace.ts, trace.ws, strict=True) if t <= duration_s + 10]
    raise TypeError(f"no point form for {trace!r}")


@dataclass
class FakeGpu:
    uuid: str
    trace: Trace = field(default_factory=lambda: Constant(300.0))
    name: str = "NVIDIA H100 80GB HBM3 (fake)"
    counter: bool = True
    offset_mj: int = 0
    mig: bool = False
    mig_devices: list[str] = field(default_factory=list)
    reset_at_s: float | None = None
    lost_at_s: float | None = None
    procs: list[tuple[int, float | None]] = field(default_factory=list)
    """(pid, from trace time) of compute processes on this GPU."""


@dataclass
class FakeGpus:
    gpus: list[FakeGpu]
    start_ns: int = field(default_factory=time.monotonic_ns)
    """CLOCK_MONOTONIC at trace time 0 (shared by every process of the machine)."""
    init_error: int = 0
    duration_s: float = 600.0
    events_from_init: bool = True
    """reset_at_s, lost_at_s and process times count from each process's first nvmlInit."""

    def write(self, path: Path) -> Path:
        lines = [f"start_ns {self.start_ns}", f"init_error {self.init_error}"]
        lines += ["events_from init"] if self.events_from_init else []
        for g in self.gpus:
            lines += [f"device {g.uuid}", f"name {g.name}", f"counter {int(g.counter)}"]
            lines += [f"offset_mj {g.offset_mj}", f"mig {int(g.mig)}"]
            lines += [f"mig_device {m}" for m in g.mig_devices]
            if g.reset_at_s is not None:
                lines.append(f"reset_at {g.reset_at_s!r}")
            if g.lost_at_s is not None:
                lines.append(f"lost_at {g.lost_at_s!r}")
            lines += [f"proc {pid} {-1 if at is None else at!r}" for pid, at in g.procs]
            lines += [f"point {t!r} {w!r}" for t, w in points(g.trace, self.duration_s)]
        path.write_text("\n".join(lines) + "\n")
        return path

    def true_energy_j(self, gpu: int, t0_ns: int, t1_ns: int) -> float:
        """Exact energy of one GPU between two CLOCK_MONOTONIC instants."""
        trace = self.gpus[gpu].trace
        return trace.energy_j((t1_ns - self.start_ns) / 1e9) - trace.energy_j((t0_ns - self.start_ns) / 1e9)


def fake_env(lib: Path, config: Path, visible: str | None = None) -> dict[str, str]:
    """Environment that makes `libnvidia-ml.so.1` resolve to the fake, reading `config`."""
    env = {
        "LD_LIBRARY_PATH": f"{lib.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"),
        "FAKE_NVML_CONFIG": str(config),
    }
    if visible is not None:
        env["FAKE_NVML_VISIBLE"] = visible
    return env
