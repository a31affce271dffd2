"""Simulated GPUs: the ground truth that attribution is checked against must itself be exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from carbontrack.energy.simulated import Constant, Piecewise, Ramp, SimulatedBackend, Square, parse_trace


@pytest.mark.parametrize(
    ("trace", "t", "joules"),
    [
        (Constant(300), 2.5, 750.0),
        (Square(400, 100, 2.0), 2.0, 500.0),  # 1 s at 400 W + 1 s at 100 W
        (Square(400, 100, 2.0), 3.5, 500.0 + 400.0 + 50.0),
        (Square(400, 100, 2.0, duty=0.25), 1.0, 200.0 + 50.0),
        (Ramp(100, 300, 10), 10.0, 2000.0),
        (Ramp(100, 300, 10), 12.0, 2000.0 + 600.0),
        (Piecewise([(0, 100), (2, 300), (4, 300)]), 3.0, 400.0 + 300.0),
        (Piecewise([(1, 100), (3, 300)]), 2.0, 100.0 + 150.0),  # held at 100 W before the first point
    ],
)
def test_trace_energy_is_exact(trace: object, t: float, joules: float) -> None:
    assert trace.energy_j(t) == pytest.approx(joules, abs=1e-9)  # type: ignore[attr-defined]


def test_parse_trace_specs(tmp_path: Path) -> None:
    assert parse_trace("constant:250") == Constant(250)
    assert parse_trace("square:400,100,2") == Square(400, 100, 2)
    assert parse_trace("ramp:1,2,3") == Ramp(1, 2, 3)
    csv = tmp_path / "t.csv"
    csv.write_text("t_s,power_w\n0,100\n10,200\n")
    assert parse_trace(f"csv:{csv}").energy_j(10) == pytest.approx(1500.0)
    with pytest.raises(ValueError, match="unknown trace"):
        parse_trace("sine:1")


def test_simulated_counter_is_integer_millijoules_and_can_wrap() -> None:
    now = [0.0]
    gpu = SimulatedBackend(
        [Constant(300)], clock=lambda: now[0], counter_offset_mj=990, counter_modulus_mj=10_000
    )
    assert gpu.energy_mj(0) == 990
    now[0] = 0.01  # 3 J = 3000 mJ
    assert gpu.energy_mj(0) == 3990
    now[0] = 0.04  # 12000 mJ + 990 wraps at 10000
    assert gpu.energy_mj(0) == 2990
    assert gpu.power_mw(0) == 300_000
