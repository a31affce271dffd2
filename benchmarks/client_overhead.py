"""What marking a step costs the training loop: carbontrack's client vs CodeCarbon and Zeus.

Each tool is asked the same question, "attribute energy to this step", in its own idiom:
  carbontrack   client.step(n)                                 (one UDP datagram to a live sidecar)
  Zeus          monitor.end_window(prev); monitor.begin_window(n)   (ZeusMonitor, 8 GPUs, no sync)
  CodeCarbon    tracker.stop_task(); tracker.start_task(n)     (EmissionsTracker task API, 8 GPUs)
Peers read the same simulated GPUs as the sidecar (benchmarks/simnvml.py). Latency of every call is
taken with perf_counter_ns; the timer's own floor is reported so it can be subtracted by eye.
carbontrack is measured twice: without NVML in the process (the sampler idle), and with the trainer-side
sampler running against the fake libnvidia-ml.so.1 (tests/fakenvml, 8 GPUs): its thread polls every
10 ms and reads all 8 counters after each new marker, so any cost it adds to step() (GIL hand-offs)
shows here; step() itself never calls NVML.

    python benchmarks/client_overhead.py [--calls 1000000] [--peer-calls 2000]
"""

from __future__ import annotations

import argparse
import array
import gc
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import machine, percentile, row, start_sidecar, write_rows

from carbontrack.energy.simulated import SimulatedBackend, bursty
from carbontrack.trainer import client

TARGET_P50_US, TARGET_P99_US = 3.0, 20.0


def measure(fn: Callable[[int], object], calls: int) -> dict[str, float]:
    lat = array.array("Q", bytes(8 * calls))
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(calls):
            t0 = clock()
            fn(i)
            lat[i] = clock() - t0
    finally:
        gc.enable()
    values = sorted(lat)
    return {
        "calls": calls,
        "p50_us": percentile(values, 50) / 1000,
        "p99_us": percentile(values, 99) / 1000,
        "mean_us": sum(values) / len(values) / 1000,
    }


def timer_floor(calls: int = 200_000) -> float:
    return measure(lambda i: None, calls)["p50_us"]


def ours(calls: int, nvml: str | None = None) -> dict[str, float]:
    """`nvml`: the fake library's path, to measure with the sampler thread running."""
    proc, addr = start_sidecar(gpus=8, extra={"CARBONTRACK_ENERGY_BACKEND": "trainer"} if nvml else None)
    try:
        c = client.Client(addr, nvml=nvml or False)
        measure(c.step, 20_000)  # warm-up
        result = measure(c.step, calls)
        result["errors"] = c.errors
        if c.sampler is not None:
            result["samples"] = c.sampler.samples
            if c.sampler.error or not c.sampler.samples:
                raise RuntimeError(f"the sampler did not run: {c.sampler.error}")
        c.close()
        return result
    finally:
        proc.terminate()
        proc.wait(10)


def fake_nvml(gpus: int = 8) -> str:
    """Build the fake libnvidia-ml.so.1 and point it at an 8-GPU node (tests/fakenvml)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fakenvml import FakeGpu, FakeGpus, build

    from carbontrack.energy.simulated import bursty

    config = Path(tempfile.mkdtemp()) / "nvml.conf"
    FakeGpus([FakeGpu(f"GPU-bench-{i}", bursty(i)) for i in range(gpus)], duration_s=3600).write(config)
    os.environ["FAKE_NVML_CONFIG"] = str(config)
    return str(build())


def zeus(calls: int, gpu: SimulatedBackend) -> dict[str, float]:
    from zeus.monitor import ZeusMonitor

    monitor = ZeusMonitor(gpu_indices=list(range(len(gpu.traces))), cpu_indices=[])
    # sync_execution=False: no CUDA here, and carbontrack does not synchronise either, so both pay
    # only for their bookkeeping (with a GPU, Zeus's default adds a torch.cuda.synchronize per window).
    monitor.begin_window("step-0", sync_execution=False)

    def step(i: int) -> None:
        monitor.end_window(f"step-{i}", sync_execution=False)
        monitor.begin_window(f"step-{i + 1}", sync_execution=False)

    return measure(step, calls)


def codecarbon(calls: int) -> dict[str, float]:
    from codecarbon import EmissionsTracker

    tracker = EmissionsTracker(save_to_file=False, log_level="error", gpu_ids=list(range(8)))
    tracker.start_task("step-0")

    def step(i: int) -> None:
        tracker.stop_task()
        tracker.start_task(f"step-{i + 1}")

    try:
        return measure(step, calls)
    finally:
        tracker.stop()


Results = dict[str, dict[str, float] | str]
PEERS = ("Zeus end_window+begin_window", "CodeCarbon stop_task+start_task")


def measure_all(calls: int, peer_calls: int) -> Results:
    """Ours with the sampler idle and on, then each peer on the simulated GPUs (a peer that cannot run
    here is reported, not fatal)."""
    results: Results = {"machine": machine()}
    results["timer floor"] = {"p50_us": timer_floor()}
    results["carbontrack client.step()"] = ours(calls)
    results["carbontrack client.step(), NVML sampler on"] = ours(calls, nvml=fake_nvml())
    import simnvml

    gpu = SimulatedBackend([bursty(i) for i in range(8)])
    simnvml.install(gpu)
    for name, fn in zip(PEERS, (lambda: zeus(peer_calls, gpu), lambda: codecarbon(peer_calls)), strict=True):
        try:
            results[name] = fn()
        except Exception as exc:
            results[name] = f"could not run: {type(exc).__name__}: {exc}"[:300]
    return results


def print_table(results: Results) -> None:
    print(f"\nStep-marking cost per training step ({results['machine']})\n")
    print("| tool | calls | p50 µs | p99 µs | mean µs |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        if name == "machine":
            continue
        if isinstance(r, str):
            print(f"| {name} | - | {r} | | |")
        elif "calls" in r:
            print(
                f"| {name} | {int(r['calls'])} | {r['p50_us']:.2f} | {r['p99_us']:.2f} | {r['mean_us']:.2f} |"
            )
        else:
            print(f"| {name} | - | {r['p50_us']:.3f} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--peer-calls", type=int, default=2000)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    results = measure_all(args.calls, args.peer_calls)
    print_table(results)
    ours_r = results["carbontrack client.step()"]
    sampled = results["carbontrack client.step(), NVML sampler on"]
    assert isinstance(ours_r, dict) and isinstance(sampled, dict)
    for name, r in (("sampler idle", ours_r), ("sampler on", sampled)):
        print(
            f"\n{name}: p50 ≤ {TARGET_P50_US} µs ({'met' if r['p50_us'] <= TARGET_P50_US else 'MISSED'}), "
            f"p99 ≤ {TARGET_P99_US} µs ({'met' if r['p99_us'] <= TARGET_P99_US else 'MISSED'})"
        )

    def peer(q: str) -> str:
        parts = []
        for name in PEERS:
            r = results[name]
            tool = name.split()[0]
            parts.append(f"{tool} {r[q]:.2f}" if isinstance(r, dict) else f"{tool}: n/a")
        return " · ".join(parts)

    write_rows(args.json, [
        row("step-marking cost p50 (µs)", f"{ours_r['p50_us']:.2f}", f"≤ {TARGET_P50_US:g}",
            ours_r["p50_us"] <= TARGET_P50_US, peer("p50_us")),
        row("step-marking cost p99 (µs)", f"{ours_r['p99_us']:.2f}", f"≤ {TARGET_P99_US:g}",
            ours_r["p99_us"] <= TARGET_P99_US, peer("p99_us")),
        row("step-marking cost p50, trainer NVML sampler on, 8 GPUs (µs)", f"{sampled['p50_us']:.2f}",
            f"≤ {TARGET_P50_US:g}", sampled["p50_us"] <= TARGET_P50_US),
        row("step-marking cost p99, trainer NVML sampler on, 8 GPUs (µs)", f"{sampled['p99_us']:.2f}",
            f"≤ {TARGET_P99_US:g}", sampled["p99_us"] <= TARGET_P99_US),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
