"""Trainer-side NVML end to end: the real client's ctypes sampler and the real sidecar process, with
the fake libnvidia-ml.so.1 (tests/fakenvml) standing in for the driver; no Kubernetes here.

Every case is a container setup met in real clusters: what the trainer's env says about its GPUs
(CDI: `void`; GKE: nothing) must not matter, only what its own NVML sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carbontrack.api.wire import TelemetryBatch
from carbontrack.energy.meter import COUNTER_UPDATE_S
from carbontrack.energy.simulated import Constant
from carbontrack.trainer.sampler import READ_WINDOW_NS
from tests.fakenvml import FakeGpu, FakeGpus, build, fake_env
from tests.integration.sidecars import Sidecar
from tests.integration.test_sidecar_process import Receiver, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
NODE = [f"GPU-{i:08x}-0000-4000-8000-{i:012x}" for i in range(8)]
"""An 8-GPU node; each GPU draws a different constant power, so a wrong GPU shows in the number."""


def node_gpus(**by_index: dict[str, Any]) -> list[FakeGpu]:
    return [FakeGpu(u, Constant(100.0 + 25 * i), **by_index.get(str(i), {})) for i, u in enumerate(NODE)]


@pytest.fixture(scope="module")
def lib() -> Path:
    return build()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    port = free_port()
    r = Receiver(port)
    yield r, f"http://127.0.0.1:{port}"
    r.close()


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
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_trainer(
    sc: Sidecar, env: dict[str, str], steps: int = 12, step_s: float = 0.1, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    return trainer_output(start_trainer(sc, env, steps, step_s, drop))


def finish(sc: Sidecar, r: Receiver, steps: int = 12) -> TelemetryBatch:
    wait_for(lambda: len(r.records()) >= steps, timeout=15)
    log = sc.stop()
    final = r.batches[-1]
    assert final.final, log
    return final


def sidecar(tmp: Path, url: str, **env: str) -> Sidecar:
    """The injected sidecar as the operator now configures it: trainer mode, no GPU env at all."""
    return Sidecar(tmp, url, CARBONTRACK_ENERGY_BACKEND="trainer", **env)


def exact_bound_j(watts: float, gpus: int) -> float:
    """Per step: the counters' integer mJ at both ends, and each reading's own instant, the midpoint
    of its NVML call (windows <= READ_WINDOW_NS: at most half of one off at either end)."""
    return 0.002 * gpus + watts * READ_WINDOW_NS / 1e9


def assert_exact_per_step(r: Receiver, watts: float, gpus: int) -> None:
    by_step = {rec.step: rec for b in r.batches for rec in b.steps}
    assert sorted(by_step) == list(range(1, len(by_step) + 1))
    for rec in by_step.values():
        # constant power: energy is watts x the marker-to-marker time
        assert abs(rec.energy_joules - watts * rec.duration_s) <= exact_bound_j(watts, gpus), (rec, watts)


def test_cdi_trainer_sees_2_of_8_gpus_exact_per_step_energy_with_no_gpu_env_on_the_sidecar(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    cfg = FakeGpus(node_gpus()).write(tmp_path / "node.conf")
    sc = sidecar(tmp_path, url)
    assert "NVIDIA_VISIBLE_DEVICES" not in {k for k in sc.env if k not in os.environ}
    out = run_trainer(sc, {**fake_env(lib, cfg, visible="2,5"), "NVIDIA_VISIBLE_DEVICES": "void"})
    assert out["uuids"] == [NODE[2], NODE[5]] and out["error"] == "" and out["samples"] > 0
    final = finish(sc, r)
    assert final.method == "energy-counter" and final.method_reason == "the trainer's NVML samples"
    assert [(g.index, g.uuid, g.sharing) for g in final.gpus] == [
        (0, NODE[2], "exclusive"),
        (1, NODE[5], "exclusive"),
    ]
    assert_exact_per_step(r, 150.0 + 225.0, 2)
    assert final.uncertainty_joules == pytest.approx(2 * COUNTER_UPDATE_S * (150 + 225), rel=0.01)
    assert sum(rec.energy_joules for rec in {x.step: x for b in r.batches for x in b.steps}.values()) <= (
        final.energy_joules + 1e-9
    )


def test_gke_trainer_without_visible_devices_env_is_measured_by_uuid(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    cfg = FakeGpus(node_gpus()).write(tmp_path / "node.conf")
    sc = sidecar(tmp_path, url)
    out = run_trainer(
        sc, fake_env(lib, cfg, visible="7"), drop=("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
    )
    assert out["uuids"] == [NODE[7]]
    final = finish(sc, r)
    assert [g.uuid for g in final.gpus] == [NODE[7]] and final.method == "energy-counter"
    assert_exact_per_step(r, 275.0, 1)


def test_mig_mode_is_reported_as_board_energy(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    gpus = node_gpus(**{"3": {"mig": True, "mig_devices": ["MIG-3a", "MIG-3b"]}})
    cfg = FakeGpus(gpus).write(tmp_path / "node.conf")
    sc = sidecar(tmp_path, url)
    run_trainer(sc, fake_env(lib, cfg, visible="3"))
    (gpu,) = finish(sc, r).gpus
    assert (gpu.uuid, gpu.sharing, gpu.energy_joules > 0) == (NODE[3], "mig", True)


def test_a_foreign_process_on_the_gpu_marks_it_shared(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    foreign = next(p for p in range(4_194_000, 4_194_300) if not os.path.exists(f"/proc/{p}"))
    gpus = node_gpus(**{"1": {"procs": [(0, None)]}})
    cfg_path = FakeGpus(gpus).write(tmp_path / "node.conf")
    # `self` (the trainer) and a process of another PID namespace on GPU 1; GPU 4 has only the trainer
    text = cfg_path.read_text().replace("proc 0 -1", f"proc self\nproc {foreign}")
    cfg_path.write_text(text.replace(f"device {NODE[4]}\n", f"device {NODE[4]}\nproc self\n"))
    sc = sidecar(tmp_path, url)
    run_trainer(sc, fake_env(lib, cfg_path, visible="1,4"))
    final = finish(sc, r)
    assert [(g.uuid, g.sharing, g.foreign_processes) for g in final.gpus] == [
        (NODE[1], "shared", 1),
        (NODE[4], "exclusive", 0),
    ]
    assert final.shared_energy_joules == pytest.approx(final.gpus[0].energy_joules)


def test_counter_reset_by_a_driver_reload_loses_no_counted_energy(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    fake = FakeGpus([FakeGpu(NODE[0], Constant(400.0), offset_mj=10**12, reset_at_s=1.2)])
    cfg = fake.write(tmp_path / "node.conf")
    sc = sidecar(tmp_path, url)
    out = run_trainer(sc, fake_env(lib, cfg), steps=15)
    final = finish(sc, r, 15)
    (gpu,) = final.gpus
    truth = fake.true_energy_j(0, out["first_ns"], out["last_ns"])
    # counted: everything but the moments between the last reading and the reload (readings <= 0.1 s apart)
    assert truth - 400.0 * 0.1 - 0.01 <= gpu.energy_joules <= truth + 0.01
    assert gpu.energy_joules + gpu.uncertainty_joules >= truth  # the stated bound covers the hidden part
    assert gpu.uncertainty_joules > 2 * COUNTER_UPDATE_S * 400.0  # the reset gap on top
    assert_exact_per_step_except(r, 400.0, around_s=1.2)


def assert_exact_per_step_except(r: Receiver, watts: float, around_s: float) -> None:
    """All steps exact but those touching the gap between the last reading before the reload and the
    first after it (two at most: the gap is interpolated across a marker); those are short, never long."""
    records = sorted({x.step: x for b in r.batches for x in b.steps}.values(), key=lambda x: x.step)
    inexact = [x for x in records if abs(x.energy_joules - watts * x.duration_s) > exact_bound_j(watts, 1)]
    assert len(inexact) <= 2 and all(x.energy_joules < watts * x.duration_s for x in inexact), inexact
    assert sum(watts * x.duration_s - x.energy_joules for x in inexact) <= watts * 0.1 + 0.01


def test_a_lost_gpu_is_frozen_and_the_other_measured_on(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    fake = FakeGpus([FakeGpu(NODE[0], Constant(300.0), lost_at_s=1.0), FakeGpu(NODE[1], Constant(100.0))])
    cfg = fake.write(tmp_path / "node.conf")
    sc = sidecar(tmp_path, url)
    run_trainer(sc, fake_env(lib, cfg), steps=20)
    final = finish(sc, r, 20)
    lost, alive = final.gpus
    assert lost.lost and not alive.lost
    # frozen at its last reading before it was lost 1.0 s after the trainer's nvmlInit (readings come
    # every 100 ms and after each step, the first one after the 10 ms poll)
    assert 300.0 * 0.85 <= lost.energy_joules <= 300.0 * 1.0
    assert alive.energy_joules > 100.0 * 2.0


def test_trainer_without_the_library_reports_unavailable_with_the_reason(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    r, url = receiver
    sc = sidecar(tmp_path, url)
    out = run_trainer(sc, {"CARBONTRACK_NVML_LIBRARY": str(tmp_path / "missing" / "libnvidia-ml.so.1")})
    assert not out["sampler"]
    final = finish(sc, r)
    assert final.method == "unavailable" and final.gpus == []
    assert "the trainer could not read NVML" in final.method_reason and "missing" in final.method_reason


def test_opt_in_sidecar_nvml_measures_exactly_the_trainers_uuids(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    """nvml mode, where the cluster gives the sidecar the node's GPUs: the sidecar's NVML
    backend against the same library."""
    r, url = receiver
    cfg = FakeGpus(node_gpus()).write(tmp_path / "node.conf")
    sc = Sidecar(tmp_path, url, CARBONTRACK_ENERGY_BACKEND="nvml", **fake_env(lib, cfg))  # sees all 8
    run_trainer(sc, fake_env(lib, cfg, visible="2,5"))
    final = finish(sc, r)
    assert final.method == "energy-counter" and [g.uuid for g in final.gpus] == [NODE[2], NODE[5]]
    total_s = sum(x.duration_s for x in {x.step: x for b in r.batches for x in b.steps}.values())
    steps_j = sum(x.energy_joules for x in {x.step: x for b in r.batches for x in b.steps}.values())
    assert abs(steps_j / total_s - 375.0) <= 0.5  # the sidecar reads at marker arrival: ms jitter


def test_opt_in_sidecar_nvml_refuses_mismatched_uuids(
    tmp_path: Path, lib: Path, receiver: tuple[Receiver, str]
) -> None:
    """The sidecar's NVML sees other GPUs than the trainer's (another node's view, a wrong mapping)."""
    r, url = receiver
    trainer_cfg = FakeGpus(node_gpus()).write(tmp_path / "trainer.conf")
    other = FakeGpus([FakeGpu(f"GPU-ffff{i}", Constant(500.0)) for i in range(8)]).write(
        tmp_path / "other.conf"
    )
    sc = Sidecar(tmp_path, url, CARBONTRACK_ENERGY_BACKEND="nvml", **fake_env(lib, other))
    run_trainer(sc, fake_env(lib, trainer_cfg, visible="2,5"))
    final = finish(sc, r)
    assert final.method == "unavailable" and final.gpus == [] and final.energy_joules == 0
    assert "mismatched GPU UUIDs" in final.method_reason and NODE[2] in final.method_reason


GPU_TESTS = "tests/integration/test_nvml_gpu.py"


def test_the_gpu_marked_tests_run_against_the_fake_library(tmp_path: Path, lib: Path) -> None:
    """Keeps tests/integration/test_nvml_gpu.py runnable where no GPU is lent: the same tests, whole,
    against the fake driver (on a GPU machine they run against the real one)."""
    cfg = FakeGpus([FakeGpu("GPU-fake-0", Constant(300.0))]).write(tmp_path / "gpu.conf")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / GPU_TESTS)],
        env={**os.environ, **fake_env(lib, cfg)}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "3 passed" in proc.stdout, proc.stdout[-2000:]
