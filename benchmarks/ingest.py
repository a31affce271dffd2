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
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, percentile, row, write_rows
from sidecar_load import GPUS, STEPS_PER_S, Load, Pod, drive

# --- the operator's telemetry path ------------------------------------------------------------------


class GcRecorder:
    """Every collection's pause, and when and in which generation it ran (a gc.callbacks entry)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.collections: list[tuple[float, int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)
            self.collections.append((time.time(), info["generation"], self.pauses[-1]))


def run_operator(port: int, api_port: int, cert_dir: str, stats_file: str, event_loop: str) -> None:
    """The operator's telemetry path on `port` against the stand-in on `api_port`, until SIGTERM; then
    its gc pauses go to `stats_file`."""
    from carbontrack.telemetry import eventloop
    from carbontrack.telemetry import server as server_module

    if os.environ.get("CARBONTRACK_WIRE_DECODER") == "pydantic":  # the peer: every batch through pydantic
        from carbontrack.api.wire import parse_batch

        server_module.decode_batch = parse_batch  # type: ignore[attr-defined]
    with eventloop.runner("uvloop" if event_loop == "uvloop" else "asyncio") as runner:
        runner.run(
            _serve(port, api_port, cert_dir, stats_file)
        )  # the operator's loop, as `carbontrack operator` makes it


async def _serve(port: int, api_port: int, cert_dir: str, stats_file: str) -> None:
    from kubernetes_asyncio import client

    from carbontrack.state.config import OperatorConfig
    from carbontrack.state.registry import Registry
    from carbontrack.telemetry import gc_tuning as heap
    from carbontrack.telemetry.auth import Authenticator
    from carbontrack.telemetry.server import TelemetryServer

    conf = client.Configuration(host=f"http://127.0.0.1:{api_port}")
    api = client.ApiClient(conf)
    api.rest_client.pool_manager._trust_env = False
    cfg = OperatorConfig(status_interval_s=10.0)
    server = TelemetryServer(Registry(api, cfg), Authenticator(api, cfg.token_cache_s), cfg.max_body_bytes,
                             cfg.client_timeout_s, cfg.idle_timeout_s)  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(f"{cert_dir}/tls.crt", f"{cert_dir}/tls.key")
    await server.start("127.0.0.1", port, context)
    heap.settle()  # as controller.startup.startup does
    recorder = GcRecorder()
    gc.callbacks.append(recorder)
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
    Path(stats_file).write_text(
        json.dumps({"gc_pauses_s": recorder.pauses, "gc_collections": recorder.collections})
    )
    os._exit(0)  # the numbers are written; no orderly flush of 1000 status writers needed


# --- the benchmark ----------------------------------------------------------------------------------


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
    """One run: the stand-in apiserver and the operator's telemetry path as processes of their own, the
    pods speaking `shape` every `interval_s` from this one; the figures of the measured window."""
    work = Path(tempfile.mkdtemp(prefix="ingest-"))
    port, api_port = free_port(), free_port()
    api, op = _start(args, work, port, api_port)
    try:
        _wait_listening(port)
        pods = [Pod("bench", f"job-{j}", f"job-{j}-{i}") for j in range(args.jobs) for i in range(args.pods)]
        load = Load(port, shape, interval_s, args.timeout, args.steps_per_s)
        got = asyncio.run(_drive_counted(load, pods, args.seconds, op.pid, api_port))
        rss = peak_rss_mb(op.pid)
        op.send_signal(signal.SIGTERM)
        op.wait(60)
        gc_stats = json.loads((work / "op.json").read_text())
    finally:
        for proc in (op, api):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return _figures(shape, interval_s, len(pods), load, got, rss, gc_stats)


def _start(
    args: argparse.Namespace, work: Path, port: int, api_port: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The stand-in apiserver and the operator's telemetry path (a fresh serving certificate)."""
    from carbontrack.telemetry import tls

    material = tls.renew(None, ["localhost"], dt.datetime.now(dt.UTC))
    (work / "tls.crt").write_bytes(material.cert_pem)
    (work / "tls.key").write_bytes(material.key_pem)
    me = [sys.executable, __file__]
    api = subprocess.Popen([*me, "--role", "apiserver", "--port", str(api_port)])
    env = {**os.environ, "CARBONTRACK_WIRE_DECODER": getattr(args, "decoder", "msgspec")}
    op = subprocess.Popen([*me, "--role", "operator", "--port", str(port), "--api-port", str(api_port),
                           "--certs", str(work), "--stats", str(work / "op.json"),
                           "--event-loop", args.event_loop], env=env)  # fmt: skip
    return api, op


def _wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)


def _figures(
    shape: str,
    interval_s: float,
    pods: int,
    load: Load,
    got: dict[str, Any],
    rss: float,
    gc_stats: dict[str, Any],
) -> dict[str, Any]:
    pauses = sorted(gc_stats["gc_pauses_s"])
    in_window = [(g, s) for at, g, s in gc_stats["gc_collections"] if got["t0"] <= at <= got["t1"]]
    lat = sorted(load.latencies)
    cpu = max(got["cpu_s"], 1e-9)
    return {
        "shape": shape, "interval_s": interval_s, "pods": pods, "cpu_s": got["cpu_s"],
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


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def measure_peer(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The peer's run (--peer) and how the table names it; nothing with --no-peer."""
    if args.no_peer:
        return {}, ""
    peer_args = argparse.Namespace(**{**vars(args), "jobs": args.peer_jobs or args.jobs})
    if args.peer == "pydantic":
        peer_args.decoder = "pydantic"
        return measure(peer_args, "keepalive", args.interval), (
            f" decoded by pydantic alone ({peer_args.jobs} x {args.pods} pods)"
        )
    shape = f" with connection per batch, 1 s batches ({peer_args.jobs} x {args.pods} pods)"
    return measure(peer_args, "per-batch", 1.0), shape


def table(
    args: argparse.Namespace, ours: dict[str, Any], peer: dict[str, Any], shape: str
) -> list[dict[str, str]]:
    size = f"{args.jobs} jobs x {args.pods} pods, {GPUS} GPUs each"
    if args.interval != 10 or args.steps_per_s != STEPS_PER_S:
        size += f", a batch every {args.interval:g} s, {args.steps_per_s:g} steps/s"

    def theirs(key: str, form: str, suffix: str = "") -> str:
        return "" if not peer else format(peer[key], form) + suffix

    fleet = args.jobs * args.pods >= 8000
    return [
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


def main() -> int:
    args = parse_args()
    if args.role == "apiserver":
        from standin_apiserver import run_apiserver  # not imported by the measured operator process

        run_apiserver(args.port)
        return 0
    if args.role == "operator":
        run_operator(args.port, args.api_port, args.certs, args.stats, args.event_loop)
        return 0
    ours = measure(args, "keepalive", args.interval)
    print(json.dumps(ours), flush=True)
    peer, shape = measure_peer(args)
    if peer:
        print(json.dumps(peer), flush=True)
    rows = table(args, ours, peer, shape)
    write_rows(args.json, rows)
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
