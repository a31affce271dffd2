"""The one ctypes binding of libnvidia-ml: every NVML call the trainer's sampler and the sidecar make.

ctypes rather than nvidia-ml-py, because the training image has the standard library and the driver's
library (the NVIDIA container toolkit mounts libnvidia-ml.so.1 into every GPU container) and nothing
else of ours. Every call checks NVML's return code and raises NvmlError with the code and NVML's own
text; a library that is not NVML raises OSError (it does not load) or AttributeError (a symbol is
missing).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

NVML_LIBRARY = "libnvidia-ml.so.1"
"""Found by the dynamic loader, as every NVML client finds it."""
NVML_SUCCESS, NVML_NOT_SUPPORTED, NVML_NOT_FOUND, NVML_INSUFFICIENT_SIZE, NVML_GPU_IS_LOST = 0, 3, 6, 7, 15
MAX_GPUS = 64
"""A bound on the GPUs one process enumerates."""
MAX_MIG_DEVICES = 8
"""A bound on the MIG instances read per GPU (an A100 or H100 holds at most seven)."""
TEXT_BUFFER = 96
"""NVML_DEVICE_UUID_V2_BUFFER_SIZE and NVML_DEVICE_NAME_V2_BUFFER_SIZE."""


class NvmlError(Exception):
    """An NVML call returned `code` (an nvmlReturn_t other than NVML_SUCCESS)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"NVML error {code}: {text}")
        self.code = code


class _ProcessInfo(ctypes.Structure):
    """nvmlProcessInfo_t as nvmlDeviceGetComputeRunningProcesses_v3 fills it (pynvml's layout)."""

    _fields_ = [
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


def load_library(path: str = NVML_LIBRARY) -> ctypes.CDLL:
    """The NVML library at `path` (a name the loader resolves, or a file). Raises OSError."""
    return ctypes.CDLL(path)


class Nvml:
    """An initialised NVML session: nvmlInit_v2 here, nvmlShutdown in `shutdown()` (NVML counts both)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.lib.nvmlErrorString.restype = ctypes.c_char_p
        self._check(self.lib.nvmlInit_v2())
        try:
            self._procs = self.lib.nvmlDeviceGetComputeRunningProcesses_v3
        except AttributeError:  # drivers before 510
            self._procs = self.lib.nvmlDeviceGetComputeRunningProcesses

    def _check(self, code: int) -> None:
        if code != NVML_SUCCESS:
            raise NvmlError(code, (self.lib.nvmlErrorString(code) or b"").decode(errors="replace"))

    def count(self) -> int:
        """How many GPUs this process's NVML enumerates (its container's, not the node's, under CDI)."""
        count = ctypes.c_uint()
        self._check(self.lib.nvmlDeviceGetCount_v2(ctypes.byref(count)))
        return count.value

    def handle_by_index(self, index: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._check(self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)))
        return handle

    def handle_by_uuid(self, uuid: str) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._check(self.lib.nvmlDeviceGetHandleByUUID(uuid.encode(), ctypes.byref(handle)))
        return handle

    def handles(self) -> list[ctypes.c_void_p]:
        """Every GPU NVML enumerates, in its index order (at most MAX_GPUS)."""
        return [self.handle_by_index(i) for i in range(min(self.count(), MAX_GPUS))]

    def _text(self, fn: Callable[..., int], handle: ctypes.c_void_p) -> str:
        buf = ctypes.create_string_buffer(TEXT_BUFFER)
        self._check(fn(handle, buf, ctypes.c_uint(TEXT_BUFFER)))
        return buf.value.decode(errors="replace")

    def uuid(self, handle: ctypes.c_void_p) -> str:
        return self._text(self.lib.nvmlDeviceGetUUID, handle)

    def name(self, handle: ctypes.c_void_p) -> str:
        return self._text(self.lib.nvmlDeviceGetName, handle)

    def energy_mj(self, handle: ctypes.c_void_p) -> int:
        """The board's energy counter: mJ since the driver loaded (Volta and newer; NOT_SUPPORTED before)."""
        value = ctypes.c_ulonglong()
        self._check(self.lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(value)))
        return value.value

    def power_mw(self, handle: ctypes.c_void_p) -> int:
        value = ctypes.c_uint()
        self._check(self.lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(value)))
        return value.value

    def mig_enabled(self, handle: ctypes.c_void_p) -> bool:
        """Whether MIG mode is on now (a pending change counts from the next GPU reset)."""
        current, pending = ctypes.c_uint(), ctypes.c_uint()
        self._check(self.lib.nvmlDeviceGetMigMode(handle, ctypes.byref(current), ctypes.byref(pending)))
        return current.value == 1

    def mig_devices(self, handle: ctypes.c_void_p) -> list[str] | None:
        """UUIDs of the MIG instances this process sees on the GPU; None when MIG is off."""
        try:
            if not self.mig_enabled(handle):
                return None
        except NvmlError as exc:
            if exc.code == NVML_NOT_SUPPORTED:
                return None
            raise
        count, out = ctypes.c_uint(), []
        if self.lib.nvmlDeviceGetMaxMigDeviceCount(handle, ctypes.byref(count)) == NVML_SUCCESS:
            for i in range(min(count.value, MAX_MIG_DEVICES)):
                mig = ctypes.c_void_p()
                found = self.lib.nvmlDeviceGetMigDeviceHandleByIndex(
                    handle, ctypes.c_uint(i), ctypes.byref(mig)
                )
                if found == NVML_SUCCESS:
                    out.append(self.uuid(mig))
        return out

    def pids(self, handle: ctypes.c_void_p) -> list[int]:
        """PIDs of the compute processes on the GPU, as the driver names them (see sampler.own_pid)."""
        count = ctypes.c_uint(0)
        code = self._procs(handle, ctypes.byref(count), None)
        while code == NVML_INSUFFICIENT_SIZE:
            n = count.value + 4
            infos = (_ProcessInfo * n)()
            count = ctypes.c_uint(n)
            code = self._procs(handle, ctypes.byref(count), infos)
            if code == NVML_SUCCESS:
                return [infos[i].pid for i in range(count.value)]
        self._check(code)
        return []

    def shutdown(self) -> None:
        """End this session; NVML's answer is ignored (nothing to do about a failed shutdown)."""
        self.lib.nvmlShutdown()
