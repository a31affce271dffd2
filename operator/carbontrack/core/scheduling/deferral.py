"""Deferred start: wait for a clean grid, as a pure function of the schedule, the clock and the grid.

A job with `spec.carbon.schedule` is created suspended in phase Deferred. Every judgement round the
handler reads the zone's intensity now and, where the provider has one, its forecast, and asks `decide`:

1. no schedule any more (an edit removed it)                      -> start (ScheduleRemoved)
2. the deadline (deferral start + maxDelay) has come              -> start, with an Event (DeadlineReached)
3. the figure is no live reading (static table, a fixed override) -> start: an annual average has no hour
   that is cleaner than another, so it never defers, and says so (StaticIntensity)
4. the live provider cannot be read (its figure is a fallback)    -> start, with a Warning: a job never
   waits on a provider that does not answer (ProviderUnavailable)
5. intensity now <= maxGramsPerKwh                                -> start (GridClean)
6. the forecast names a start before the deadline whose intensity (averaged over `window` when set) is at
   or below the threshold, or else lower than now: wait until then (ForecastCleaner)
7. a forecast with nothing better than now before the deadline    -> start (NoCleanerForecast)
8. no forecast (the provider has none, or it failed)              -> wait, re-reading the intensity, until
   the deadline at most (AboveThreshold)

Deciding afresh every round is what makes an edit while deferred re-decide, and what makes a restart
safe: the only memory is the deferral's start time, kept in status.schedule.deferredSince.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from carbontrack.api.crd import PauseAboveSpec, ScheduleSpec, ScheduleStatus, duration_s


@dataclass(frozen=True)
class ForecastPoint:
    """One hour (or interval) of a provider's forecast: its start and the intensity expected."""

    at: dt.datetime
    g_per_kwh: float


@dataclass(frozen=True)
class Grid:
    """What the handler read for the job's zone this round."""

    g_per_kwh: float
    source: str
    live: bool
    """A live provider's reading (False: the static table or a fixed override)."""
    reachable: bool = True
    """False: the live provider failed and g_per_kwh is the fallback."""
    forecast: tuple[ForecastPoint, ...] | None = None
    """None: the provider has no forecast, or it could not be read."""
    zone: str = ""


@dataclass(frozen=True)
class Verdict:
    """This round's answer: start now or wait, why (for the Deferred condition), and until when."""

    start: bool
    reason: str
    """CamelCase, for the Deferred condition."""
    message: str
    deadline: dt.datetime | None = None
    start_after: dt.datetime | None = None
    """The forecast's cleaner start, when waiting for one."""
    warning: bool = False
    event: bool = False
    """Post an Event (the start at the deadline, and every warning)."""

    @property
    def summary(self) -> str:
        """For `kubectl get`: why it waits and until when at most."""
        if self.start:
            return self.reason
        until = self.start_after or self.deadline
        stamp = _stamp(until) if until else "?"
        return f"{self.reason} until {stamp}" if self.start_after else f"{self.reason}, at most until {stamp}"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _window_average(points: tuple[ForecastPoint, ...], start: int, window_s: float | None) -> float:
    """Mean intensity of the points from index `start` covering `window_s` (the point alone without one)."""
    if not window_s:
        return points[start].g_per_kwh
    end = points[start].at + dt.timedelta(seconds=window_s)
    covered = [p.g_per_kwh for p in points[start:] if p.at < end]
    return sum(covered) / len(covered)


def best_start(
    points: tuple[ForecastPoint, ...],
    now: dt.datetime,
    deadline: dt.datetime,
    threshold: float,
    window_s: float | None,
) -> tuple[dt.datetime, float] | None:
    """The first start in [now, deadline] at or below the threshold, else the cleanest one; None: empty."""
    ordered = tuple(sorted(points, key=lambda p: p.at))
    candidates = [
        (p.at, _window_average(ordered, i, window_s))
        for i, p in enumerate(ordered)
        if now - dt.timedelta(minutes=59) <= p.at <= deadline  # the hour in progress counts as now
    ]
    if not candidates:
        return None
    clean = [c for c in candidates if c[1] <= threshold]
    return clean[0] if clean else min(candidates, key=lambda c: (c[1], c[0]))


def decide(
    schedule: ScheduleSpec | None, now: dt.datetime, since: dt.datetime, grid: Grid, suspended: bool = False
) -> Verdict:
    """Start now, or wait (and until when at most); the rules are in the module docstring."""
    if schedule is None:
        return Verdict(True, "ScheduleRemoved", "spec.carbon.schedule was removed: starting now")
    threshold = schedule.max_grams_per_kwh
    deadline = since + dt.timedelta(seconds=duration_s(schedule.max_delay))
    now_text = f"{grid.g_per_kwh:g} gCO2e/kWh ({grid.source})"
    if now >= deadline:
        message = f"waited the maximum delay {schedule.max_delay}: starting at {now_text}"
        if grid.g_per_kwh > threshold:
            message += f", above the {threshold:g} g/kWh asked for"
        return Verdict(True, "DeadlineReached", message, deadline, event=True)
    if suspended:
        return Verdict(False, "Suspended", "spec.suspend is true: not started", deadline)
    if not grid.live:
        message = (
            f"the intensity is a fixed figure ({now_text}), not a live reading: no hour is cleaner than "
            "another, so the schedule never defers; use a live provider (electricitymaps or watttime) for it"
        )
        return Verdict(True, "StaticIntensity", message, deadline, warning=True, event=True)
    if not grid.reachable:
        message = (
            f"the intensity provider cannot be read (using {now_text}): starting rather than waiting blind"
        )
        return Verdict(True, "ProviderUnavailable", message, deadline, warning=True, event=True)
    if grid.g_per_kwh <= threshold:
        return Verdict(True, "GridClean", f"grid intensity {now_text} <= {threshold:g}: starting", deadline)
    above = f"grid intensity {now_text} > {threshold:g}"
    if grid.forecast is not None:
        return _by_forecast(schedule, grid, grid.forecast, now, deadline, above)
    message = f"{above} and no forecast: waiting, re-reading it, until {_stamp(deadline)} at the latest"
    return Verdict(False, "AboveThreshold", message, deadline)


def _by_forecast(
    schedule: ScheduleSpec,
    grid: Grid,
    forecast: tuple[ForecastPoint, ...],
    now: dt.datetime,
    deadline: dt.datetime,
    above: str,
) -> Verdict:
    """The grid is above the threshold now: wait for the forecast's better start, or start if it has none."""
    window_s = duration_s(schedule.window) if schedule.window else None
    best = best_start(forecast, now, deadline, schedule.max_grams_per_kwh, window_s)
    if best is not None and best[0] > now and best[1] < grid.g_per_kwh:
        at, value = best
        message = (
            f"{above}; the forecast names {value:g} g/kWh at {_stamp(at)}: waiting for it "
            f"(starting at {_stamp(deadline)} at the latest)"
        )
        return Verdict(False, "ForecastCleaner", message, deadline, start_after=at)
    message = f"{above}, and the forecast names nothing cleaner before {_stamp(deadline)}: starting now"
    return Verdict(True, "NoCleanerForecast", message, deadline)


def avoided_g(energy_j: float, pue: float, planned_g_per_kwh: float, actual_g_per_kwh: float) -> float:
    """Estimated emissions avoided: the measured energy at the intensity of the planned start minus at the
    intensity of the actual start (negative when the wait made it worse). An estimate: the grid changes
    while the job runs, and the job's real emissions use the intensity in force for each interval."""
    return energy_j * pue * (planned_g_per_kwh - actual_g_per_kwh) / 3_600_000.0


def schedule_status(
    before: ScheduleStatus | None, verdict: Verdict, grid: Grid, now: dt.datetime, since: dt.datetime
) -> ScheduleStatus:
    """status.schedule after this round: the planned start's intensity is the first one read."""
    planned = before.planned_grams_per_kwh if before and before.planned_grams_per_kwh is not None else None
    out = ScheduleStatus(
        deferred_since=since,
        deadline=verdict.deadline,
        start_after=verdict.start_after,
        reason=verdict.reason,
        message=verdict.message[:1024],
        summary=verdict.summary[:128],
        planned_grams_per_kwh=grid.g_per_kwh if planned is None else planned,
        deferred_seconds=max((now - since).total_seconds(), 0.0),
    )
    if verdict.start:
        out.started_at = now
        out.start_grams_per_kwh = grid.g_per_kwh
        out.emissions_avoided_grams_estimate = 0.0
    return out


def with_savings(schedule: ScheduleStatus | None, energy_j: float, pue: float) -> ScheduleStatus | None:
    """The avoided-emissions estimate for the energy measured so far (None before the job started)."""
    if schedule is None or schedule.started_at is None:
        return None
    planned, actual = schedule.planned_grams_per_kwh, schedule.start_grams_per_kwh
    if planned is None or actual is None:
        return None
    estimate = round(avoided_g(energy_j, pue, planned, actual), 3)
    return schedule.model_copy(update={"emissions_avoided_grams_estimate": estimate})


# --- pauses while Running (spec.carbon.schedule.pauseAbove) ---------------------------------------------


@dataclass(frozen=True)
class DirtyGrid:
    """Whether a Running job pauses for the grid this round, and since when the grid has been too dirty."""

    above_since: dt.datetime | None
    """Since when the intensity has been above the limit (None: it is not)."""
    pause: bool
    message: str = ""


def dirty_check(
    pause: PauseAboveSpec | None,
    now: dt.datetime,
    g_per_kwh: float,
    live: bool,
    above_since: dt.datetime | None,
    pauses: int,
) -> DirtyGrid:
    """Whether a Running job pauses now: the live intensity has stayed above `pause.gramsPerKwh` for
    `pause.after`, and fewer than `maxPauses` pauses were taken. A fixed figure never pauses."""
    if pause is None or not live or g_per_kwh <= pause.grams_per_kwh:
        return DirtyGrid(None, False)
    since = above_since or now
    if pauses >= pause.max_pauses or now - since < dt.timedelta(seconds=duration_s(pause.after)):
        return DirtyGrid(since, False)
    message = (
        f"grid intensity {g_per_kwh:g} gCO2e/kWh above {pause.grams_per_kwh:g} since {_stamp(since)}: "
        f"pausing (pause {pauses + 1} of at most {pause.max_pauses}) until it is at or below it again"
    )
    return DirtyGrid(since, True, message)


def resume_schedule(schedule: ScheduleSpec | None) -> ScheduleSpec | None:
    """A paused job resumes by the deferral's rules, with the pause limit as the threshold (and the same
    maxDelay as the longest pause). None: pauses are off now, resume at once."""
    if schedule is None or schedule.pause_above is None:
        return None
    return schedule.model_copy(update={"max_grams_per_kwh": schedule.pause_above.grams_per_kwh})


def paused_status(before: ScheduleStatus, dirty: DirtyGrid, now: dt.datetime, phase: str) -> ScheduleStatus:
    """status.schedule as a pause starts: counted, with the phase it interrupted and when."""
    return before.model_copy(
        update={
            "reason": "DirtyGrid",
            "message": dirty.message[:1024],
            "summary": "DirtyGrid: paused",
            "above_since": None,
            "pauses": before.pauses + 1,
            "paused_from": phase,
            "paused_at": now,
            "start_after": None,
        }
    )


def resumed_status(before: ScheduleStatus, verdict: Verdict, now: dt.datetime) -> ScheduleStatus:
    """After a round of a pause: still paused (why, until when), or resumed (the pause's time added)."""
    update: dict[str, object] = {
        "reason": verdict.reason,
        "message": verdict.message[:1024],
        "summary": verdict.summary[:128],
        "start_after": verdict.start_after,
    }
    if verdict.start:
        paused = (now - before.paused_at).total_seconds() if before.paused_at else 0.0
        update.update(
            paused_from=None, paused_at=None, paused_seconds=before.paused_seconds + max(paused, 0.0)
        )
    return before.model_copy(update=update)
