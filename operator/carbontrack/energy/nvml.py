"""NVML backend, the sidecar's opt-in mode: the trainer's GPUs read from the sidecar's container.

Only for clusters that give the sidecar container the node's GPUs (the `nvidia` runtime honouring
NVIDIA_VISIBLE_DEVICES=all; README "the sidecar: how energy is measured"). The default is the
trainer's own samples, which need nothing from the cluster. Both read NVML through the one ctypes
binding, carbontrack.trainer.nvml, so the sidecar and the trainer make the same calls.

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

import ctypes
import logging
from collections.abc import Callable, Sequence

from carbontrack.api.wire import Method
from carbontrack.energy.base import BackendUnavailable, GpuInfo, GpuLost
from carbontrack.trainer.nvml import NVML_GPU_IS_LOST, NVML_NOT_SUPPORTED, Nvml, NvmlError, load_library

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
    """The GPUs named in `visible`, read through NVML; raises BackendUnavailable when any is not ours."""

    method: Method = "energy-counter"

    def __init__(self, visible: Sequence[str], *, allow_all: bool = False) -> None:
        try:
            self._nvml = Nvml(load_library())
        except (OSError, AttributeError, NvmlError) as exc:
            raise BackendUnavailable(f"NVML could not be initialised: {exc}") from exc
        try:
            self._handles, self._devices = self._discover(visible, allow_all)
        except BaseException:
            self._nvml.shutdown()
            raise
        if any(not d.has_energy_counter for d in self._devices):
            self.method = "power-integration"

    def _discover(
        self, visible: Sequence[str], allow_all: bool
    ) -> tuple[list[ctypes.c_void_p], list[GpuInfo]]:
        if list(visible) == ["all"]:
            if not allow_all:
                raise BackendUnavailable(
                    "visible devices is 'all': refusing to measure every GPU of the node "
                    "(set CARBONTRACK_ALLOW_ALL_GPUS=true if this pod really owns them all)"
                )
            visible = [str(i) for i in range(self._nvml.count())]
        handles, devices = [], []
        for pos, ident in enumerate(visible):
            handle, device = self._open(pos, ident)
            handles.append(handle)
            devices.append(device)
        if not devices:
            raise BackendUnavailable("no GPU is visible to this pod")
        return handles, devices

    def _open(self, pos: int, ident: str) -> tuple[ctypes.c_void_p, GpuInfo]:
        """The GPU `ident` (an NVML UUID or index), checked to be the one asked for."""
        nvml = self._nvml
        if ident.startswith("MIG-"):
            raise BackendUnavailable(f"{ident}: MIG instances have no energy counter of their own")
        try:
            handle = nvml.handle_by_index(int(ident)) if ident.isdigit() else nvml.handle_by_uuid(ident)
            uuid, name = nvml.uuid(handle), nvml.name(handle)
        except NvmlError as exc:
            raise BackendUnavailable(
                f"mismatched GPU UUIDs: the sidecar's NVML cannot open {ident}, which the trainer uses "
                f"({exc}); this container does not see the trainer's GPUs"
            ) from exc
        if not ident.isdigit() and uuid != ident:
            raise BackendUnavailable(f"mismatched GPU UUIDs: asked NVML for {ident}, it opened {uuid}")
        try:
            nvml.energy_mj(handle)
            counter = True
        except NvmlError as exc:
            if exc.code != NVML_NOT_SUPPORTED:
                raise
            counter = False
            log.warning("gpu has no energy counter; integrating power samples", extra={"gpu": uuid})
        try:
            mig = nvml.mig_enabled(handle)
        except NvmlError:
            mig = False  # NOT_SUPPORTED: a GPU without MIG
        return handle, GpuInfo(pos, uuid, name, counter, "mig" if mig else "exclusive")

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def _call(self, read: Callable[[ctypes.c_void_p], int], gpu: int) -> int:
        try:
            return read(self._handles[gpu])
        except NvmlError as exc:
            if exc.code != NVML_GPU_IS_LOST:
                raise
            raise GpuLost(f"GPU {self._devices[gpu].uuid} is lost: {exc}") from exc

    def energy_mj(self, gpu: int) -> int:
        return self._call(self._nvml.energy_mj, gpu)

    def power_mw(self, gpu: int) -> int:
        return self._call(self._nvml.power_mw, gpu)

    def close(self) -> None:
        self._nvml.shutdown()
