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


def test_trainer_sampler_reports_the_real_counter(nvml_devices: list[str]) -> None:
    """The client's ctypes sampler on the real driver: its readings are the counter read directly."""
    import ctypes
    import json
    import socket

    from carbontrack.trainer import client
    from carbontrack.trainer.nvml import Nvml

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        c = client.Client(f"127.0.0.1:{rx.getsockname()[1]}")
        assert c.sampler is not None, "libnvidia-ml.so.1 did not load"
        direct = Nvml(ctypes.CDLL("libnvidia-ml.so.1"))
        try:
            time.sleep(1.0)
            c.end(1)
            handle = direct.handles()[0]
            after = direct.energy_mj(handle) if c.sampler.counter[0] else None
            c.sampler.stop()
            rx.settimeout(0.5)
            samples = []
            while True:
                try:
                    msg = json.loads(rx.recv(65536))
                except TimeoutError:
                    break
                if msg["k"] == "sample":
                    samples.append(msg)
            assert c.sampler.uuids[0] == nvml_devices[0] and len(samples) >= 5
            # the newest reading taken before the direct read (a periodic one may follow it under load)
            mine = [g for m in samples for g in m["g"] if g[0] == nvml_devices[0] and g[1] is not None]
            first = max((g for g in mine if after is None or g[1] <= after), key=lambda g: g[1])
            if after is not None:
                # the last sample was taken right after end(); the direct read follows within milliseconds
                assert 0 <= after - first[1] <= 1000 * 2, (after, first)
        finally:
            c.close()
            direct.shutdown()
