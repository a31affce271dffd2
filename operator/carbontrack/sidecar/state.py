"""The sidecar's state machine, without sockets or clocks: markers and readings in, batches out.

Everything the process does to the world (UDP, HTTP, NVML, time) is in app.py; this class is what
tests drive with a fake clock and a simulated GPU.

Two ways energy arrives. `trainer` (default): the trainer's client samples its own GPUs and sends
the readings (sidecar.feed); a step marker is closed at its own timestamp once a reading at or after
it has arrived (or after marker_wait_s). Otherwise a backend (`nvml` opt-in, `simulated`) is read
here at each marker; in `nvml` mode the GPUs it opens must be exactly the trainer's NVML UUIDs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from carbontrack.api.wire import (
    CheckpointReport,
    DPParams,
    EvalReport,
    GpuCounter,
    JobTotals,
    Method,
    ObjectRef,
    PodRef,
    StepRecord,
    TelemetryAck,
    TelemetryBatch,
)
from carbontrack.core.accounting.attribution import SequenceGaps, StepAttributor
from carbontrack.energy.base import EnergyBackend, UnavailableBackend
from carbontrack.energy.meter import GpuMeter, Meter
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.feed import TrainerFeed, sharing_of
from carbontrack.sidecar.markers import BadMarker, GpuReport, Marker, parse
from carbontrack.sidecar.outbox import Outbox

log = logging.getLogger("carbontrack.sidecar")

BackendFactory = Callable[[list[str] | None], EnergyBackend]
"""Makes the backend once the GPUs are known: called with the trainer's NVML UUIDs (or None)."""
MAX_PENDING = 100_000
STOP = b'{"v":1,"k":"ctl","stop":true}'
GO = b'{"v":1,"k":"ctl","stop":false}'
MAX_CTL_JOB_BYTES = 3000
"""A client older than `job` reads control datagrams into 4096 bytes and drops one cut short (with its
`stop`): the totals ride along only while they fit (a few GPU models take 150 bytes)."""
CLOCK_SKEW_S = 10.0
"""trainer mode: a marker or reading stamped further than this from the sidecar's own CLOCK_MONOTONIC
(the same clock, on the same node) is not trusted: a marker is timed on arrival, a reading dropped."""


class SidecarState:
    def __init__(
        self,
        config: SidecarConfig,
        make_backend: BackendFactory,
        now: float,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.boot_id = uuid.uuid4().hex
        self.make_backend = make_backend
        self.wall = wall
        self.meter: Meter | None = None
        self.attributor = StepAttributor(start_t=now)
        self.gaps = SequenceGaps()
        self.outbox = Outbox(limit=config.buffer_records)
        self.steps_seen = 0
        self.global_step = 0
        self.bad_markers = 0
        self.stop_requested = False
        """The operator's last answer asked the trainers to checkpoint and stop (a halt)."""
        self.job_totals: JobTotals | None = None
        """The job's totals in the operator's last answer that had them (relayed: `client.job_totals()`)."""
        self.job_json = b""
        """job_totals as the control datagram carries them (encoded once per answer, not per datagram)."""
        self.ended = False
        self.feed = TrainerFeed() if config.backend == "trainer" else None
        self.pending: deque[Marker] = deque(maxlen=MAX_PENDING)
        self.trainer_gpus: dict[str, GpuReport] = {}
        """The trainer's NVML inventory by UUID (sharing as the trainer's process sees it)."""
        self.refused = ""
        """nvml mode: why the sidecar's GPUs were refused (not exactly the trainer's)."""
        # The GPUs are known up front when configured (or simulated); otherwise the trainer's inventory says.
        if config.backend in ("simulated", "none") or (config.backend == "nvml" and config.visible_devices):
            self._start_meter(None, now)

    def _start_meter(self, uuids: list[str] | None, now: float) -> None:
        backend = self.make_backend(uuids)
        # Opening a backend takes time (NVML init): measure from the first reading, not from before it.
        self.meter = Meter(backend)
        now = max(now, self.clock())
        self.meter.read(now)
        if self.attributor.last_step is None:
            self.attributor.last_t = now
        log.info(
            "measuring",
            extra={"method": self.meter.method, "gpus": [g.info.uuid for g in self.meter.gpus]},
        )

    @property
    def method(self) -> Method:
        if self.feed is not None:
            return self.feed.method
        if self.refused:
            return "unavailable"
        return self.meter.method if self.meter else "unavailable"

    @property
    def method_reason(self) -> str:
        """Why this method: at most the 300 characters the wire allows (a trainer's NVML error text is
        the trainer's words, of any length; a longer reason would make every batch unsendable)."""
        return self._method_reason()[:300]

    def _method_reason(self) -> str:
        if self.feed is not None:
            return self.feed.reason
        if self.refused:
            return self.refused
        if self.meter is None:
            return "waiting for the trainer's NVML inventory (its GPU UUIDs)"
        return self.meter.reason or f"the sidecar's {self.config.backend} backend"

    def read_energy(self, now: float) -> float:
        """Read the sidecar's own meter: its cumulative joules (0 before it starts, frozen once refused)."""
        if self.meter is None:
            return 0.0
        if self.refused:
            return self.meter.total_joules  # frozen: nothing more is measured
        return self.meter.read(now)

    @property
    def gpu_meters(self) -> list[GpuMeter]:
        return self.feed.meters if self.feed is not None else (self.meter.gpus if self.meter else [])

    def _on_inventory(self, marker: Marker, now: float) -> None:
        reports = marker.gpus or ()
        for r in reports:
            self.trainer_gpus[r.uuid] = r
        if self.feed is not None:
            self.feed.on_inventory(reports, marker.error)
            return
        if self.config.backend != "nvml":
            return
        if self.meter is None:
            if not reports:
                self.refused = f"the trainer named no GPUs: {marker.error or 'its NVML sees none'}"
                return
            self._start_meter([r.uuid for r in reports], now)
        self._verify_uuids()
        for g in self.meter.gpus if self.meter else []:
            if (seen := self.trainer_gpus.get(g.info.uuid)) is not None:
                g.sharing = "mig" if g.info.sharing == "mig" else sharing_of(seen)
                g.foreign_processes = seen.foreign_processes

    def _verify_uuids(self) -> None:
        """nvml mode: measure exactly the trainer's GPUs, or nothing (a wrong GPU is a wrong bill)."""
        if self.meter is None or self.refused or not self.trainer_gpus:
            return
        if isinstance(self.meter.backend, UnavailableBackend):
            self.refused = self.meter.backend.reason
            return
        ours = {g.info.uuid for g in self.meter.gpus}
        theirs = set(self.trainer_gpus)
        if ours != theirs:
            self.refused = (
                f"mismatched GPU UUIDs: the sidecar's NVML measures {sorted(ours)}, the trainer's NVML "
                f"uses {sorted(theirs)}; refusing to bill GPUs that are not the trainer's"
            )[:300]
            log.error("refusing to measure: %s", self.refused)

    def on_ack(self, ack: TelemetryAck) -> bool:
        """Keep what a delivered batch's answer says for the trainers; True when `stop` changed."""
        changed = ack.stop != self.stop_requested
        self.stop_requested = ack.stop
        if ack.job is not None:
            self.job_totals = ack.job
            encoded = ack.job.model_dump_json(by_alias=True).encode()
            self.job_json = encoded if len(encoded) <= MAX_CTL_JOB_BYTES else b""
        return changed

    def control(self) -> bytes:
        """The control datagram to a client: `stop` as older clients parse it, and `job` once known
        (an older client ignores keys it does not know)."""
        base = STOP if self.stop_requested else GO
        return base[:-1] + b',"job":' + self.job_json + b"}" if self.job_json else base

    def on_datagram(self, data: bytes, now: float) -> Marker | None:
        try:
            marker = parse(data)
        except BadMarker as exc:
            self.bad_markers += 1
            log.warning("bad marker dropped: %s", exc)
            return None
        if marker.kind == "gpus":
            self._on_inventory(marker, now)
            return marker
        if marker.kind == "sample":
            if self.feed is not None and marker.samples is not None:
                if abs(marker.t - now) > CLOCK_SKEW_S:
                    self.bad_markers += 1
                    log.warning(
                        "reading dropped: its time is %.0f s from the sidecar's clock", marker.t - now
                    )
                    return None
                first = self.feed.first_t is None
                self.feed.on_sample(marker.t, marker.samples)
                if first and self.feed.first_t is not None and self.attributor.last_step is None:
                    self.attributor.last_t = self.feed.first_t  # steps count from every GPU's first reading
                self._close_ready_markers(now)
            return marker
        self.gaps.see(marker.client, marker.seq)  # the sampler's datagrams have their own sequence
        if marker.kind == "hello":
            if marker.error and self.feed is not None:
                self.feed.on_inventory((), marker.error)
            elif marker.error and self.config.backend == "nvml" and self.meter is None:
                self.refused = (
                    f"the trainer could not load NVML, so no GPU is known to be its own: {marker.error}"
                )
            return marker
        if marker.kind in ("step", "end"):
            self._close_step(marker, now)
            self.ended = self.ended or marker.kind == "end"
        if marker.metrics and marker.kind in ("step", "eval"):
            self.outbox.add_eval(EvalReport(step=marker.step, metrics=marker.metrics))
        if marker.kind == "ckpt" and marker.uri is not None:
            self.outbox.checkpoint = CheckpointReport(step=marker.step, uri=marker.uri)
        if marker.kind == "dp" and marker.dp is not None:
            try:
                self.outbox.dp = DPParams(step=marker.step, **marker.dp)
            except ValueError as exc:
                self.bad_markers += 1
                log.warning("bad dp parameters dropped: %s", exc)
        return marker

    def _close_step(self, marker: Marker, now: float) -> None:
        if marker.kind == "step":
            self.steps_seen += 1
        if self.feed is not None:
            if abs(marker.t - now) > CLOCK_SKEW_S:
                marker = replace(marker, t=now)  # not the node's clock: time it on arrival
            self.pending.append(marker)
            self._close_ready_markers(now)
            return
        if marker.kind == "end" and marker.step <= (self.attributor.last_step or 0):
            return
        # Time the step boundary at the reading itself, so duration and energy cover one window.
        now = max(now, self.clock())
        self._add_record(marker.step, now, self.read_energy(now))

    def _close_ready_markers(self, now: float, force: bool = False) -> None:
        """trainer mode: close the pending markers that have a reading at or after them (in order)."""
        assert self.feed is not None
        while self.pending:
            m = self.pending[0]
            if not (force or self.feed.ready(m.t) or now - m.t > self.config.marker_wait_s):
                return
            self.pending.popleft()
            if m.kind == "end" and m.step <= (self.attributor.last_step or 0):
                continue
            if self.attributor.last_step is None and self.feed.first_t is not None:
                # the GPUs' first readings are microseconds apart: the first step starts at the latest
                # one, at the energy interpolated there now that readings after it exist
                self.attributor.last_energy_j = self.feed.energy_at(self.feed.first_t)
            self._add_record(m.step, m.t, self.feed.energy_at(m.t))

    def _add_record(self, step: int, t: float, energy_j: float) -> None:
        record = self.attributor.mark(step, t, energy_j)
        if record is None:
            return
        self.global_step = max(self.global_step, step)
        self.outbox.add_record(
            StepRecord(
                step=record.step,
                first_step=record.first_step,
                energy_joules=record.energy_j,
                duration_s=record.duration_s,
                ended_at=self.wall(),
            )
        )

    def batch(self, now: float, *, final: bool = False, max_records: int = 5000) -> TelemetryBatch:
        """Read the meter and build the next batch (cumulative counters + pending records)."""
        self.read_energy(now)
        if self.feed is not None:
            self._close_ready_markers(now, force=final)
        method = self.method
        exact = method == "simulated"
        gpus = [
            GpuCounter(
                index=g.info.index,
                uuid=g.info.uuid,
                name=g.info.name,
                energy_joules=g.joules,
                lost=g.lost,
                sharing=g.sharing,
                foreign_processes=g.foreign_processes,
                uncertainty_joules=g.uncertainty_j(exact),
                method=None if exact or g.method == method else g.method,
            )
            for g in self.gpu_meters
        ]
        c = self.config
        base = TelemetryBatch(
            job=ObjectRef(namespace=c.job_namespace, name=c.job_name),
            pod=PodRef(namespace=c.pod_namespace, name=c.pod_name, uid=c.pod_uid),
            boot_id=self.boot_id,
            seq=0,
            sent_at=self.wall(),
            method=method,
            method_reason=self.method_reason[:300],  # the wire's limit (a long NVML error raised)
            gpus=gpus,
            steps_seen=self.steps_seen,
            global_step=self.global_step,
            markers_dropped=self.gaps.dropped,
            final=final,
        )
        return self.outbox.next_batch(base, max_records=max_records)
