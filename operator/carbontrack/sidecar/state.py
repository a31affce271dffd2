"""The sidecar's state machine, without sockets or clocks: markers and readings in, batches out.

Everything the process does to the world (UDP, HTTP, NVML, time) is in app.py; this class is what
tests drive with a fake clock and a simulated GPU.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from carbontrack.api.wire import (
    DPParams,
    EvalReport,
    GpuCounter,
    Method,
    ObjectRef,
    PodRef,
    StepRecord,
    TelemetryBatch,
)
from carbontrack.core.attribution import SequenceGaps, StepAttributor
from carbontrack.energy.base import EnergyBackend
from carbontrack.energy.meter import Meter
from carbontrack.sidecar.config import SidecarConfig
from carbontrack.sidecar.markers import BadMarker, Marker, parse
from carbontrack.sidecar.outbox import Outbox

log = logging.getLogger("carbontrack.sidecar")

BackendFactory = Callable[[str | None], EnergyBackend]
"""Makes the backend once the GPUs are known: called with the visible-devices string."""


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
        self.ended = False
        # The GPUs are known up front when configured (or simulated); otherwise the trainer's hello says.
        if config.backend != "nvml" or config.visible_devices is not None:
            self._start_meter(config.visible_devices, now)

    def _start_meter(self, visible: str | None, now: float) -> None:
        backend = self.make_backend(visible)
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
        return self.meter.method if self.meter else "unavailable"

    def read(self, now: float) -> float:
        return self.meter.read(now) if self.meter else 0.0

    def on_datagram(self, data: bytes, now: float) -> Marker | None:
        try:
            marker = parse(data)
        except BadMarker as exc:
            self.bad_markers += 1
            log.warning("bad marker dropped: %s", exc)
            return None
        self.gaps.see(marker.client, marker.seq)
        if marker.kind == "hello":
            if self.meter is None:
                self._start_meter(marker.visible, now)
            return marker
        if marker.kind in ("step", "end"):
            self._close_step(marker, now)
            self.ended = self.ended or marker.kind == "end"
        if marker.metrics and marker.kind in ("step", "eval"):
            self.outbox.add_eval(EvalReport(step=marker.step, metrics=marker.metrics))
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
        if marker.kind == "end" and marker.step <= (self.attributor.last_step or 0):
            return
        # Time the step boundary at the reading itself, so duration and energy cover one window.
        now = max(now, self.clock())
        energy = self.read(now)
        record = self.attributor.mark(marker.step, now, energy)
        if record is None:
            return
        self.global_step = max(self.global_step, marker.step)
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
        self.read(now)
        gpus = [
            GpuCounter(index=g.info.index, uuid=g.info.uuid, energy_joules=g.joules, lost=g.lost)
            for g in (self.meter.gpus if self.meter else [])
        ]
        c = self.config
        base = TelemetryBatch(
            job=ObjectRef(namespace=c.job_namespace, name=c.job_name),
            pod=PodRef(namespace=c.pod_namespace, name=c.pod_name, uid=c.pod_uid),
            boot_id=self.boot_id,
            seq=0,
            sent_at=self.wall(),
            method=self.method,
            gpus=gpus,
            steps_seen=self.steps_seen,
            global_step=self.global_step,
            markers_dropped=self.gaps.dropped,
            final=final,
        )
        return self.outbox.build(base, max_records=max_records)
