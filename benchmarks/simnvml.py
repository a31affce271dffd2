"""Give NVML-based peers (Zeus, CodeCarbon) the same simulated GPU carbontrack's sidecar measures.

Patches the official bindings (nvidia-ml-py's `pynvml`) in this process only: every nvml* function
first becomes a stub that raises NVML_ERROR_NOT_SUPPORTED (an honest "this GPU cannot say"), then the
ones a measurement needs are answered from a SimulatedBackend. Benchmarks only; never shipped.
"""

from __future__ import annotations

from typing import Any

import pynvml

from carbontrack.energy.simulated import SimulatedBackend


def install(gpu: SimulatedBackend) -> None:
    def unsupported(*_a: Any, **_k: Any) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    for name in dir(pynvml):
        if name.startswith("nvml") and callable(getattr(pynvml, name)):
            setattr(pynvml, name, unsupported)
    n = len(gpu.traces)
    answers: dict[str, Any] = {
        "nvmlInit": lambda *a, **k: None,
        "nvmlInitWithFlags": lambda *a, **k: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: n,
        "nvmlDeviceGetHandleByIndex": lambda i: int(i),
        "nvmlDeviceGetUUID": lambda h: f"GPU-sim-{h:04d}",
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3 (simulated)",
        "nvmlDeviceGetArchitecture": lambda h: pynvml.NVML_DEVICE_ARCH_HOPPER,
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: gpu.energy_mj(h),
        "nvmlDeviceGetPowerUsage": lambda h: gpu.power_mw(h),
        "nvmlDeviceGetPowerManagementDefaultLimit": lambda h: 700_000,
        "nvmlDeviceGetPowerManagementLimit": lambda h: 700_000,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceGetPowerManagementLimitConstraints": lambda h: (200_000, 700_000),
        "nvmlDeviceGetTemperature": lambda h, sensor: 55,
        "nvmlSystemGetDriverVersion": lambda: "999.99",
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [],
    }
    for name, fn in answers.items():
        setattr(pynvml, name, fn)
