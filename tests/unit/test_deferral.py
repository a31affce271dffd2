"""Carbon-aware start: when a deferred job starts, exactly; the forecast read in the provider's shape."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from carbontrack.api.crd import CarbonTrackedJobSpec, PauseAboveSpec, ScheduleSpec, ScheduleStatus, duration_s
from carbontrack.core.rollout.evaluation import evaluate
from carbontrack.core.scheduling.deferral import (
    ForecastPoint,
    Grid,
    avoided_g,
    best_start,
    decide,
    dirty_check,
    paused_status,
    resume_schedule,
    resumed_status,
    schedule_status,
    with_savings,
)
from carbontrack.intensity.providers import ElectricityMaps, IntensityResolver
from tests.cases.crs import valid_spec
from tests.cases.evaluation import canary_aggregate, inputs
from tests.cases.fake_electricitymaps import FakeElectricityMaps

T0 = dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)
SCHEDULE = ScheduleSpec(max_grams_per_kwh=200, max_delay="12h")


def hours(h: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=h)


def forecast(*values: float) -> tuple[ForecastPoint, ...]:
    return tuple(ForecastPoint(hours(i), v) for i, v in enumerate(values))


def live(now: float, points: tuple[ForecastPoint, ...] | None = None, reachable: bool = True) -> Grid:
    return Grid(now, "electricitymaps", live=True, reachable=reachable, forecast=points, zone="DE")


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400.0), ("90m", 5400.0), ("1h30m", 5400.0), ("45s", 45.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_a_duration_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_delay|maxDelay"):
        ScheduleSpec(max_delay="1 day")


@pytest.mark.parametrize(
    ("now_h", "grid", "schedule", "start", "reason", "start_after_h"),
    [
        (0, live(150), SCHEDULE, True, "GridClean", None),
        (0, live(200), SCHEDULE, True, "GridClean", None),  # at the threshold starts
        # the first clean hour, else the cleanest; nothing cleaner (or only after the deadline): start
        (0, live(450, forecast(450, 400, 180, 100)), SCHEDULE, False, "ForecastCleaner", 2),
        (0, live(450, forecast(450, 400, 300, 250)), SCHEDULE, False, "ForecastCleaner", 3),
        (0, live(450, forecast(450, 460, 470)), SCHEDULE, True, "NoCleanerForecast", None),
        (0, live(450, forecast(*([450] * 13), 50)), SCHEDULE, True, "NoCleanerForecast", None),
        (0, live(450), SCHEDULE, False, "AboveThreshold", None),
        (12, live(450, forecast(450, 100)), SCHEDULE, True, "DeadlineReached", None),
        (0, live(450, reachable=False), SCHEDULE, True, "ProviderUnavailable", None),
        (0, Grid(380.9, "static:ember-2023", live=False), SCHEDULE, True, "StaticIntensity", None),
        (0, Grid(500, "override", live=False), SCHEDULE, True, "StaticIntensity", None),
        (0, live(450), None, True, "ScheduleRemoved", None),
    ],
)  # fmt: skip
def test_decide(
    now_h: float,
    grid: Grid,
    schedule: ScheduleSpec | None,
    start: bool,
    reason: str,
    start_after_h: float | None,
) -> None:
    v = decide(schedule, hours(now_h), T0, grid)
    assert (v.start, v.reason) == (start, reason), v.message
    assert v.start_after == (None if start_after_h is None else hours(start_after_h))
    if schedule is not None:
        assert v.deadline == hours(12)


def test_warnings_and_events_for_what_a_person_must_know() -> None:
    static = decide(SCHEDULE, T0, T0, Grid(380.9, "static:ember-2023", live=False))
    assert (static.warning, static.event) == (True, True)
    assert "never defers" in static.message
    down = decide(SCHEDULE, T0, T0, live(450, reachable=False))
    assert (down.warning, down.event) == (True, True)
    deadline = decide(SCHEDULE, hours(12), T0, live(450))
    assert (deadline.warning, deadline.event) == (False, True)
    assert deadline.message == (
        "waited the maximum delay 12h: starting at 450 gCO2e/kWh (electricitymaps),"
        " above the 200 g/kWh asked for"
    )


def test_summary_says_why_and_until_when() -> None:
    waiting = decide(SCHEDULE, T0, T0, live(450, forecast(450, 400, 180)))
    assert waiting.summary == "ForecastCleaner until 2026-01-01T02:00Z"
    blind = decide(SCHEDULE, T0, T0, live(450))
    assert blind.summary == "AboveThreshold, at most until 2026-01-01T12:00Z"
    assert decide(SCHEDULE, T0, T0, live(100)).summary == "GridClean"


def test_an_edit_of_max_delay_redecides_from_the_same_start() -> None:
    """The deferral's start time is kept; a shorter maxDelay brings the deadline forward."""
    shorter = ScheduleSpec(max_grams_per_kwh=200, max_delay="2h")
    assert decide(SCHEDULE, hours(3), T0, live(450)).start is False
    v = decide(shorter, hours(3), T0, live(450))
    assert (v.start, v.reason, v.deadline) == (True, "DeadlineReached", hours(2))


def test_window_judges_a_start_by_its_mean_over_the_run() -> None:
    points = forecast(450, 100, 600, 600, 250, 250, 250)
    assert best_start(points, T0, hours(12), 200, None) == (hours(1), 100)
    # a 3-hour run starting at 1h averages (100+600+600)/3; starting at 4h, 250
    assert best_start(points, T0, hours(12), 200, 3 * 3600) == (hours(4), 250)


def test_status_keeps_the_planned_intensity_and_the_savings_estimate() -> None:
    waiting = schedule_status(None, decide(SCHEDULE, T0, T0, live(450)), live(450), T0, T0)
    assert (waiting.planned_grams_per_kwh, waiting.deferred_seconds, waiting.started_at) == (450, 0.0, None)
    started_v = decide(SCHEDULE, hours(2), T0, live(150))
    started = schedule_status(waiting, started_v, live(150), hours(2), T0)
    assert (started.planned_grams_per_kwh, started.start_grams_per_kwh) == (450, 150)
    assert (started.deferred_seconds, started.started_at) == (7200.0, hours(2))
    saved = with_savings(started, energy_j=36_000_000.0, pue=1.2)  # 10 kWh x 1.2 x 300 g/kWh
    assert saved is not None and saved.emissions_avoided_grams_estimate == 3600.0
    assert with_savings(waiting, 1e6, 1.2) is None
    assert avoided_g(3.6e6, 1.0, 100, 300) == -200.0  # waiting can cost: said, not hidden


def test_schedule_in_the_spec_defaults() -> None:
    raw = valid_spec()
    raw["carbon"]["schedule"] = {}
    spec = CarbonTrackedJobSpec.model_validate(raw)
    assert spec.carbon.schedule == ScheduleSpec(max_grams_per_kwh=200, max_delay="24h", window=None)


def test_electricitymaps_forecast_in_its_api_shape() -> None:
    fake = FakeElectricityMaps(forecast={"DE": [(hours(0), 450), (hours(1), 180.5)]}).start()

    async def main() -> tuple[ForecastPoint, ...] | None:
        r = IntensityResolver(ElectricityMaps("test-key", base_url=fake.url), ttl_s=60)
        try:
            return await r.forecast("DE")
        finally:
            await r.close()

    try:
        assert asyncio.run(main()) == (ForecastPoint(hours(0), 450.0), ForecastPoint(hours(1), 180.5))
        assert fake.calls == ["/v3/carbon-intensity/forecast"]
    finally:
        fake.stop()


def test_a_forecast_that_cannot_be_read_is_none_not_an_error() -> None:
    fake = FakeElectricityMaps(down={"DE"}).start()

    async def main() -> tuple[ForecastPoint, ...] | None:
        r = IntensityResolver(ElectricityMaps("test-key", base_url=fake.url), ttl_s=60)
        try:
            return await r.forecast("DE")
        finally:
            await r.close()

    try:
        assert asyncio.run(main()) is None
    finally:
        fake.stop()


PAUSE = PauseAboveSpec(grams_per_kwh=300, after="30m", max_pauses=2)


@pytest.mark.parametrize(
    ("g", "live", "above_h", "pauses", "now_h", "since_h", "pause"),
    [
        (250, True, None, 0, 1, None, False),  # clean: nothing to track
        (250, True, 0.5, 0, 1, None, False),  # clean again: the streak ends
        (350, True, None, 0, 1, 1, False),  # dirty: the streak starts now
        (350, True, 0.6, 0, 1, 0.6, False),  # dirty for 24 min < 30 min
        (350, True, 0.5, 0, 1, 0.5, True),  # dirty for 30 min: pause
        (350, True, 0.0, 2, 1, 0.0, False),  # two pauses taken: never a third
        (900, False, None, 0, 1, None, False),  # a fixed figure never pauses
    ],
)  # fmt: skip
def test_dirty_check(
    g: float, live: bool, above_h: float | None, pauses: int, now_h: float, since_h: float | None, pause: bool
) -> None:
    d = dirty_check(PAUSE, hours(now_h), g, live, None if above_h is None else hours(above_h), pauses)
    assert (d.above_since, d.pause) == (None if since_h is None else hours(since_h), pause)


def test_a_pause_resumes_by_the_pause_limit_and_counts_its_time() -> None:
    schedule = ScheduleSpec(max_grams_per_kwh=200, max_delay="6h", pause_above=PAUSE)
    running = ScheduleStatus(started_at=T0, planned_grams_per_kwh=450, start_grams_per_kwh=150)
    dirty = dirty_check(PAUSE, hours(2), 350, True, hours(1), 0)
    paused = paused_status(running, dirty, hours(2), "Running")
    assert (paused.pauses, paused.paused_from, paused.paused_at, paused.reason) == (
        1,
        "Running",
        hours(2),
        "DirtyGrid",
    )
    assert (paused.started_at, paused.start_grams_per_kwh) == (T0, 150)  # the original start is kept
    resume = resume_schedule(schedule)
    assert resume is not None and resume.max_grams_per_kwh == 300
    still = decide(resume, hours(3), hours(2), live(320))
    assert (still.start, still.deadline) == (False, hours(8))
    again = decide(resume, hours(3), hours(2), live(290))
    assert (again.start, again.reason) == (True, "GridClean")
    resumed = resumed_status(paused, again, hours(3))
    assert (resumed.paused_from, resumed.paused_at, resumed.paused_seconds, resumed.pauses) == (
        None,
        None,
        3600.0,
        1,
    )
    assert resume_schedule(ScheduleSpec()) is None  # pauses switched off by an edit: resume at once


def test_the_savings_estimate_uses_the_energy_status_shows_not_the_live_total() -> None:
    started = ScheduleStatus(planned_grams_per_kwh=450, start_grams_per_kwh=150, started_at=T0)
    agg = canary_aggregate()  # its live energy is ahead of what the telemetry writer last wrote
    plan = evaluate(inputs(agg, schedule=started, shown_energy_j=3_600_000.0))
    assert agg.energy_j != 3_600_000.0
    # 1 kWh x PUE x 300 g/kWh avoided, next to the 1 kWh status shows
    pue = CarbonTrackedJobSpec.model_validate(valid_spec()).carbon.pue
    assert plan.schedule is not None and plan.schedule.emissions_avoided_grams_estimate == round(300 * pue, 3)
