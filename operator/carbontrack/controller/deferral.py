"""The carbon-aware start and the dirty-grid pause: read the grid, ask core.scheduling.rounds, apply.

`defer` is the timer's step for a Deferred job (waiting for a clean grid, or paused by a dirty one).
While a job Runs with spec.carbon.schedule.pauseAbove, the judgement reads `dirty_grid` each round,
holds the workers through its checkpointing halt when the grid stayed dirty, and `record_pause` records
the pause once they have stopped.
"""

from __future__ import annotations

from dataclasses import replace

import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import CarbonTrackedJobStatus, ScheduleStatus
from carbontrack.controller import job_writes
from carbontrack.controller.context import JobCall
from carbontrack.controller.services import Services
from carbontrack.core.rollout.evaluation import JobScale
from carbontrack.core.scheduling.deferral import DirtyGrid, Grid
from carbontrack.core.scheduling.rounds import GridRound, Workers, deferral_round, dirty_round, pause_round
from carbontrack.state import status as st
from carbontrack.state.registry import JobState


async def defer(call: JobCall, services: Services) -> None:
    """One round of a Deferred job: start it (phase Pending: the judgement takes it to Canary), resume
    it after a pause, or record why it waits and until when."""
    stored = st.parse(call.status)
    now = services.clock()
    job_state = services.registry.jobs.get(call.key)
    grid = await _grid(call, services, job_state)
    schedule, queued = call.spec.carbon.schedule, call.queued is not None
    step = deferral_round(schedule, call.spec.suspend, stored.schedule, stored.halt, grid, now, queued)
    try:
        await _move_workers(call, services, step.workers, stored)
    except ApiException as exc:
        raise kopf.TemporaryError(f"starting the deferred Job failed: {exc.reason}", delay=5) from exc
    _record(call, step)
    if step.clear_halt:
        call.patch.status.update(st.halt_cleared())
        if job_state is not None:
            job_state.stop = False
    call.post(step.events)
    state = services.registry.jobs.get(call.key) or await services.registry.get(*call.key)
    if state is not None:
        state.gauges = replace(
            state.gauges,
            phase=step.phase,
            deferred_s=step.schedule.deferred_seconds,
            emissions_avoided_g=step.schedule.emissions_avoided_grams_estimate,
        )


async def dirty_grid(call: JobCall, services: Services) -> tuple[ScheduleStatus | None, DirtyGrid | None]:
    """spec.carbon.schedule.pauseAbove while Running: whether the live intensity stayed above the limit
    long enough to pause, and the schedule status to carry on with (None: nothing to watch)."""
    schedule = call.spec.carbon.schedule
    stored = st.parse(call.status)
    job_state = await services.registry.get(*call.key)
    if schedule is None or schedule.pause_above is None or job_state is None:
        return stored.schedule, None
    now = services.clock()
    grid = await _grid(call, services, job_state)
    return dirty_round(schedule.pause_above, stored.schedule, grid, now)


def record_pause(call: JobCall, services: Services, carried: ScheduleStatus, dirty: DirtyGrid) -> None:
    """The workers stopped after their checkpoint (or the grace period): the pause is recorded as phase
    Deferred, which `defer` resumes by the pause's limit."""
    step = pause_round(carried, dirty, services.clock())
    _record(call, step)
    call.post(step.events)
    job_state = services.registry.jobs.get(call.key)
    if job_state is not None:
        job_state.gauges = replace(job_state.gauges, phase=step.phase)


async def _grid(call: JobCall, services: Services, job_state: JobState | None) -> Grid:
    """The provider's reading now (its own cache), in the zone the job's first batch resolved: the batch
    path refreshes the job's figure only once a minute, and a pause that needs `after` of dirt should not
    wait on that."""
    zone = job_state.intensity.zone if job_state and job_state.aggregate.sources else None
    return await services.registry.intensity.grid(call.namespace, call.spec, zone)


async def _move_workers(
    call: JobCall, services: Services, workers: Workers, stored: CarbonTrackedJobStatus
) -> None:
    """Apply what the round does to the workers (core.scheduling.rounds.Workers)."""
    if workers is Workers.RESUME:  # back from a dirty-grid pause: from the newest checkpoint
        replicas = int(stored.replicas or call.spec.canary.replicas)
        resume = JobScale(replicas, False, resume=True, resume_from=stored.checkpoint)
        await job_writes.scale(
            services.api, call.namespace, call.name, resume, call.queued, call.queued is not None
        )
    elif workers in (Workers.START, Workers.HOLD):
        held = workers is Workers.HOLD
        await job_writes.hold(services.api, call.namespace, call.name, held, call.queued)


def _record(call: JobCall, step: GridRound) -> None:
    """The round's schedule, phase and Deferred condition in status."""
    update = st.deferral_update(call.status, step.schedule, step.phase, step.condition, call.generation)
    call.patch.status.update(update)
