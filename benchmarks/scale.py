"""The operator at scale: many CarbonTrackedJobs x pods on kwok nodes, telemetry from a load generator.

    python benchmarks/scale.py [--jobs 1000] [--pods 8] [--seconds 120]

Starts its own control plane (kwok nodes of 64 GPUs, enough for jobs x pods x --gpus), the operator
(HTTPS telemetry, as deployed), creates the jobs (each at full scale: canary = replicas, no gates), and
once their pods run, every pod speaks the sidecar's protocol (benchmarks/ingest.py's load generator: one
kept-alive TLS connection, a batch every --interval s with jitter, --gpus GPUs in every body, pod-bound
tokens from TokenRequest; asyncio, one process). Prints: operator RSS, reconcile latency (create -> Job
appears in a watch) p50/p99, status patches/s per job, batches and step records accepted per second and
per operator CPU-second (the whole operator: kopf, the watches and the status writers too), POST latency,
and the apiserver's request rate: the operator's own (it acts as the chart's ServiceAccount, and the
apiserver's audit log attributes every request) and all clients'. Targets (issue 15): reconcile p99
<= 1 s, RSS < 400 MB at 1000 x 8, <= 0.1 status patches/s per job. Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cpu_seconds, machine, percentile, row, rss_mb, write_rows
from hack.controlplane import ControlPlane
from ingest import Load, Pod, drive
from tests.integration.harness import Operator, chart_identity

from carbontrack.state.config import OperatorConfig


class Api:
    """Minimal apiserver client with the admin certificate (urllib: no extra dependency)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.base = cp.server
        self.ctx = ssl.create_default_context(cafile=str(cp.pki / "ca.crt"))
        self.ctx.load_cert_chain(str(cp.pki / "admin.crt"), str(cp.pki / "admin.key"))

    def connection(self) -> http.client.HTTPSConnection:
        """A connection of its own to keep alive (urllib's `call` makes one per request)."""
        where = urllib.parse.urlsplit(self.base)
        return http.client.HTTPSConnection(where.hostname or "", where.port, context=self.ctx, timeout=60)

    def call(self, method: str, path: str, body: Any = None, accept: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": accept}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            raw = r.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()


NODE_GPUS = 64
"""GPUs per kwok node: 1000 nodes hold 8000 pods of 8 GPUs (a node's heartbeats cost the apiserver, its
capacity costs nothing, so fewer larger nodes keep the cores for what is measured)."""


METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def running_pods(api: Api, ns: str) -> list[dict[str, Any]]:
    """Name, uid and labels of the namespace's running pods, 500 to a page. A whole LIST of 8000 pods
    (each with its injected sidecar) is over 70 MB, and the saturated apiserver cut it off mid-answer."""
    items: list[dict[str, Any]] = []
    page = ""
    while True:
        query = "fieldSelector=status.phase%3DRunning&limit=500"
        if page:
            query += "&continue=" + urllib.parse.quote(page)
        got = api.call("GET", f"/api/v1/namespaces/{ns}/pods?{query}", accept=METADATA_ONLY)
        items.extend({"metadata": p["metadata"]} for p in got["items"])
        page = got["metadata"].get("continue", "")
        if not page:
            return items


def ctj(name: str, pods: int, suspended: bool = False, gpus: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1", "kind": "CarbonTrackedJob", "metadata": {"name": name},
        "spec": {
            "replicas": pods, "totalSteps": 100000, "suspend": suspended,
            "canary": {"replicas": pods, "minSteps": 1000000, "stages": [100]},
            "gates": {"allowEmpty": True},  # measures reconcile cost, not gates
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "trainer", "image": "trainer:bench",
                 "resources": {"limits": {"nvidia.com/gpu": gpus}}},
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120, help="measured telemetry, after the warm-up")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per pod, and in every batch")
    parser.add_argument("--interval", type=float, default=10.0, help="the sidecar's default")
    parser.add_argument("--steps-per-s", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="the load generator's request timeout")
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
    nodes = 2 if args.suspended else 2 + -(-args.jobs * args.pods * args.gpus // NODE_GPUS)
    op: Operator | None = None
    try:
        cp.up(nodes=2, audit=True, client_qps=200, flow_control=True)  # APF: as in a real cluster
        cp.add_gpu_nodes(nodes - 2, first=2, gpus=NODE_GPUS)
        cp.kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
        cp.wait_established("crd/carbontrackedjobs.carbontrack.io")
        # production settings (one status patch per job per 10 s, gates judged every 10 s), acting as
        # the chart's ServiceAccount with its ClusterRole, so the audit log tells its requests apart
        op = Operator(
            cp, work / "operator.log", CARBONTRACK_STATUS_INTERVAL_S="10", CARBONTRACK_JUDGE_INTERVAL_S="10",
            # the chart's certificate lifetime, renewal check and client timeout (the test harness rotates
            # the certificate every few seconds)
            CARBONTRACK_TLS_SERVING_DAYS=str(OperatorConfig.tls_serving_days), CARBONTRACK_TLS_CHECK_S="3600",
            CARBONTRACK_CLIENT_TIMEOUT_S="10",
            # every simulated pod connects from 127.0.0.1: no per-address first-contact limit, and a
            # connection cap above the 8000 pods (each keeps one connection)
            CARBONTRACK_FIRST_CONTACTS_PER_S="0", CARBONTRACK_MAX_CONNECTIONS="0",
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
                ctj(name, args.pods, args.suspended, args.gpus),
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
            pods = running_pods(api, ns)
            if len(pods) >= want:
                break
            time.sleep(10)
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
            conn = getattr(kept, "conn", None) or api.connection()
            kept.conn = conn  # one kept-alive connection per thread: a handshake per token cost 384 s
            conn.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/default/token", json.dumps(req),
                         {"Content-Type": "application/json"})  # fmt: skip
            answer = conn.getresponse()
            out = json.loads(answer.read())
            if answer.status != 201:
                raise RuntimeError(f"TokenRequest for {p['metadata']['name']}: {answer.status} {out}")
            return p, out["status"]["token"]

        kept = threading.local()
        t_tokens = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            senders = list(pool.map(token, pods))
        print(f"{len(senders)} pod-bound tokens in {time.monotonic() - t_tokens:.0f} s", flush=True)
        sims = [
            Pod(ns, p["metadata"]["labels"]["carbontrack.io/job"], p["metadata"]["name"],
                p["metadata"]["uid"], tok, args.gpus)
            for p, tok in senders
        ]  # fmt: skip
        assert op.proc is not None
        peak = [0.0]
        stop_rss = threading.Event()

        def sample_rss() -> None:
            while not stop_rss.wait(1.0):
                peak[0] = max(peak[0], rss_mb(op.proc.pid))  # type: ignore[union-attr]

        def patches() -> float:
            for attempt in range(3):  # the operator's loop may lag behind thousands of first contacts
                try:
                    text = op.metrics(timeout=60)
                    break
                except OSError:
                    if attempt == 2:
                        raise
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                       if ln.startswith("carbontrack_status_patches_total{"))  # fmt: skip

        async def counts() -> dict[str, int]:  # read at both ends of the measured window
            written = await asyncio.to_thread(patches)
            served = await asyncio.to_thread(apiserver_requests, api)
            return {"status patches": round(written), "apiserver requests": round(served)}

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        load = Load(op.port, "keepalive", args.interval, args.timeout, args.steps_per_s)
        got = asyncio.run(drive(load, sims, args.seconds, op.proc.pid, counts))
        elapsed, wall0, wall1 = got["wall_s"], got["t0"], got["t1"]
        stop_rss.set()
        time.sleep(2)  # the audit backend flushes
        op_requests, kinds = operator_requests(cp.audit_log, wall0, wall1)
        per_job = got["counted"]["status patches"] / elapsed / args.jobs
        all_per_s = got["counted"]["apiserver requests"] / elapsed
        lat = sorted(load.latencies)
        p50_ms, p99_ms = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
        cpu = max(got["cpu_s"], 1e-9)
        shape = (f"{args.gpus} GPUs a pod, a batch every {args.interval:g} s, {args.steps_per_s:g} steps/s, "
                 "kept-alive HTTPS")  # fmt: skip
        print(f"\nScale: {args.jobs} CarbonTrackedJobs x {args.pods} pods ({shape}), {elapsed:.0f} s of "
              f"measured telemetry ({machine()})\n")  # fmt: skip
        print("| figure | value | target |\n|---|---:|---:|")
        print(f"| reconcile latency p50 (create -> Job) s | {percentile(latencies, 50):.2f} | |")
        print(f"| reconcile latency p99 s | {percentile(latencies, 99):.2f} | ≤ 1 |")
        print(f"| ({args.jobs} jobs created in) s | {create_s:.1f} | |")
        print(f"| operator CPU while reconciling (cores of {os.cpu_count()}) | {reconcile_cores:.2f} | |")
        print(f"| operator peak RSS MB | {peak[0]:.0f} | < 400 |")
        print(f"| status patches/s per job | {per_job:.3f} | <= 0.1 |")
        print(f"| batches accepted/s | {load.batches / elapsed:.0f} | |")
        print(f"| step records accepted/s | {load.records / elapsed:.0f} | |")
        print(f"| step records per operator CPU-second (the whole operator) | {load.records / cpu:.0f} | |")
        print(f"| POST p50 / p99 ms | {p50_ms:.1f} / {p99_ms:.1f} | p99 < 50 |")
        print(f"| client timeouts / errors | {load.timeouts} / {load.errors} | 0 |")
        print(f"| apiserver requests/s by the operator | {op_requests / elapsed:.1f} | |")
        print(f"| apiserver requests/s, all clients | {all_per_s:.1f} | |")
        print(f"\nanswers by status, warm-up included: {dict(sorted(load.statuses.items()))}")
        print("operator's requests by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common(8)))
        jobs = f"{args.jobs} jobs x {args.pods} pods"
        size = jobs if len(sims) >= want else f"{jobs}, {len(sims)} of them running"  # the rest pending
        p99 = percentile(latencies, 99)
        write_rows(args.json, [
            row(f"reconcile latency p50, create -> Job ({jobs}) (s)", f"{percentile(latencies, 50):.2f}"),
            row(f"reconcile latency p99 ({jobs}) (s)", f"{p99:.2f}", "≤ 1", p99 <= 1,
                peer=f"cores used meanwhile: {cores} (of {os.cpu_count()})"),
            row(f"operator peak RSS under telemetry ({size}, {shape}) (MB)", f"{peak[0]:.0f}", "< 400",
                peak[0] < 400),
            # with no batch accepted there is nothing to write: no verdict on the writer
            row(f"status patches/s per job ({size})", f"{per_job:.3f}", "≤ 0.1",
                per_job <= 0.1 + 1e-9 if load.batches else None,
                peer="" if load.batches else "no batch was accepted in the window: no verdict on the writer"),
            row(f"step records accepted/s ({size}, {shape})", f"{load.records / elapsed:.0f}",
                peer=f"{load.batches / elapsed:.0f} batches/s; {load.records / cpu:.0f} per CPU-second "
                     "of the whole operator"),
            row(f"POST latency p99 ({size}, {shape}) (ms)", f"{p99_ms:.1f}", "< 50", p99_ms < 50,
                peer=f"p50 {p50_ms:.1f}; {load.timeouts} timeouts, {load.errors} errors"),
            row(f"apiserver requests/s by the operator ({size})", f"{op_requests / elapsed:.1f}",
                peer=f"all clients {all_per_s:.1f}"),
        ])  # fmt: skip
        return 0
    finally:
        if op is not None:
            op.stop()
        cp.down()


if __name__ == "__main__":
    raise SystemExit(main())
