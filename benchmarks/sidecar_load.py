"""The sidecar's protocol spoken by many simulated pods from one asyncio process: each pod has its own
token, boot and cumulative counters, and sends its batches over one kept-alive TLS connection
(`keepalive`, the sidecar) or a new connection per batch (`per-batch`, the benchmarks' peer). Used by
benchmarks/ingest.py (a stand-in apiserver) and benchmarks/scale.py (a real control plane)."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import cpu_seconds

GPUS = 8
STEPS_PER_S = 10
W_PER_GPU = 300.0


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
