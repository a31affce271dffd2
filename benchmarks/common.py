"""Shared helpers for benchmarks: percentiles, process footprint, a sidecar to measure against."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[i])


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_sidecar(
    gpus: int = 8, counter: bool = True, extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A real sidecar with simulated GPUs and no operator; returns the process and its UDP address."""
    udp = free_port(socket.SOCK_DGRAM)
    env = {
        **os.environ,
        "CARBONTRACK_ENERGY_BACKEND": "simulated",
        "CARBONTRACK_SIM_GPUS": str(gpus),
        "CARBONTRACK_SIM_TRACE": "bursty:1",
        "CARBONTRACK_SIDECAR_ADDR": f"127.0.0.1:{udp}",
        "CARBONTRACK_HEALTH_PORT": str(free_port()),
        "CARBONTRACK_OPERATOR_URL": "",
        "CARBONTRACK_JOB_NAME": "bench",
        "POD_NAMESPACE": "bench",
        "POD_NAME": "bench-0",
        "CARBONTRACK_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }
    if not counter:
        env["CARBONTRACK_SIM_NO_COUNTER"] = "true"
    proc = subprocess.Popen([sys.executable, "-m", "carbontrack.sidecar"], env=env)
    time.sleep(1.5)
    return proc, f"127.0.0.1:{udp}"


def row(figure: str, ours: str, target: str = "", met: bool | None = None, peer: str = "") -> dict[str, str]:
    """One line of the table in RESULTS.md (benchmarks/run_all gathers them from every benchmark)."""
    return {"figure": figure, "ours": ours, "peer": peer, "target": target,
            "met": "" if met is None else ("yes" if met else "no")}  # fmt: skip


def write_rows(path: str | None, rows: list[dict[str, str]]) -> None:
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
