"""One round of the carbon-aware start, and of the dirty-grid watch while Running, as data.

`deferral_round` is a Deferred job's round: a job waiting for a clean grid before its first start
(core.scheduling.deferral.decide), or one paused by a dirty grid waiting to resume by the pause's limit.
It says what becomes of the workers, the status (schedule, phase, Deferred condition, a halt to clear)
and the Events. `dirty_round` and `pause_round` are the watch of a Running job with
spec.carbon.schedule.pauseAbove: the judgement stops the workers through the checkpointing halt, and
once they have stopped the pause is recorded as phase Deferred, which `deferral_round` resumes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from carbontrack.api.contract import Phase
from carbontrack.api.crd import HaltStatus, PauseAboveSpec, ScheduleSpec, ScheduleStatus
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.scheduling.deferral import (
    DirtyGrid,
    Grid,
    decide,
    dirty_check,
    paused_status,
    resume_schedule,
    resumed_status,
    schedule_status,
)


class Workers(Enum):
    """What a round of the carbon-aware start does to the workers."""

    KEEP = "keep"
    """Nothing to write: the Job stays suspended as the reconcile created it."""
    HOLD = "hold"
    """Held stopped: a queued job's Workload made inactive (once Kueue has made it)."""
    START = "start"
    """Let them run: the Job's suspend lifted, or a queued job's Workload made active."""
    RESUME = "resume"
    """Back from a dirty-grid pause: at status.replicas, from the newest checkpoint, as a resumed halt."""


@dataclass(frozen=True)
class GridRound:
    """The status a round records (schedule, phase, Deferred condition), the Events, and the workers."""

    schedule: ScheduleStatus
    phase: Phase
    condition: ConditionUpdate
    events: tuple[Event, ...]
    workers: Workers = Workers.KEEP
    clear_halt: bool = False
    """The pause's halt is over: status.halt goes, and the trainers may run again."""


def deferral_round(
    schedule: ScheduleSpec | None,
    suspend: bool,
    before: ScheduleStatus | None,
    halt: HaltStatus | None,
    grid: Grid,
    now: dt.datetime,
    queued: bool,
) -> GridRound:
    """Start the Job (phase Pending: the judgement takes it to Canary), resume a paused one (back to
    the phase the pause interrupted), or record why it waits and until when. `queued`: Kueue queues the
    job, so its workers are held through the Workload."""
    if before is not None and before.paused_from:  # a dirty-grid pause: resume by the pause's limit
        verdict = decide(resume_schedule(schedule), now, before.paused_at or now, grid, suspend)
        recorded = resumed_status(before, verdict, now)
        resume_to, paused = Phase(before.paused_from), True
    else:
        since = before.deferred_since if before and before.deferred_since else now
        verdict = decide(schedule, now, since, grid, suspended=suspend)
        recorded = schedule_status(before, verdict, grid, now, since)
        resume_to, paused = Phase.PENDING, False
    phase = resume_to if verdict.start else Phase.DEFERRED
    events: list[Event] = []
    if verdict.start or before is None or before.reason != verdict.reason:
        reason = f"Start{verdict.reason}" if verdict.start else f"Deferred{verdict.reason}"
        events.append(Event("Warning" if verdict.warning else "Normal", reason, verdict.message))
    if verdict.start:
        events.append(Event("Normal", "PhaseChanged", f"phase {Phase.DEFERRED} -> {phase}"))
    workers = Workers.HOLD if queued else Workers.KEEP
    if verdict.start:
        workers = Workers.RESUME if paused else Workers.START
    return GridRound(
        schedule=recorded,
        phase=phase,
        condition=ConditionUpdate("Deferred", not verdict.start, verdict.reason, verdict.message),
        events=tuple(events),
        workers=workers,
        clear_halt=verdict.start and halt is not None,
    )


def watches_grid(schedule: ScheduleSpec | None, phase: Phase | None) -> bool:
    """A Running job whose schedule asks to pause while the grid is dirty (pauseAbove)."""
    return phase == Phase.RUNNING and schedule is not None and schedule.pause_above is not None


def dirty_round(
    pause: PauseAboveSpec | None, before: ScheduleStatus | None, grid: Grid, now: dt.datetime
) -> tuple[ScheduleStatus, DirtyGrid]:
    """Whether the live intensity stayed above the limit long enough to pause (`dirty_check`), and the
    schedule status to carry on with. Only a live, reachable reading counts."""
    carried = before or ScheduleStatus()
    live = grid.live and grid.reachable
    dirty = dirty_check(pause, now, grid.g_per_kwh, live, carried.above_since, carried.pauses)
    return carried.model_copy(update={"above_since": dirty.above_since}), dirty


def pause_begins(grid_hold: bool, halt: HaltStatus | None) -> bool:
    """The judgement held the workers for a dirty grid, and they have stopped (after their checkpoint,
    or the grace period): the pause begins."""
    return grid_hold and halt is not None and halt.suspended_at is not None


def pause_round(carried: ScheduleStatus, dirty: DirtyGrid, now: dt.datetime) -> GridRound:
    """The pause recorded as phase Deferred, which resumes by the pause's limit (`deferral_round`)."""
    return GridRound(
        schedule=paused_status(carried, dirty, now, Phase.RUNNING.value),
        phase=Phase.DEFERRED,
        condition=ConditionUpdate("Deferred", True, "DirtyGrid", dirty.message),
        events=(
            Event("Normal", "PausedDirtyGrid", dirty.message),
            Event("Normal", "PhaseChanged", f"phase {Phase.RUNNING} -> {Phase.DEFERRED}"),
        ),
    )
