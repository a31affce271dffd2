"""The sidecar process: UDP in, HTTP out, a sampler, a health endpoint, and a clean SIGTERM.

Run as `carbontrack sidecar` or `python -m carbontrack.sidecar`; configured by environment
(see SidecarConfig). The HTTP client is the standard library's (`http.client`, one kept-alive connection:
sidecar.transport), in a worker thread: one request every few seconds does not justify another
dependency in a process that must stay under 60 MB.

When batches go: every `interval_s` (10 s by default), each wait drawn within +-JITTER of
it so that pods started together do not POST together; at once for the first batch that carries a
step, and for an eval, DP-SGD or end report (never closer than URGENT_GAP_S to the previous send).
What a batch carries does not depend on when it goes: per-step records and cumulative counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import time
from functools import partial

from carbontrack.api.logs import setup_logging
from carbontrack.api.wire import TelemetryBatch
from carbontrack.sidecar.backends import make_backend
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.markers import Marker
from carbontrack.sidecar.outbox import Backoff
from carbontrack.sidecar.policy import Action, reaction_to
from carbontrack.sidecar.state import GO as GO  # the control datagrams (tests import them from here)
from carbontrack.sidecar.state import STOP as STOP
from carbontrack.sidecar.state import SidecarState
from carbontrack.sidecar.transport import SendResult, Transport

log = logging.getLogger("carbontrack.sidecar")

JITTER = 0.1
"""Each wait is interval_s x U(1 - JITTER, 1 + JITTER): 8000 pods started by one Job spread their POSTs
over the interval within a few rounds instead of arriving together."""
URGENT_GAP_S = 1.0
"""An urgent report (eval, DP, end) goes at once, but not sooner than this after the previous send."""
FIRST_POLL_S = 0.05
"""Until the first batch is out: how often to look whether the first step record has closed."""


def encode_batch(batch: TelemetryBatch) -> bytes:
    return batch.model_dump_json(by_alias=True, exclude_none=True).encode()


class _MarkerProtocol(asyncio.DatagramProtocol):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        marker = self.sidecar.on_datagram(data)
        # the pod-local channel back: a halt's stop request answers every datagram of a client (a poll
        # is answered either way, so a withdrawn stop is seen, and the job's totals asked for are sent);
        # loopback, so never lost in practice
        state = self.sidecar.state
        if self.transport is not None and (
            state.stop_requested or (marker is not None and marker.kind == "poll")
        ):
            self.transport.sendto(state.control(), addr)


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.state = SidecarState(config, partial(make_backend, config), time.monotonic())
        self.backoff = Backoff(max_s=config.max_backoff_s)
        self.back_off = False
        """The last answer asks for the backoff delay before the next send (sidecar.policy)."""
        self.max_records = 5000
        self.sent = 0
        self.refused = 0
        self.last_ok: float | None = None
        self.last_batch: TelemetryBatch | None = None
        self.rng = random.Random()
        self.transport = Transport(config.operator_url, config.ca_file, config.request_timeout_s)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._first_sent = False
        self._urgent = False
        """An eval, DP or end report waits to be sent."""

    def on_datagram(self, data: bytes) -> Marker | None:
        marker = self.state.on_datagram(data, time.monotonic())
        if marker is None:
            return None
        if marker.kind in ("end", "eval", "dp", "ckpt") or (marker.kind == "step" and marker.metrics):
            # an eval, a DP report, a checkpoint a halt waits for, or the trainer's exit: at once
            self._urgent = True
            self._wake.set()
        elif not self._first_sent and marker.kind == "step":
            self._wake.set()  # the first batch goes at once (once its record is closed: _ship_loop)
        return marker

    def _read_token(self) -> str:
        try:
            with open(self.config.token_file) as f:  # re-read: projected tokens rotate
                return f.read().strip()
        except OSError:
            return ""

    async def ship_once(self, final: bool = False) -> SendResult:
        batch = self.state.batch(time.monotonic(), final=final, max_records=self.max_records)
        self.last_batch = batch
        if not self.config.operator_url:
            self.state.outbox.ack(batch.seq)
            return SendResult(200)
        result = await asyncio.to_thread(self.transport.post, self._read_token(), encode_batch(batch))
        reaction = reaction_to(result.status, self.max_records)
        self.back_off = reaction.back_off
        if reaction.action is Action.DELIVERED:
            if result.ack is not None and self.state.on_ack(result.ack):
                log.info("stop request from the operator", extra={"stop": result.ack.stop})
            self.state.outbox.ack(batch.seq)
            self.sent += 1
            self._first_sent = self._first_sent or bool(batch.steps)
            self.last_ok = time.monotonic()
            self.backoff.reset()
        elif reaction.action is Action.SHRINK:
            self.max_records = reaction.max_records
            log.warning("batch too large; sending fewer records per batch", extra={"max": self.max_records})
        elif reaction.action is Action.DROP_RECORDS:
            self.refused += 1
            dropped = len(batch.steps)
            self.state.outbox.ack(batch.seq)
            self.state.outbox.records_dropped += dropped
            log.error(
                "batch refused as malformed", extra={"status": result.status, "error": result.error[:500]}
            )
        else:
            self.refused += result.status != 0
            log.warning(
                "telemetry not delivered; will retry",
                extra={
                    "status": result.status,
                    "error": result.error[:300],
                    "pending": self.state.outbox.pending,
                },
            )
        return result

    def _jittered_interval(self) -> float:
        return self.config.interval_s * self.rng.uniform(1 - JITTER, 1 + JITTER)

    def _next_send(self, now: float, due: float, last_sent: float) -> float:
        """When the next batch goes: `due` (the jittered interval, or the backoff), sooner for the
        first batch with a step record and for an urgent report, never sooner while backing off."""
        if self.back_off:
            return due
        soon = max(now, last_sent + URGENT_GAP_S)
        if not self._first_sent and self.state.outbox.pending > 0:
            return min(due, max(now, last_sent + min(URGENT_GAP_S, self.config.interval_s)))
        if self._urgent:
            return min(due, soon)
        return due

    async def _ship_loop(self) -> None:
        last_sent = -float("inf")
        due = time.monotonic() + self._jittered_interval()
        while not self._stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            at = self._next_send(now, due, last_sent)
            if at > now:
                timeout = at - now
                if not self._first_sent and self.state.steps_seen > 0:
                    timeout = min(timeout, FIRST_POLL_S)  # the first record closes when a reading follows
                waits = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._wake.wait())]
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                continue
            self._urgent = False
            await self.ship_once()
            last_sent = time.monotonic()
            delay = self._jittered_interval()
            if self.back_off:
                delay = max(delay, self.backoff.next_delay())
            due = last_sent + delay

    async def _sample_loop(self) -> None:
        period = 1.0 / self.config.sample_hz
        while not self._stop.is_set():
            meter = self.state.meter
            if meter is not None and meter.needs_sampling:
                meter.read(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)

    async def _answer_health_probe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readline(), timeout=2)
            body = json.dumps(
                {
                    "status": "ok",
                    "bootId": self.state.boot_id,
                    "method": self.state.method,
                    "methodReason": self.state.method_reason,
                    "gpus": [
                        {"uuid": g.info.uuid, "sharing": g.sharing, "joules": g.joules, "lost": g.lost}
                        for g in self.state.gpu_meters
                    ],
                    "globalStep": self.state.global_step,
                    "batchesSent": self.sent,
                    "connections": self.transport.connections,
                    "pending": self.state.outbox.pending,
                    "recordsDropped": self.state.outbox.records_dropped,
                    "markersDropped": self.state.gaps.dropped,
                    "stopRequested": self.state.stop_requested,
                }
            ).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        host, _, port = self.config.listen.rpartition(":")
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _MarkerProtocol(self), local_addr=(host or "127.0.0.1", int(port))
        )
        health = await asyncio.start_server(
            self._answer_health_probe, self.config.health_host, self.config.health_port
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        log.info(
            "sidecar started",
            extra={
                "bootId": self.state.boot_id,
                "listen": self.config.listen,
                "operator": self.config.operator_url,
            },
        )
        tasks = [asyncio.create_task(self._ship_loop()), asyncio.create_task(self._sample_loop())]
        await self._stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()
        health.close()
        # Final batch: the newest counters and every pending record, marked final.
        result = await self.ship_once(final=True)
        log.info(
            "sidecar stopped",
            extra={
                "finalStatus": result.status,
                "energyJ": self.last_batch.energy_joules if self.last_batch else 0.0,
                "pending": self.state.outbox.pending,
            },
        )
        self.transport.close()
        if self.state.meter is not None:
            self.state.meter.backend.close()


def main() -> int:
    setup_logging()
    config = SidecarConfig.from_env()
    asyncio.run(Sidecar(config).run())
    return 0
