"""The sidecar process: UDP in, HTTP out, a sampler, a health endpoint, and a clean SIGTERM.

Run as `carbontrack sidecar` or `python -m carbontrack.sidecar`; configured by environment
(see SidecarConfig). The HTTP client is the standard library's, in a worker thread: one request a
second does not justify another dependency in a process that must stay under 60 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial

from carbontrack.api.wire import TELEMETRY_PATH, TelemetryAck, TelemetryBatch
from carbontrack.logs import setup_logging
from carbontrack.sidecar.backends import make_backend
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.markers import Marker
from carbontrack.sidecar.outbox import Backoff
from carbontrack.sidecar.policy import Action, respond
from carbontrack.sidecar.state import SidecarState

log = logging.getLogger("carbontrack.sidecar")


@dataclass
class SendResult:
    status: int
    """HTTP status, or 0 when the operator could not be reached."""
    ack: TelemetryAck | None = None
    error: str = ""


def tls_context(url: str, ca_file: str) -> ssl.SSLContext | None:
    """For an https operator: trust only the operator's CA bundle, and check the server's name (the
    Service's DNS name in the URL). Read anew for each send: the bundle rotates."""
    if not url.startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def post_batch(
    url: str, token: str, batch: TelemetryBatch, timeout_s: float, ca_file: str = ""
) -> SendResult:
    """POST one batch; never raises (the caller decides about retries from the status)."""
    body = batch.model_dump_json(by_alias=True, exclude_none=True).encode()
    request = urllib.request.Request(
        url.rstrip("/") + TELEMETRY_PATH,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        context = tls_context(url, ca_file)
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as resp:
            raw = resp.read(1 << 16)
            try:
                return SendResult(resp.status, TelemetryAck.model_validate_json(raw))
            except ValueError:
                return SendResult(resp.status, None, "unparseable ack")
    except urllib.error.HTTPError as exc:
        return SendResult(exc.code, None, exc.read(4096).decode(errors="replace"))
    except (OSError, ValueError) as exc:
        return SendResult(0, None, str(exc))


STOP = b'{"v":1,"k":"ctl","stop":true}'
GO = b'{"v":1,"k":"ctl","stop":false}'


class _MarkerProtocol(asyncio.DatagramProtocol):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        marker = self.sidecar.on_datagram(data)
        # the pod-local channel back: a halt's stop request answers every datagram of a client (a poll
        # is answered either way, so a withdrawn stop is seen); loopback, so never lost in practice
        stop = self.sidecar.state.stop_requested
        if self.transport is not None and (stop or (marker is not None and marker.kind == "poll")):
            self.transport.sendto(STOP if stop else GO, addr)


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
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def on_datagram(self, data: bytes) -> Marker | None:
        marker = self.state.on_datagram(data, time.monotonic())
        if marker is not None and marker.kind in ("end", "ckpt"):
            self._wake.set()  # flush promptly: the trainer is about to exit, or a halt waits for it
        return marker

    def _token(self) -> str:
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
        result = await asyncio.to_thread(
            post_batch, self.config.operator_url, self._token(), batch, self.config.request_timeout_s,
            self.config.ca_file,
        )  # fmt: skip
        response = respond(result.status, self.max_records)
        self.back_off = response.back_off
        if response.action is Action.DELIVERED:
            if result.ack is not None and result.ack.stop != self.state.stop_requested:
                log.info("stop request from the operator", extra={"stop": result.ack.stop})
                self.state.stop_requested = result.ack.stop
            self.state.outbox.ack(batch.seq)
            self.sent += 1
            self.last_ok = time.monotonic()
            self.backoff.reset()
        elif response.action is Action.SHRINK:
            self.max_records = response.max_records
            log.warning("batch too large; sending fewer records per batch", extra={"max": self.max_records})
        elif response.action is Action.DROP_RECORDS:
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

    async def _ship_loop(self) -> None:
        delay = self.config.interval_s
        while not self._stop.is_set():
            self._wake.clear()
            waits = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._wake.wait())]
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if self._stop.is_set():
                return
            await self.ship_once()
            delay = self.config.interval_s
            if self.back_off:
                delay = max(delay, self.backoff.next_delay())

    async def _sample_loop(self) -> None:
        period = 1.0 / self.config.sample_hz
        while not self._stop.is_set():
            meter = self.state.meter
            if meter is not None and meter.needs_sampling:
                meter.read(time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)

    async def _health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        health = await asyncio.start_server(self._health, self.config.health_host, self.config.health_port)
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
        if self.state.meter is not None:
            self.state.meter.backend.close()


def main() -> int:
    setup_logging()
    config = SidecarConfig.from_env()
    asyncio.run(Sidecar(config).run())
    return 0
