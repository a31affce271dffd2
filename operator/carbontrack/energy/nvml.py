"""NVML backend, the sidecar's opt-in mode: the trainer's GPUs read through nvidia-ml-py here.

Only for clusters that give the sidecar container the node's GPUs (the `nvidia` runtime honouring
NVIDIA_VISIBLE_DEVICES=all; README "the sidecar: how energy is measured"). The default is the
trainer's own samples, which need nothing from the cluster.

Energy comes from nvmlDeviceGetTotalEnergyConsumption (mJ since driver load; Volta and newer).
Where that returns NOT_SUPPORTED the GPU is marked counterless and the meter integrates
nvmlDeviceGetPowerUsage samples instead, reporting `method: power-integration`.

Which GPUs: the trainer's NVML UUIDs (from its client's inventory), looked up by UUID; every one
must be found or nothing is measured (a GPU that is not the trainer's would be a wrong bill). An
explicit CARBONTRACK_VISIBLE_DEVICES (UUIDs or indices) is checked against the trainer's UUIDs the
same way. `all` is honoured only when the operator's configuration says so explicitly. A GPU in MIG
mode is measured as a board (`sharing: mig`): NVML has no energy per MIG instance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from carbontrack.api.wire import Method
from carbontrack.energy.base import BackendUnavailable, GpuInfo, GpuLost

log = logging.getLogger(__name__)


def parse_visible_devices(value: str | None) -> list[str] | None:
    """`GPU-uuid,GPU-uuid` or `0,1` -> list; `all` -> ["all"]; empty, none or void -> []; unset -> None."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", "none", "void", "NoDevFiles"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


class NvmlBackend:
    method: Method = "energy-counter"

    def __init__(self, visible: Sequence[str], *, allow_all: bool = False) -> None:
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a runtime dependency
            raise BackendUnavailable("nvidia-ml-py is not installed") from exc
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise BackendUnavailable(f"NVML could not be initialised: {exc}") from exc
        try:
            self._handles, self._devices = self._discover(visible, allow_all)
        except BaseException:
            pynvml.nvmlShutdown()
            raise
        if any(not d.has_energy_counter for d in self._devices):
            self.method = "power-integration"

    def _discover(self, visible: Sequence[str], allow_all: bool) -> tuple[list[Any], list[GpuInfo]]:
        nv = self._nvml
        if list(visible) == ["all"]:
            if not allow_all:
                raise BackendUnavailable(
                    "visible devices is 'all': refusing to measure every GPU of the node "
                    "(set CARBONTRACK_ALLOW_ALL_GPUS=true if this pod really owns them all)"
                )
            visible = [str(i) for i in range(nv.nvmlDeviceGetCount())]
        handles, devices = [], []
        for pos, ident in enumerate(visible):
            if ident.startswith("MIG-"):
                raise BackendUnavailable(f"{ident}: MIG instances have no energy counter of their own")
            try:
                handle = (
                    nv.nvmlDeviceGetHandleByIndex(int(ident))
                    if ident.isdigit()
                    else nv.nvmlDeviceGetHandleByUUID(ident)
                )
                uuid = _text(nv.nvmlDeviceGetUUID(handle))
                name = _text(nv.nvmlDeviceGetName(handle))
            except nv.NVMLError as exc:
                raise BackendUnavailable(
                    f"mismatched GPU UUIDs: the sidecar's NVML cannot open {ident}, which the trainer uses "
                    f"({exc}); this container does not see the trainer's GPUs"
                ) from exc
            if not ident.isdigit() and uuid != ident:
                raise BackendUnavailable(f"mismatched GPU UUIDs: asked NVML for {ident}, it opened {uuid}")
            try:
                nv.nvmlDeviceGetTotalEnergyConsumption(handle)
                counter = True
            except nv.NVMLError_NotSupported:
                counter = False
                log.warning("gpu has no energy counter; integrating power samples", extra={"gpu": uuid})
            try:
                mig = nv.nvmlDeviceGetMigMode(handle)[0] == 1
            except nv.NVMLError:
                mig = False  # NOT_SUPPORTED: a GPU without MIG
            handles.append(handle)
            devices.append(GpuInfo(pos, uuid, name, counter, "mig" if mig else "exclusive"))
        if not devices:
            raise BackendUnavailable("no GPU is visible to this pod")
        return handles, devices

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def _call(self, fn: Any, gpu: int) -> int:
        nv = self._nvml
        try:
            return int(fn(self._handles[gpu]))
        except nv.NVMLError_GpuIsLost as exc:
            raise GpuLost(f"GPU {self._devices[gpu].uuid} is lost: {exc}") from exc

    def energy_mj(self, gpu: int) -> int:
        return self._call(self._nvml.nvmlDeviceGetTotalEnergyConsumption, gpu)

    def power_mw(self, gpu: int) -> int:
        return self._call(self._nvml.nvmlDeviceGetPowerUsage, gpu)

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
