"""Which GPUs are this pod's: the device plugin's env, parsed strictly."""

from __future__ import annotations

import pytest

from carbontrack.energy.nvml import parse_visible_devices
from carbontrack.sidecar.backends import make_backend
from carbontrack.sidecar.config import SidecarConfig


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("none", []),
        ("void", []),
        ("all", ["all"]),
        ("0,1", ["0", "1"]),
        ("GPU-aaa, GPU-bbb", ["GPU-aaa", "GPU-bbb"]),
    ],
)
def test_parse_visible_devices(value: str | None, expected: list[str] | None) -> None:
    assert parse_visible_devices(value) == expected


def test_nvml_without_known_gpus_reports_unavailable_not_invented_numbers() -> None:
    config = SidecarConfig.from_env({"CARBONTRACK_ENERGY_BACKEND": "nvml"})
    backend = make_backend(config, None)
    assert backend.method == "unavailable" and backend.devices() == []


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CARBONTRACK_ENERGY_BACKEND"):
        SidecarConfig.from_env({"CARBONTRACK_ENERGY_BACKEND": "guess"})
