"""The NVML backend against a real GPU. Marked `gpu`: skipped where no NVIDIA GPU and driver exist."""

from __future__ import annotations

import time

import pytest

from carbontrack.energy.base import BackendUnavailable
from carbontrack.energy.meter import Meter

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml_devices() -> list[str]:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVIDIA driver: {exc}")
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            pytest.skip("no NVIDIA GPU")
        return [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))]
    finally:
        pynvml.nvmlShutdown()


def test_nvml_backend_measures_only_the_named_gpu(nvml_devices: list[str]) -> None:
    from carbontrack.energy.nvml import NvmlBackend

    backend = NvmlBackend(nvml_devices)
    try:
        assert [d.uuid for d in backend.devices()] == nvml_devices
        meter = Meter(backend)
        meter.read(time.monotonic())
        time.sleep(2.0)
        joules = meter.read(time.monotonic())
        # An idle datacentre GPU draws tens of watts: 2 s must show energy, and less than 2 s at 1 kW.
        assert 1.0 < joules < 2000.0, joules
        assert backend.method in ("energy-counter", "power-integration")
    finally:
        backend.close()


def test_nvml_refuses_all_gpus_unless_allowed(nvml_devices: list[str]) -> None:
    from carbontrack.energy.nvml import NvmlBackend

    with pytest.raises(BackendUnavailable, match="refusing"):
        NvmlBackend(["all"])
