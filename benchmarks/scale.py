"""The operator at scale: many CarbonTrackedJobs x pods on kwok nodes, telemetry from a load generator.

    python benchmarks/scale.py [--jobs 1000] [--pods 8] [--seconds 120]

Starts its own control plane (enough kwok nodes for jobs x pods GPUs), the operator, creates the jobs
(each at full scale: canary = replicas, no gates), and once their pods run, sends telemetry for every
pod at 1 batch/s speaking the real protocol (pod-bound tokens from TokenRequest, cumulative counters,
10 step records per batch; asyncio, one process). Prints: operator RSS, reconcile latency (create ->
Job appears in a watch) p50/p99, status patches/s per job, batches offered and accepted, and the
apiserver's request rate: the operator's own (it acts as the chart's ServiceAccount, and the
apiserver's audit log attributes every request) and all clients'. Targets (issue 15): reconcile p99
<= 1 s, RSS < 400 MB at 1000 x 8, <= 0.1 status patches/s per job. Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_seconds, machine, percentile, row, rss_mb, write_rows
from tests.cluster.controlplane import ControlPlane
from tests.integration.harness import Operator, chart_identity


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


def ctj(name: str, pods: int, suspended: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1", "kind": "CarbonTrackedJob", "metadata": {"name": name},
        "spec": {
            "replicas": pods, "totalSteps": 100000, "suspend": suspended,
            "canary": {"replicas": pods, "minSteps": 1000000, "stages": [100]},
            "gates": {"allowEmpty": True},  # measures reconcile cost, not gates
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


OPERATOR_USER = "system:serviceaccount:carbontrack-system:carbontrack"


def _at(stamp: str) -> float:
    """An audit event's timestamp (RFC 3339, `Z`) as unix time."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _kind(event: dict[str, Any]) -> str:
    """`verb resource[/subresource]` of an audit event."""
    ref = event.get("objectRef", {})
    sub = "/" + ref["subresource"] if ref.get("subresource") else ""
    return f"{event['verb']} {ref.get('resource', '?')}{sub}"


def operator_requests(audit_log: Path, since: float, until: float) -> tuple[int, Counter[str]]:
    """Requests the operator's ServiceAccount made in [since, until) (wall clock), from the audit log."""
    count, kinds = 0, Counter[str]()
    with audit_log.open() as f:
        for line in f:
            if OPERATOR_USER not in line:
                continue
            event = json.loads(line)
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            if since <= _at(event["stageTimestamp"]) < until:
                count += 1
                kinds[_kind(event)] += 1
    return count, kinds


def audit_latencies(audit_log: Path) -> list[float]:
    """Create -> Job latency per CarbonTrackedJob from the apiserver's own clock: the CR's create
    completing, then the operator's create of its Job completing (the benchmark's threads, which share
    a GIL, take no part in the timing)."""
    created: dict[str, float] = {}
    jobs: dict[str, float] = {}
    with audit_log.open() as f:
        for line in f:
            if '"verb":"create"' not in line:
                continue
            e = json.loads(line)
            ref = e.get("objectRef", {})
            if e.get("stage") != "ResponseComplete" or e.get("responseStatus", {}).get("code") != 201:
                continue
            at = _at(e["stageTimestamp"])
            if ref.get("resource") == "carbontrackedjobs" and not ref.get("subresource"):
                created[ref["name"]] = at
            elif ref.get("resource") == "jobs" and e.get("user", {}).get("username") == OPERATOR_USER:
                jobs[ref["name"]] = at  # job_name_for(): the CR's own name when it is short, as here
    return sorted(max(jobs[n] - t, 0.0) for n, t in created.items() if n in jobs)


def apiserver_times(audit_log: Path) -> dict[str, list[float]]:
    """Seconds the apiserver itself spent (received -> response complete) on the CRs' creates and on
    the operator's requests, by verb and resource: tells a slow apiserver from a slow operator."""
    out: dict[str, list[float]] = {}
    with audit_log.open() as f:
        for line in f:
            e = json.loads(line)
            if e.get("stage") != "ResponseComplete":
                continue
            who = "operator" if e.get("user", {}).get("username") == OPERATOR_USER else "others"
            took = _at(e["stageTimestamp"]) - _at(e["requestReceivedTimestamp"])
            out.setdefault(f"{who} {_kind(e)}", []).append(took)
    return out


def print_apiserver_times(audit_log: Path) -> None:
    times = apiserver_times(audit_log)
    print("apiserver time per request (count, p50 s, p99 s):")
    for key, got in sorted(times.items(), key=lambda kv: -len(kv[1]))[:14]:
        got.sort()
        print(f"  {key}: {len(got)}, {percentile(got, 50):.3f}, {percentile(got, 99):.3f}")


def watch_jobs(api: Api, ns: str, seen: dict[str, float], stop: threading.Event) -> None:
    """When each Job appears, from a watch (listing 1000 Jobs every 100 ms would load the apiserver)."""
    while not stop.is_set():
        req = urllib.request.Request(
            f"{api.base}/apis/batch/v1/namespaces/{ns}/jobs?watch=1&timeoutSeconds=60"
        )
        try:
            with urllib.request.urlopen(req, context=api.ctx, timeout=70) as r:
                for line in r:
                    event = json.loads(line)
                    if event["type"] == "ADDED":
                        seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                    if stop.is_set():
                        return
        except (OSError, ValueError):
            time.sleep(0.5)


async def load(
    url: str, ns: str, senders: list[tuple[dict[str, Any], str]], seconds: float
) -> tuple[int, int, int]:
    """Every pod sends one batch (10 step records) a second, as its sidecar would; returns
    (batches offered, batches accepted, errors). One process, asyncio: it shares the machine's cores."""
    import aiohttp

    offered = accepted = errors = 0
    stop_at = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def pod(p: dict[str, Any], tok: str, offset: float) -> None:
            nonlocal offered, accepted, errors
            await asyncio.sleep(offset)
            seq, energy, step = 0, 0.0, 0
            job = p["metadata"]["labels"]["carbontrack.io/job"]
            headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
            next_at = time.monotonic()
            while time.monotonic() < stop_at:
                seq += 1
                now = time.time()
                steps = [{"step": step + k + 1, "firstStep": step + k, "energyJoules": 30.0, "durationS": 0.1,
                          "endedAt": now} for k in range(10)]  # fmt: skip
                step += 10
                energy += 300.0
                body = {"version": 1, "job": {"namespace": ns, "name": job},
                        "pod": {"namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]},
                        "bootId": "bench", "seq": seq, "sentAt": now, "method": "simulated",
                        "gpus": [{"index": 0, "energyJoules": energy}], "stepsSeen": step, "globalStep": step,
                        "steps": steps}  # fmt: skip
                offered += 1
                try:
                    async with http.post(url + "/v1/telemetry", data=json.dumps(body), headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            accepted += 1
                        else:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                next_at += 1.0
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        n = len(senders)
        await asyncio.gather(*(pod(p, tok, i / n) for i, (p, tok) in enumerate(senders)))
    return offered, accepted, errors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--json", help="also write the table's rows here (benchmarks/run_all)")
    parser.add_argument(
        "--suspended",
        action="store_true",
        help="create the jobs suspended (no pods start): reconcile latency without the control plane "
        "starting jobs x pods pods on the same cores; no telemetry phase",
    )
    args = parser.parse_args()
    ns = "scale"
    work = Path(tempfile.mkdtemp(prefix="carbontrack-scale-"))
    cp = ControlPlane(work / "cluster")
    # created suspended, no pod ever starts: GPU nodes would only add their kubelets' heartbeats (1000
    # kwok nodes patched their status and leases 60 times a second, on the same two cores)
    nodes = 2 if args.suspended else max(2, -(-args.jobs * args.pods // 8))
    op: Operator | None = None
    try:
        cp.up(nodes=2, audit=True, client_qps=200, flow_control=True)  # APF: as in a real cluster
        cp.add_gpu_nodes(nodes - 2, first=2)
        cp.kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
        cp.wait_established("crd/carbontrackedjobs.carbontrack.io")
        # production settings (one status patch per job per 10 s, gates judged every 10 s), acting as
        # the chart's ServiceAccount with its ClusterRole, so the audit log tells its requests apart
        op = Operator(
            cp, work / "operator.log", CARBONTRACK_STATUS_INTERVAL_S="10", CARBONTRACK_JUDGE_INTERVAL_S="10",
            CARBONTRACK_TELEMETRY_PLAINTEXT="true",  # the load generator speaks plain HTTP, as first measured
            KUBECONFIG=str(chart_identity(cp)),
        )  # fmt: skip
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
            created[name] = time.monotonic()
            api.call(
                "POST",
                f"/apis/carbontrack.io/v1alpha1/namespaces/{ns}/carbontrackedjobs",
                ctj(name, args.pods, args.suspended),
            )

        stop_watch = threading.Event()
        watcher = threading.Thread(target=watch_jobs, args=(api, ns, seen, stop_watch), daemon=True)
        watcher.start()
        time.sleep(1)
        assert op.proc is not None
        t0, cpu0 = time.monotonic(), cpu_seconds(op.proc.pid)
        parts = {"operator": op.proc.pid, **cp.pids}
        parts_cpu0 = {k: cpu_seconds(pid) for k, pid in parts.items()}
        self_cpu0 = time.process_time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.jobs)))
        create_s = time.monotonic() - t0
        print(f"created {args.jobs} jobs in {create_s:.1f}s", flush=True)
        deadline = time.monotonic() + 900
        while len(seen) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.5)
        stop_watch.set()
        reconcile_cores = (cpu_seconds(op.proc.pid) - cpu0) / (time.monotonic() - t0)
        phase_s = time.monotonic() - t0
        where = {k: (cpu_seconds(pid) - parts_cpu0[k]) / phase_s for k, pid in parts.items()}
        where["this load generator"] = (time.process_time() - self_cpu0) / phase_s
        cores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(where.items(), key=lambda kv: -kv[1]))
        print(f"cores used while reconciling ({phase_s:.0f} s): {cores}; total {sum(where.values()):.2f} "
              f"of {os.cpu_count()}", flush=True)  # fmt: skip
        watched = sorted(max(seen[n] - created[n], 0.0) for n in created if n in seen)
        time.sleep(2)  # the audit backend flushes
        latencies = audit_latencies(cp.audit_log)
        print_apiserver_times(cp.audit_log)
        w50, w99 = percentile(watched, 50), percentile(watched, 99)
        print(f"client-observed (watch) p50 {w50:.2f} s, p99 {w99:.2f} s; apiserver-timed "
              f"({len(latencies)} jobs):", flush=True)  # fmt: skip
        print(f"{len(seen)} Jobs; reconcile p50 {percentile(latencies, 50):.2f} s, "
              f"p99 {percentile(latencies, 99):.2f} s", flush=True)  # fmt: skip
        if args.suspended:
            size = f"{args.jobs} jobs created suspended"
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            print(f"\n| reconcile latency p50 ({size}) s | {p50:.2f} |\n| p99 s | {p99:.2f} |"
                  f"\n| operator CPU (cores) | {reconcile_cores:.2f} |")  # fmt: skip
            write_rows(args.json, [
                row(f"reconcile latency p50, create -> Job ({size}) (s)", f"{p50:.2f}"),
                row(f"reconcile latency p99 ({size}) (s)", f"{p99:.2f}", "≤ 1", p99 <= 1,
                    peer=f"cores used meanwhile: {cores} (of {os.cpu_count()})"),
            ])  # fmt: skip
            return 0
        want = args.jobs * args.pods
        pods: list[dict[str, Any]] = []
        t_pods = time.monotonic()
        while time.monotonic() < deadline:
            pods = [p for p in api.call("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
                    if p.get("status", {}).get("phase") == "Running"]  # fmt: skip
            if len(pods) >= want:
                break
            time.sleep(5)
        print(f"{len(pods)} pods running after {time.monotonic() - t_pods:.0f} s more", flush=True)

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
        print(f"{len(senders)} pod-bound tokens", flush=True)
        req0 = apiserver_requests(api)
        m0 = op.metrics()
        assert op.proc is not None
        peak = [0.0]
        stop_rss = threading.Event()

        def sample_rss() -> None:
            while not stop_rss.wait(1.0):
                peak[0] = max(peak[0], rss_mb(op.proc.pid))  # type: ignore[union-attr]

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        wall0, t1 = time.time(), time.monotonic()
        offered, accepted, errors = asyncio.run(load(op.url, ns, senders, args.seconds))
        elapsed, wall1 = time.monotonic() - t1, time.time()
        stop_rss.set()
        req1 = apiserver_requests(api)
        m1 = op.metrics()
        time.sleep(2)  # the audit backend flushes
        op_requests, kinds = operator_requests(cp.audit_log, wall0, wall1)

        def patches(text: str) -> float:
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                       if ln.startswith("carbontrack_status_patches_total{"))  # fmt: skip

        per_job = (patches(m1) - patches(m0)) / elapsed / args.jobs
        print(f"\nScale: {args.jobs} CarbonTrackedJobs x {args.pods} pods, {elapsed:.0f} s of telemetry "
              f"({machine()})\n")  # fmt: skip
        print("| figure | value | target |\n|---|---:|---:|")
        print(f"| reconcile latency p50 (create -> Job) s | {percentile(latencies, 50):.2f} | |")
        print(f"| reconcile latency p99 s | {percentile(latencies, 99):.2f} | ≤ 1 |")
        print(f"| ({args.jobs} jobs created in) s | {create_s:.1f} | |")
        print(f"| operator CPU while reconciling (cores of {os.cpu_count()}) | {reconcile_cores:.2f} | |")
        print(f"| operator peak RSS MB | {peak[0]:.0f} | < 400 |")
        print(f"| status patches/s per job | {per_job:.3f} | <= 0.1 |")
        print(f"| batches offered/s (1 per pod per s) | {offered / elapsed:.0f} | {want} |")
        print(f"| batches accepted/s | {accepted / elapsed:.0f} | |")
        print(f"| ingested step records/s | {10 * accepted / elapsed:.0f} | |")
        print(f"| telemetry errors | {errors} | |")
        print(f"| apiserver requests/s by the operator | {op_requests / elapsed:.1f} | |")
        print(f"| apiserver requests/s, all clients | {(req1 - req0) / elapsed:.1f} | |")
        print("\noperator's requests by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common(8)))
        size = f"{args.jobs} jobs x {args.pods} pods"
        p99 = percentile(latencies, 99)
        write_rows(args.json, [
            row(f"reconcile latency p50, create -> Job ({size}) (s)", f"{percentile(latencies, 50):.2f}"),
            row(f"reconcile latency p99 ({size}) (s)", f"{p99:.2f}", "≤ 1", p99 <= 1,
                peer=f"operator used {reconcile_cores:.2f} of {os.cpu_count()} cores meanwhile"),
            row(f"operator peak RSS under telemetry ({size}) (MB)", f"{peak[0]:.0f}", "< 400", peak[0] < 400),
            row(f"status patches/s per job ({size})", f"{per_job:.3f}", "≤ 0.1", per_job <= 0.1 + 1e-9),
            row(f"telemetry batches accepted/s ({size})", f"{accepted / elapsed:.0f}",
                peer=f"offered {offered / elapsed:.0f}/s of the {want}/s planned; {errors} errors"),
            row(f"ingested step records/s ({size})", f"{10 * accepted / elapsed:.0f}"),
            row(f"apiserver requests/s by the operator ({size})", f"{op_requests / elapsed:.1f}",
                peer=f"all clients {(req1 - req0) / elapsed:.1f}"),
        ])  # fmt: skip
        return 0
    finally:
        if op is not None:
            op.stop()
        cp.down()


if __name__ == "__main__":
    raise SystemExit(main())
