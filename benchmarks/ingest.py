"""Telemetry ingest per operator CPU-second, with the sidecar's real protocol (issue 15).

Three processes: the operator's real telemetry path (TelemetryServer, Registry, Authenticator over HTTPS
with a certificate from controller.tls, gc frozen after start-up as in the operator), a stand-in
apiserver (TokenReview, pod, Job, CarbonTrackedJob reads, status patches: counted), and this one, the
load generator. Each simulated pod speaks what the sidecar speaks: 8-GPU bodies, cumulative counters,
10 steps/s of per-step records, and either

  * `keepalive` (the sidecar now): one kept-alive connection, a batch every 10 s (x U(0.9, 1.1)),
    100 step records a batch; or
  * `per-batch` (the peer: the sidecar before issue 15): a new TLS connection for every batch, a batch
    every second, 10 step records.

Reported: step records and batches per operator CPU-second (utime + stime of the operator process from
/proc over the measured window, after every pod's first contact), POST latency p50/p99, client
timeouts, operator peak RSS, gc pause p99 over the whole run and the collections inside the measured
window (gc.callbacks in the operator), apiserver requests/s made by the operator. The machine's cores
are shared with the load generator (and, here, other work): the per-CPU-second figures are the
operator's own, which is what a core of a real node would do.

    python benchmarks/ingest.py --jobs 250 --pods 8 --seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, free_port, percentile, row, write_rows

GPUS = 8
STEPS_PER_S = 10
W_PER_GPU = 300.0


# --- the stand-in apiserver -------------------------------------------------------------------------


def ctj_object(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1", "kind": "CarbonTrackedJob",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
        "spec": {
            "replicas": 8, "totalSteps": 100000, "carbon": {"zone": "DE"},
            "canary": {"replicas": 8, "minSteps": 1000000, "stages": [100]}, "gates": {"allowEmpty": True},
            "template": {"spec": {"containers": [{"name": "trainer", "image": "trainer:bench"}]}},
        },
        "status": {},
    }  # fmt: skip


def run_apiserver(port: int) -> None:
    from aiohttp import web

    counts: dict[str, int] = {}
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    def count(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    async def review(request: web.Request) -> web.Response:
        count("tokenreview")
        doc = await request.json()
        ns, pod, uid = doc["spec"]["token"].split("/")
        extra = {
            "authentication.kubernetes.io/pod-name": [pod],
            "authentication.kubernetes.io/pod-uid": [uid],
        }
        user = {"username": f"system:serviceaccount:{ns}:default", "extra": extra}
        status = {"authenticated": True, "audiences": ["carbontrack"], "user": user}
        return web.json_response({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                  "spec": doc["spec"], "status": status})  # fmt: skip

    async def pod(request: web.Request) -> web.Response:
        count("pod")
        ns, name = request.match_info["ns"], request.match_info["name"]
        job = name.rsplit("-", 1)[0]
        owner = {"kind": "Job", "name": job, "uid": f"uid-job-{job}", "controller": True}
        return web.json_response({
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "ownerReferences": [owner]},
            "spec": {"containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": str(GPUS)}}}]},
            "status": {"startTime": started},
        })  # fmt: skip

    async def job(request: web.Request) -> web.Response:
        count("job")
        ns, name = request.match_info["ns"], request.match_info["name"]
        return web.json_response({
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-job-{name}",
                         "ownerReferences": [{"kind": "CarbonTrackedJob", "name": name, "uid": f"uid-{name}",
                                              "controller": True}]},
        })  # fmt: skip

    async def ctj(request: web.Request) -> web.Response:
        count("ctj-get")
        return web.json_response(ctj_object(request.match_info["ns"], request.match_info["name"]))

    async def patch(request: web.Request) -> web.Response:
        count("status-patch")
        await request.read()
        return web.json_response(ctj_object(request.match_info["ns"], request.match_info["name"]))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    base = "/apis/carbontrack.io/v1alpha1/namespaces/{ns}/carbontrackedjobs/{name}"
    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", review)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", pod)
    app.router.add_get("/apis/batch/v1/namespaces/{ns}/jobs/{name}", job)
    app.router.add_get(base, ctj)
    app.router.add_patch(base + "/status", patch)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- the operator's telemetry path ------------------------------------------------------------------


def run_operator(port: int, api_port: int, cert_dir: str, stats_file: str, event_loop: str) -> None:
    from kubernetes_asyncio import client

    from carbontrack.state.config import OperatorConfig
    from carbontrack.state.registry import Registry
    from carbontrack.telemetry import eventloop
    from carbontrack.telemetry import gc_tuning as heap
    from carbontrack.telemetry import server as server_module
    from carbontrack.telemetry.auth import Authenticator
    from carbontrack.telemetry.server import TelemetryServer

    if os.environ.get("CARBONTRACK_WIRE_DECODER") == "pydantic":  # the peer: every batch through pydantic
        from carbontrack.api.wire import parse_batch

        server_module.decode_batch = parse_batch  # type: ignore[assignment]

    pauses: list[float] = []
    collections: list[tuple[float, int, float]] = []  # (when, generation, how long) of every collection
    started_at = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started_at[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started_at[0])
            collections.append((time.time(), info["generation"], pauses[-1]))

    async def main() -> None:
        conf = client.Configuration(host=f"http://127.0.0.1:{api_port}")
        api = client.ApiClient(conf)
        api.rest_client.pool_manager._trust_env = False
        cfg = OperatorConfig(status_interval_s=10.0)
        registry = Registry(api, cfg)
        server = TelemetryServer(registry, Authenticator(api, cfg.token_cache_s), cfg.max_body_bytes,
                                 cfg.client_timeout_s, cfg.idle_timeout_s)  # fmt: skip
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(f"{cert_dir}/tls.crt", f"{cert_dir}/tls.key")
        await server.start("127.0.0.1", port, context)
        heap.settle()  # as controller.startup.startup does
        gc.callbacks.append(on_gc)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        profile = None
        if os.environ.get("INGEST_PROFILE"):  # where the operator's time goes (cProfile, to that file)
            import cProfile

            profile = cProfile.Profile(time.process_time)  # CPU time: the cores are shared
            profile.enable()
        await stop.wait()
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.environ["INGEST_PROFILE"])
        Path(stats_file).write_text(json.dumps({"gc_pauses_s": pauses, "gc_collections": collections}))
        os._exit(0)  # the numbers are written; no orderly flush of 1000 status writers needed

    with eventloop.runner("uvloop" if event_loop == "uvloop" else "asyncio") as runner:
        runner.run(main())  # the operator's loop, as `carbontrack operator` makes it


# --- the load generator -----------------------------------------------------------------------------


class Pod:
    """One simulated sidecar: its identity, token and cumulative counters (`gpus` GPUs at 300 W each)."""

    def __init__(
        self, ns: str, job: str, name: str, uid: str = "", token: str = "", gpus: int = GPUS
    ) -> None:
        self.ns, self.job, self.name, self.gpus = ns, job, name, gpus
        self.uid = uid or f"uid-{name}"
        self.token = token or f"{ns}/{name}/{self.uid}"  # what the stand-in apiserver's TokenReview reads
        self.seq, self.step, self.energy = 0, 0, [0.0] * gpus
        self.t = time.time()

    def body(self, records: int, steps_per_s: float = STEPS_PER_S) -> bytes:
        self.seq += 1
        now = time.time()
        dt_s = 1.0 / steps_per_s
        watts = W_PER_GPU * self.gpus
        steps = ",".join(
            f'{{"step":{self.step + k + 1},"firstStep":{self.step + k},"energyJoules":{watts * dt_s:.3f},'
            f'"durationS":{dt_s},"endedAt":{now:.3f}}}'
            for k in range(records)
        )
        self.step += records
        for i in range(self.gpus):
            self.energy[i] += W_PER_GPU * dt_s * records
        gpus = ",".join(
            f'{{"index":{i},"uuid":"GPU-{i:02d}-{self.name}","energyJoules":{e:.3f},"uncertaintyJoules":0.001}}'
            for i, e in enumerate(self.energy)
        )
        return (
            f'{{"version":1,"job":{{"namespace":"{self.ns}","name":"{self.job}"}},'
            f'"pod":{{"namespace":"{self.ns}","name":"{self.name}","uid":"{self.uid}"}},'
            f'"bootId":"bench","seq":{self.seq},"sentAt":{now:.3f},"method":"energy-counter",'
            f'"gpus":[{gpus}],"stepsSeen":{self.step},"globalStep":{self.step},"steps":[{steps}]}}'
        ).encode()


class Load:
    def __init__(
        self, port: int, shape: str, interval_s: float, timeout_s: float, steps_per_s: float = STEPS_PER_S
    ) -> None:
        self.port, self.shape, self.interval_s, self.timeout_s = port, shape, interval_s, timeout_s
        self.steps_per_s = steps_per_s
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.measuring = False
        self.stop_at = float("inf")
        """When every pod stops (monotonic): the measured window may start later than planned."""
        self.latencies: list[float] = []
        self.batches = self.records = self.timeouts = self.errors = 0
        self.first_contact = 0
        self.statuses: dict[int, int] = {}
        """Every answer, warm-up included, by status (-1 timeout, 0 connection error)."""

    async def _post(
        self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], pod: Pod, body: bytes, close: bool
    ) -> int:
        reader, writer = streams
        head = (
            f"POST /v1/telemetry HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {pod.token}\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        return int(status_line.split()[1])

    async def pod(self, pod: Pod, offset: float) -> None:
        await asyncio.sleep(offset)
        streams = None
        records = round(self.interval_s * self.steps_per_s)
        first = True
        while time.monotonic() < self.stop_at:
            body = pod.body(records, self.steps_per_s)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    if streams is None:
                        streams = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.context)
                    status = await self._post(streams, pod, body, close=self.shape == "per-batch")
                if self.shape == "per-batch":
                    streams[1].close()
                    streams = None
            except TimeoutError:
                status = -1
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status = 0
            if status <= 0 and streams is not None:
                streams[1].close()
                streams = None
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if first:
                self.first_contact += 1
                first = False
            elif self.measuring:
                self.latencies.append(time.perf_counter() - started)
                if status == 200:
                    self.batches += 1
                    self.records += records
                elif status == -1:
                    self.timeouts += 1
                else:
                    self.errors += 1
            jitter = random.uniform(0.9, 1.1) if self.shape == "keepalive" else 1.0
            await asyncio.sleep(self.interval_s * jitter)
        if streams is not None:
            streams[1].close()


async def drive(
    load: Load, pods: list[Pod], seconds: float, op_pid: int,
    counts: Callable[[], Awaitable[dict[str, int]]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every pod speaks `load`'s protocol through a warm-up (every pod's first contact) and then
    `seconds` of measured window; `counts` (e.g. the apiserver's requests by kind) is read at both ends,
    and what it counted in the window is returned as `counted`."""
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024  # thousands of client connections in this process

    async def nothing() -> dict[str, int]:
        return {}

    read = counts or nothing
    warmup = load.interval_s * 1.2 + 2
    load.stop_at = time.monotonic() + warmup + seconds
    tasks = [asyncio.create_task(load.pod(p, random.uniform(0, load.interval_s))) for p in pods]
    await asyncio.sleep(warmup)
    settle_by = time.monotonic() + 600  # measure a steady state: every pod past its first contact
    while load.first_contact < len(pods) and time.monotonic() < settle_by:
        await asyncio.sleep(1)
    load.stop_at = max(load.stop_at, time.monotonic() + seconds)
    cpu0, api0, t0, wall0 = cpu_seconds(op_pid), await read(), time.monotonic(), time.time()
    load.measuring = True
    await asyncio.sleep(seconds)
    load.measuring = False
    cpu1, api1, t1, wall1 = cpu_seconds(op_pid), await read(), time.monotonic(), time.time()
    await asyncio.gather(*tasks, return_exceptions=True)
    counted = {k: v - api0.get(k, 0) for k, v in api1.items()}
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "api_requests": sum(counted.values()), "api": api1,
            "counted": counted, "first_contact": load.first_contact, "t0": wall0, "t1": wall1}  # fmt: skip


async def _drive_counted(load: Load, pods: list[Pod], seconds: float, op_pid: int, api_port: int) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as http:

        async def api_stats() -> dict[str, int]:
            async with http.get(f"http://127.0.0.1:{api_port}/stats") as r:
                return dict(await r.json())

        return await drive(load, pods, seconds, op_pid, api_stats)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(args: argparse.Namespace, shape: str, interval_s: float) -> dict[str, Any]:
    from carbontrack.telemetry import tls

    work = Path(tempfile.mkdtemp(prefix="ingest-"))
    material = tls.renew(None, ["localhost"], dt.datetime.now(dt.UTC))
    (work / "tls.crt").write_bytes(material.cert_pem)
    (work / "tls.key").write_bytes(material.key_pem)
    port, api_port = free_port(), free_port()
    me = [sys.executable, __file__]
    api = subprocess.Popen([*me, "--role", "apiserver", "--port", str(api_port)])
    env = {**os.environ, "CARBONTRACK_WIRE_DECODER": getattr(args, "decoder", "msgspec")}
    op = subprocess.Popen([*me, "--role", "operator", "--port", str(port), "--api-port", str(api_port),
                           "--certs", str(work), "--stats", str(work / "op.json"),
                           "--event-loop", args.event_loop], env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        pods = [Pod("bench", f"job-{j}", f"job-{j}-{i}") for j in range(args.jobs) for i in range(args.pods)]
        load = Load(port, shape, interval_s, args.timeout, args.steps_per_s)
        got = asyncio.run(_drive_counted(load, pods, args.seconds, op.pid, api_port))
        rss = peak_rss_mb(op.pid)
        op.send_signal(signal.SIGTERM)
        op.wait(60)
        gc_stats = json.loads((work / "op.json").read_text())
        pauses = sorted(gc_stats["gc_pauses_s"])
        in_window = [(g, s) for at, g, s in gc_stats["gc_collections"] if got["t0"] <= at <= got["t1"]]
    finally:
        for p in (op, api):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    lat = sorted(load.latencies)
    cpu = max(got["cpu_s"], 1e-9)
    return {
        "shape": shape, "interval_s": interval_s, "pods": len(pods), "cpu_s": got["cpu_s"],
        "wall_s": got["wall_s"], "batches": load.batches, "records": load.records,
        "records_per_cpu_s": load.records / cpu, "batches_per_cpu_s": load.batches / cpu,
        "operator_cores": got["cpu_s"] / got["wall_s"],
        "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
        "timeouts": load.timeouts, "errors": load.errors, "rss_mb": rss,
        "gc_p99_ms": percentile(pauses, 99) * 1000, "gc_max_ms": (pauses[-1] * 1000) if pauses else 0.0,
        "gc_total_s": sum(pauses), "gc_count": len(pauses),
        "gc_in_window_ms": {g: [round(s * 1000, 1) for g2, s in in_window if g2 == g] for g in (0, 1, 2)},
        "api_per_s": got["api_requests"] / got["wall_s"], "api_total": got["api"],
        "statuses": load.statuses,
    }  # fmt: skip


def _longest(run: dict[str, Any]) -> str:
    """'n, longest x ms' over every generation's collections in the measured window."""
    every = [ms for gen in run["gc_in_window_ms"].values() for ms in gen]
    return f"{len(every)}, {max(every):.1f}" if every else "0"


def main() -> int:
    from carbontrack.state.config import OperatorConfig

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["bench", "apiserver", "operator"], default="bench")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--certs", default="")
    parser.add_argument("--stats", default="")
    parser.add_argument("--jobs", type=int, default=250)
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--interval", type=float, default=10.0, help="the sidecar's default")
    parser.add_argument("--peer-jobs", type=int, default=0, help="jobs for the peer (default: --jobs)")
    parser.add_argument("--timeout", type=float, default=5.0, help="the sidecar's request timeout")
    parser.add_argument(
        "--steps-per-s", type=float, default=STEPS_PER_S,
        help="steps a pod makes a second (fewer: a memory run at 8000 pods that this machine's cores can "
        "drive; the state the operator keeps per pod does not depend on it)",
    )  # fmt: skip
    parser.add_argument(
        "--event-loop",
        choices=["uvloop", "asyncio"],
        default=OperatorConfig.event_loop,
        help="the operator's loop (default: the operator's own default; controller.eventloop)",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-peer", action="store_true", help="measure the sidecar's protocol only")
    parser.add_argument(
        "--peer", choices=["per-batch", "pydantic"], default="per-batch",
        help="per-batch: a connection per 1 s batch; pydantic: the sidecar's protocol with every batch "
        "decoded by the pydantic models alone (CARBONTRACK_WIRE_DECODER=pydantic in the operator)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.role == "apiserver":
        run_apiserver(args.port)
        return 0
    if args.role == "operator":
        run_operator(args.port, args.api_port, args.certs, args.stats, args.event_loop)
        return 0
    ours = measure(args, "keepalive", args.interval)
    print(json.dumps(ours), flush=True)
    size = f"{args.jobs} jobs x {args.pods} pods, {GPUS} GPUs each"
    if args.interval != 10 or args.steps_per_s != STEPS_PER_S:
        size += f", a batch every {args.interval:g} s, {args.steps_per_s:g} steps/s"
    peer: dict[str, Any] = {}
    shape = ""
    if not args.no_peer:
        peer_args = argparse.Namespace(**{**vars(args), "jobs": args.peer_jobs or args.jobs})
        if args.peer == "pydantic":
            peer_args.decoder = "pydantic"
            peer = measure(peer_args, "keepalive", args.interval)
            shape = f" decoded by pydantic alone ({peer_args.jobs} x {args.pods} pods)"
        else:
            peer = measure(peer_args, "per-batch", 1.0)
            shape = f" with connection per batch, 1 s batches ({peer_args.jobs} x {args.pods} pods)"
        print(json.dumps(peer), flush=True)

    def theirs(key: str, form: str, suffix: str = "") -> str:
        return "" if not peer else format(peer[key], form) + suffix

    fleet = args.jobs * args.pods >= 8000
    rows = [
        row(f"step records ingested per operator CPU-second ({size})",
            f"{ours['records_per_cpu_s']:.0f}", "≥ 80000", ours["records_per_cpu_s"] >= 80000,
            theirs("records_per_cpu_s", ".0f", shape)),
        row(f"batches per operator CPU-second ({size})", f"{ours['batches_per_cpu_s']:.0f}", "", None,
            theirs("batches_per_cpu_s", ".0f", shape)),
        row(f"POST latency p50 ({size}) (ms)", f"{ours['p50_ms']:.1f}", "", None, theirs("p50_ms", ".1f")),
        row(f"POST latency p99 ({size}) (ms)", f"{ours['p99_ms']:.1f}", "< 50", ours["p99_ms"] < 50,
            theirs("p99_ms", ".1f")),
        row(f"client timeouts / errors ({size})", f"{ours['timeouts']} / {ours['errors']}", "0",
            ours["timeouts"] == 0, f"{peer['timeouts']} / {peer['errors']}" if peer else ""),
        row(f"operator peak RSS ({size}) (MB)", f"{ours['rss_mb']:.0f}",
            "< 400 at 1000 x 8", ours["rss_mb"] < 400 if fleet else None, theirs("rss_mb", ".0f")),
        row(f"gc pause p99, first contacts included ({size}) (ms)", f"{ours['gc_p99_ms']:.1f}", "", None,
            theirs("gc_p99_ms", ".1f")),
        row(f"gc pauses in the measured window, longest ({size}) (ms)", _longest(ours), "", None,
            _longest(peer) if peer else ""),
        row(f"apiserver requests/s by the operator, steady state ({size})", f"{ours['api_per_s']:.1f}", "",
            None, theirs("api_per_s", ".1f")),
    ]  # fmt: skip
    write_rows(args.json, rows)
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
