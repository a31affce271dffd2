"""Energy attribution: counters, integration and step splitting, with exact expected values."""

from __future__ import annotations

import pytest

from carbontrack.core.accounting.attribution import (
    CounterTracker,
    PowerIntegrator,
    SequenceGaps,
    StepAttributor,
)


def test_counter_accumulates_deltas_from_first_reading() -> None:
    c = CounterTracker()
    assert c.update(5_000_000, 0.0) == 0.0  # counts from the sidecar's first reading, not driver load
    assert c.update(5_000_250, 1.0) == 0.25
    assert c.update(5_300_250, 2.0) == 300.25


def test_counter_wrap_is_counted_as_energy() -> None:
    c = CounterTracker(modulus_mj=1_000_000)
    c.update(999_000, 0.0)
    assert c.update(500, 1.0) == pytest.approx(1.5)  # 1000 mJ to the top + 500 after the wrap
    assert c.wraps == 1 and c.resets == 0


def test_counter_reset_counts_only_energy_since_reset() -> None:
    c = CounterTracker()
    c.update(9_000_000_000, 0.0)
    assert c.update(2_000, 1.0) == 2.0  # driver reload: 2 J since, not 2**64 mJ
    assert c.resets == 1 and c.wraps == 0


def test_power_integration_is_trapezoid() -> None:
    p = PowerIntegrator()
    p.sample(100.0, 0.0)
    p.sample(300.0, 1.0)  # (100+300)/2 * 1
    assert p.sample(300.0, 3.0) == 200.0 + 600.0
    assert p.sample(999.0, 2.0) == 800.0  # a sample from the past changes nothing


def test_steps_split_cumulative_energy_exactly() -> None:
    a = StepAttributor(start_t=10.0)
    first = a.mark(1, 11.0, 50.0)
    second = a.mark(2, 13.0, 170.0)
    assert first is not None and (first.step, first.first_step, first.energy_j, first.duration_s) == (
        1,
        0,
        50.0,
        1.0,
    )
    assert second is not None and (second.energy_j, second.duration_s) == (120.0, 2.0)


def test_lost_markers_merge_into_the_next_step_and_reordered_ones_are_ignored() -> None:
    a = StepAttributor(start_t=0.0)
    a.mark(1, 1.0, 10.0)
    merged = a.mark(4, 4.0, 40.0)  # markers for steps 2 and 3 were lost
    assert merged is not None and (merged.first_step, merged.step, merged.energy_j) == (1, 4, 30.0)
    assert a.mark(3, 4.5, 45.0) is None  # step 3 arrives late: already attributed to (1, 4]
    assert a.out_of_order == 1
    last = a.mark(5, 5.0, 50.0)
    assert last is not None and last.energy_j == 10.0  # 50 - 40: the late marker moved nothing


def test_sequence_gaps_count_losses_and_forgive_late_arrivals() -> None:
    g = SequenceGaps()
    for q in (1, 2, 5):
        g.see("a", q)
    assert g.dropped == 2
    g.see("a", 3)
    assert g.dropped == 1
    g.see("b", 1)  # trainer restarted: new client, earlier losses kept
    g.see("b", 3)
    assert g.dropped == 2
