"""What the sidecar costs its pod: CPU and resident memory with 8 simulated GPUs at 10 Hz.

The sidecar runs as in a pod: markers from a trainer at 10 steps/s, batches to a (local, acking)
operator every second. Two modes: energy counters (the Volta+ path) and power integration (10 Hz
sampling of every GPU). The peer is CodeCarbon's EmissionsTracker measuring the same simulated GPUs
(benchmarks/simnvml.py) in its own process every second, its tightest practical interval.

    python benchmarks/sidecar_footprint.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import cpu_seconds, free_port, machine, row, rss_mb, start_sidecar, write_rows

from carbontrack.trainer import client

TARGET_CPU_PCT, TARGET_RSS_MB = 1.0, 60.0


class Ack(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"accepted": True, "seq": body["seq"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def watch(pid: int, seconds: float, work: Any = None) -> dict[str, float]:
    """CPU % of one core and peak RSS of `pid` over `seconds`, while `work(n)` runs at 10 Hz."""
    cpu0, t0, peak = cpu_seconds(pid), time.monotonic(), 0.0
    n = 0
    while time.monotonic() - t0 < seconds:
        if work:
            work(n)
        n += 1
        peak = max(peak, rss_mb(pid))
        time.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
    return {"cpu_pct": 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0), "rss_mb": peak}


def sidecar(seconds: float, counter: bool) -> dict[str, float]:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Ack)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc, addr = start_sidecar(
        gpus=8, counter=counter, extra={"CARBONTRACK_OPERATOR_URL": f"http://127.0.0.1:{port}"}
    )
    try:
        trainer = client.Client(addr)
        time.sleep(2)  # settle after start-up
        return watch(proc.pid, seconds, lambda n: trainer.step(n + 1))
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()


PEER = """
import logging, sys, time
sys.path.insert(0, 'benchmarks')
import simnvml
from carbontrack.energy.simulated import SimulatedBackend, bursty
simnvml.install(SimulatedBackend([bursty(i) for i in range(8)]))
from codecarbon import EmissionsTracker
t = EmissionsTracker(save_to_file=False, log_level='error', measure_power_secs=1, gpu_ids=list(range(8)))
t.start()
print('ready', flush=True)
time.sleep(3600)
"""


def codecarbon(seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PEER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # amdsmi prints its own complaints to stdout first
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError("CodeCarbon did not start")
        time.sleep(2)
        return watch(proc.pid, seconds)
    finally:
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", help="also write the table's rows here (benchmarks/run_all)")
    args = parser.parse_args()
    rows: dict[str, dict[str, float] | str] = {
        "carbontrack sidecar, energy counters": sidecar(args.seconds, counter=True),
        "carbontrack sidecar, 10 Hz power integration": sidecar(args.seconds, counter=False),
    }
    try:
        rows["CodeCarbon EmissionsTracker (1 s interval)"] = codecarbon(args.seconds)
    except Exception as exc:
        rows["CodeCarbon EmissionsTracker (1 s interval)"] = f"could not run: {exc}"
    print(f"\nSidecar footprint, 8 simulated GPUs, 10 steps/s, {args.seconds:.0f} s ({machine()})\n")
    print("| process | CPU % of one core | peak RSS MB |\n|---|---:|---:|")
    for name, r in rows.items():
        if isinstance(r, str):
            print(f"| {name} | {r} | |")
        else:
            print(f"| {name} | {r['cpu_pct']:.2f} | {r['rss_mb']:.1f} |")
    worst = [r for r in rows.values() if isinstance(r, dict)][:2]
    cpu_ok = all(r["cpu_pct"] <= TARGET_CPU_PCT for r in worst)
    rss_ok = all(r["rss_mb"] <= TARGET_RSS_MB for r in worst)
    print(
        f"\ntargets: CPU ≤ {TARGET_CPU_PCT}% ({'met' if cpu_ok else 'MISSED'}), "
        f"RSS ≤ {TARGET_RSS_MB} MB ({'met' if rss_ok else 'MISSED'})"
    )
    cc = rows["CodeCarbon EmissionsTracker (1 s interval)"]
    cc_cpu = f"CodeCarbon tracker {cc['cpu_pct']:.2f}" if isinstance(cc, dict) else "CodeCarbon: n/a"
    cc_rss = f"CodeCarbon tracker {cc['rss_mb']:.1f}" if isinstance(cc, dict) else "CodeCarbon: n/a"
    out = []
    modes = (("carbontrack sidecar, energy counters", "energy counters"),
             ("carbontrack sidecar, 10 Hz power integration", "10 Hz power integration"))  # fmt: skip
    for name, label in modes:
        r = rows[name]
        if isinstance(r, dict):
            out.append(row(f"sidecar CPU, 8 GPUs, {label}, 10 steps/s (% of a core)", f"{r['cpu_pct']:.2f}",
                           f"≤ {TARGET_CPU_PCT:g}", r["cpu_pct"] <= TARGET_CPU_PCT, cc_cpu))  # fmt: skip
    peak = max((r["rss_mb"] for r in worst), default=float("nan"))
    out.append(row("sidecar peak RSS (MB)", f"{peak:.1f}", f"≤ {TARGET_RSS_MB:g}", rss_ok, cc_rss))
    write_rows(args.json, out)


if __name__ == "__main__":
    main()
