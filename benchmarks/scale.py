"""The operator at scale: many CarbonTrackedJobs x pods on kwok nodes, telemetry from a load generator.

    python benchmarks/scale.py [--jobs 1000] [--pods 8] [--seconds 120]

Starts its own control plane (enough kwok nodes for jobs x pods GPUs), the operator, creates the jobs
(each at full scale: canary = replicas, no gates), and once their pods run, sends telemetry for every
pod at 1 batch/s speaking the real protocol (pod-bound tokens from TokenRequest, cumulative counters,
10 step records per batch). Prints: operator RSS, reconcile latency (create -> Job exists) p50/p99,
status patches/s per job, ingested records/s, and the apiserver's request rate (all clients; the
operator's share is not separable without audit logs). Targets: p99 < 2 s, RSS < 500 MB, <= 0.1
status patches/s per job. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, percentile, rss_mb
from tests.cluster.controlplane import ControlPlane
from tests.integration.harness import Operator


class Api:
    """Minimal apiserver client with the admin certificate (urllib: no extra dependency)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.base = cp.server
        self.ctx = ssl.create_default_context(cafile=str(cp.pki / "ca.crt"))
        self.ctx.load_cert_chain(str(cp.pki / "admin.crt"), str(cp.pki / "admin.key"))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            raw = r.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()


def ctj(name: str, pods: int) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1", "kind": "CarbonTrackedJob", "metadata": {"name": name},
        "spec": {
            "replicas": pods, "totalSteps": 100000,
            "canary": {"replicas": pods, "minSteps": 1000000, "stages": [100]},
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "trainer", "image": "trainer:bench", "resources": {"limits": {"nvidia.com/gpu": 1}}}
            ]}},
        },
    }  # fmt: skip


def apiserver_requests(api: Api) -> float:
    total = 0.0
    for line in str(api.call("GET", "/metrics")).splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    ns = "scale"
    work = Path(tempfile.mkdtemp(prefix="carbontrack-scale-"))
    cp = ControlPlane(work / "cluster")
    nodes = max(2, -(-args.jobs * args.pods // 8))
    op: Operator | None = None
    try:
        cp.up(nodes=2)
        cp.add_gpu_nodes(nodes - 2, first=2)
        cp.kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "crd/carbontrackedjobs.carbontrack.io")
        # production settings: one status patch per job per 10 s, gates judged every 10 s
        op = Operator(
            cp, work / "operator.log", CARBONTRACK_STATUS_INTERVAL_S="10", CARBONTRACK_JUDGE_INTERVAL_S="10"
        )
        op.start()
        api = Api(cp)
        api.call(
            "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        )
        time.sleep(2)  # default ServiceAccount
        created: dict[str, float] = {}
        seen: dict[str, float] = {}

        def create(i: int) -> None:
            name = f"job-{i:04d}"
            api.call(
                "POST",
                f"/apis/carbontrack.io/v1alpha1/namespaces/{ns}/carbontrackedjobs",
                ctj(name, args.pods),
            )
            created[name] = time.monotonic()

        stop_poll = threading.Event()

        def poll_jobs() -> None:
            while not stop_poll.is_set():
                for item in api.call("GET", f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]:
                    seen.setdefault(item["metadata"]["name"], time.monotonic())
                time.sleep(0.1)

        poller = threading.Thread(target=poll_jobs, daemon=True)
        poller.start()
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.jobs)))
        print(f"created {args.jobs} jobs in {time.monotonic() - t0:.1f}s", flush=True)
        deadline = time.monotonic() + 600
        while len(seen) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.5)
        stop_poll.set()
        latencies = sorted(max(seen[n] - created[n], 0.0) for n in created if n in seen)
        # pods and their tokens
        want = args.jobs * args.pods
        pods: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            pods = [p for p in api.call("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
                    if p.get("status", {}).get("phase") == "Running"]  # fmt: skip
            if len(pods) >= want:
                break
            time.sleep(2)
        print(f"{len(pods)} pods running", flush=True)

        def token(p: dict[str, Any]) -> tuple[dict[str, Any], str]:
            bound = {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": p["metadata"]["name"],
                "uid": p["metadata"]["uid"],
            }
            req = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": ["carbontrack"], "expirationSeconds": 3600, "boundObjectRef": bound},
            }
            out = api.call("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/default/token", req)
            return p, out["status"]["token"]

        with ThreadPoolExecutor(8) as pool:
            senders = list(pool.map(token, pods))
        req0 = apiserver_requests(api)
        m0 = op.metrics()
        records = [0]
        errors = [0]
        stop = threading.Event()

        def send(idx: int) -> None:
            p, tok = senders[idx]
            seq, energy, step = 0, 0.0, 0
            job = p["metadata"]["labels"]["carbontrack.io/job"]
            while not stop.is_set():
                seq += 1
                steps = [{"step": step + k + 1, "firstStep": step + k, "energyJoules": 30.0, "durationS": 0.1,
                          "endedAt": time.time()} for k in range(10)]  # fmt: skip
                step += 10
                energy += 300.0
                body = {"version": 1, "job": {"namespace": ns, "name": job},
                        "pod": {"namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]},
                        "bootId": "bench", "seq": seq, "sentAt": time.time(), "method": "simulated",
                        "gpus": [{"index": 0, "energyJoules": energy}], "stepsSeen": step, "globalStep": step,
                        "steps": steps}  # fmt: skip
                headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
                data = json.dumps(body).encode()
                req = urllib.request.Request(
                    op.url + "/v1/telemetry", data=data, method="POST", headers=headers
                )
                try:
                    with urllib.request.urlopen(req, timeout=30):
                        records[0] += 10
                except (urllib.error.URLError, OSError):
                    errors[0] += 1
                stop.wait(1.0)

        threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(senders))]
        t1 = time.monotonic()
        for t in threads:
            t.start()
        peak = 0.0
        assert op.proc is not None
        while time.monotonic() - t1 < args.seconds:
            peak = max(peak, rss_mb(op.proc.pid))
            time.sleep(1)
        stop.set()
        elapsed = time.monotonic() - t1
        req1 = apiserver_requests(api)
        m1 = op.metrics()

        def patches(text: str) -> float:
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                       if ln.startswith("carbontrack_status_patches_total{"))  # fmt: skip

        per_job = (patches(m1) - patches(m0)) / elapsed / args.jobs
        print(f"\nScale: {args.jobs} CarbonTrackedJobs x {args.pods} pods, {args.seconds:.0f} s of telemetry "
              f"({machine()})\n")  # fmt: skip
        print("| figure | value | target |\n|---|---:|---:|")
        print(f"| reconcile latency p50 (create -> Job) s | {percentile(latencies, 50):.2f} | |")
        print(f"| reconcile latency p99 s | {percentile(latencies, 99):.2f} | < 2 |")
        print(f"| operator peak RSS MB | {peak:.0f} | < 500 |")
        print(f"| status patches/s per job | {per_job:.3f} | <= 0.1 |")
        print(f"| ingested step records/s | {records[0] / elapsed:.0f} | |")
        print(f"| telemetry send errors | {errors[0]} | |")
        print(f"| apiserver requests/s (all clients) | {(req1 - req0) / elapsed:.1f} | |")
        return 0
    finally:
        if op is not None:
            op.stop()
        cp.down()


if __name__ == "__main__":
    raise SystemExit(main())
