"""A round of the carbon-aware start and of the dirty-grid pause: workers, phase, status and Events."""

from __future__ import annotations

import datetime as dt

import pytest

from carbontrack.api.contract import Phase
from carbontrack.api.crd import HaltStatus, PauseAboveSpec, ScheduleSpec, ScheduleStatus
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.scheduling.deferral import Grid, dirty_check
from carbontrack.core.scheduling.rounds import (
    Workers,
    deferral_round,
    dirty_round,
    pause_begins,
    pause_round,
    watches_grid,
)

T0 = dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)
PAUSE = PauseAboveSpec(grams_per_kwh=300, after="30m", max_pauses=2)
SCHEDULE = ScheduleSpec(max_grams_per_kwh=200, max_delay="12h", pause_above=PAUSE)
HALT = HaltStatus(requested_at=T0, deadline=T0, suspended_at=T0, outcome="Checkpointed")


def hours(h: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=h)


def live(g_per_kwh: float, reachable: bool = True) -> Grid:
    return Grid(g_per_kwh, "electricitymaps", live=True, reachable=reachable, zone="DE")


def test_a_first_round_above_the_threshold_waits_and_says_why_once() -> None:
    first = deferral_round(SCHEDULE, False, None, None, live(450), hours(0), queued=False)
    assert (first.phase, first.workers, first.clear_halt) == (Phase.DEFERRED, Workers.KEEP, False)
    assert first.condition == ConditionUpdate("Deferred", True, "AboveThreshold", first.schedule.message)
    assert [e.reason for e in first.events] == ["DeferredAboveThreshold"]
    assert first.schedule.deferred_since == hours(0)
    again = deferral_round(SCHEDULE, False, first.schedule, None, live(460), hours(1), queued=False)
    assert again.events == ()  # the same reason: no second Event
    assert (again.schedule.deferred_since, again.schedule.deferred_seconds) == (hours(0), 3600.0)


def test_a_queued_job_waiting_is_held_through_its_workload() -> None:
    waiting = deferral_round(SCHEDULE, False, None, None, live(450), hours(0), queued=True)
    assert waiting.workers is Workers.HOLD


@pytest.mark.parametrize("queued", [False, True])
def test_a_clean_grid_starts_the_job_in_pending(queued: bool) -> None:
    waited = deferral_round(SCHEDULE, False, None, None, live(450), hours(0), queued).schedule
    start = deferral_round(SCHEDULE, False, waited, None, live(150), hours(2), queued)
    assert (start.phase, start.workers) == (Phase.PENDING, Workers.START)
    assert start.condition.status is False and start.condition.reason == "GridClean"
    assert start.events == (
        Event("Normal", "StartGridClean", start.schedule.message),
        Event("Normal", "PhaseChanged", "phase Deferred -> Pending"),
    )
    assert (start.schedule.started_at, start.schedule.start_grams_per_kwh) == (hours(2), 150)


def test_a_fixed_figure_starts_at_once_with_a_warning() -> None:
    static = Grid(380.9, "static:ember-2023", live=False)
    start = deferral_round(SCHEDULE, False, None, None, static, hours(0), queued=False)
    assert start.workers is Workers.START
    assert start.events[0].type == "Warning" and start.events[0].reason == "StartStaticIntensity"


def test_spec_suspend_keeps_a_deferred_job_waiting() -> None:
    held = deferral_round(SCHEDULE, True, None, None, live(100), hours(0), queued=False)
    assert (held.phase, held.workers, held.condition.reason) == (Phase.DEFERRED, Workers.KEEP, "Suspended")


def paused_schedule() -> ScheduleStatus:
    running = ScheduleStatus(started_at=T0, planned_grams_per_kwh=450, start_grams_per_kwh=150)
    dirty = dirty_check(PAUSE, hours(2), 350, True, hours(1), 0)
    return pause_round(running, dirty, hours(2)).schedule


def test_a_paused_job_resumes_by_the_pause_limit_from_its_checkpoint() -> None:
    paused = paused_schedule()
    still = deferral_round(SCHEDULE, False, paused, HALT, live(320), hours(3), queued=False)
    assert (still.phase, still.workers, still.clear_halt) == (Phase.DEFERRED, Workers.KEEP, False)
    back = deferral_round(SCHEDULE, False, paused, HALT, live(290), hours(3), queued=False)
    assert (back.phase, back.workers, back.clear_halt) == (Phase.RUNNING, Workers.RESUME, True)
    assert (back.schedule.paused_from, back.schedule.paused_seconds) == (None, 3600.0)
    assert back.events[-1] == Event("Normal", "PhaseChanged", "phase Deferred -> Running")


def test_a_pause_is_recorded_as_deferred_with_its_events() -> None:
    dirty = dirty_check(PAUSE, hours(2), 350, True, hours(1), 0)
    paused = pause_round(ScheduleStatus(started_at=T0), dirty, hours(2))
    assert paused.phase == Phase.DEFERRED
    assert (paused.schedule.paused_from, paused.schedule.pauses) == ("Running", 1)
    assert paused.condition == ConditionUpdate("Deferred", True, "DirtyGrid", dirty.message)
    assert paused.events == (
        Event("Normal", "PausedDirtyGrid", dirty.message),
        Event("Normal", "PhaseChanged", "phase Running -> Deferred"),
    )


@pytest.mark.parametrize(
    ("grid", "above_h", "pause", "since_h"),
    [
        (live(350), 1.5, True, 1.5),   # dirty for 30 min: pause
        (live(350), 1.8, False, 1.8),  # dirty for 12 min: not yet
        (live(250), 1.0, False, None),  # clean again: the streak ends
        (live(350, reachable=False), 1.0, False, None),  # a fallback figure never pauses
    ],
)  # fmt: skip
def test_the_dirty_grid_watch_carries_its_streak(
    grid: Grid, above_h: float, pause: bool, since_h: float | None
) -> None:
    before = ScheduleStatus(started_at=T0, above_since=hours(above_h))
    carried, dirty = dirty_round(PAUSE, before, grid, hours(2))
    assert dirty.pause is pause
    assert carried.above_since == dirty.above_since == (None if since_h is None else hours(since_h))
    assert carried.started_at == T0


def test_the_pause_begins_once_the_held_workers_have_stopped() -> None:
    asking = HALT.model_copy(update={"suspended_at": None, "outcome": None})
    assert pause_begins(True, HALT)
    assert not pause_begins(True, asking)  # still waiting for the checkpoint
    assert not pause_begins(False, HALT)  # a halt for another reason
    assert not pause_begins(True, None)


def test_only_a_running_job_with_pause_above_watches_the_grid() -> None:
    assert watches_grid(SCHEDULE, Phase.RUNNING)
    assert not watches_grid(SCHEDULE, Phase.CANARY)
    assert not watches_grid(ScheduleSpec(), Phase.RUNNING)
    assert not watches_grid(None, Phase.RUNNING)
