"""An 8-GPU node behind the fake libnvidia-ml.so.1 (tests/fakenvml), and trainer processes whose client
reads it beside a real sidecar: shared by the trainer-side NVML tests with and without Kubernetes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from carbontrack.energy.simulated import Constant
from tests.fakenvml import FakeGpu
from tests.integration.sidecars import Sidecar

ROOT = Path(__file__).resolve().parents[2]
NODE = [f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(8)]
"""An 8-GPU node; each GPU draws a different constant power, so a wrong GPU shows in the number."""


def node_gpus(**by_index: dict[str, Any]) -> list[FakeGpu]:
    """NODE's GPUs at 100 W + 25 W x index; `by_index` ("6": {"mig": True, ...}) changes one."""
    return [FakeGpu(u, Constant(100.0 + 25 * i), **by_index.get(str(i), {})) for i, u in enumerate(NODE)]


def start_trainer(
    sc: Sidecar, env: dict[str, str], steps: int = 12, step_s: float = 0.1, drop: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """A trainer process for the sidecar's pod: `env` on top of a clean one (no fake NVML unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FAKE_NVML")}
    base.pop("LD_LIBRARY_PATH", None)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fakenvml.trainer", str(steps), str(step_s)],
        env={**base, "CARBONTRACK_SIDECAR_ADDR": f"127.0.0.1:{sc.udp}", **env},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def trainer_output(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """What the trainer printed last (its GPUs, samples and error), once it exited 0."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))
