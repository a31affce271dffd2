"""The judgement timer: one round per job, the step `core.rollout.lifecycle.round_for` names.

A judgement is gather (controller.evidence) -> `core.rollout.evaluation.evaluate` -> apply: the Job's
scale, the status fields the judgement owns, the Events and the gauges. A Deferred job's round is the
carbon-aware start instead (controller.deferral); a settled job's state is only loaded, for its metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from carbontrack.api.contract import APPROVE_ANNOTATION, REJECT_ANNOTATION, Phase, job_name_for
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.controller import decisions, job_writes, round_guard
from carbontrack.controller.context import JobCall, queueing_of
from carbontrack.controller.deferral import defer, dirty_grid, record_pause
from carbontrack.controller.evidence import gather
from carbontrack.controller.job_watch import ended_patch
from carbontrack.controller.services import Services, services_of
from carbontrack.core.accounting.measurement import measurement_events
from carbontrack.core.events import ConditionUpdate
from carbontrack.core.rollout import halting
from carbontrack.core.rollout.evaluation import Plan, evaluate
from carbontrack.core.rollout.lifecycle import SETTLED, Round, phase_of, round_for
from carbontrack.core.scheduling import kueue as kueue_policy
from carbontrack.core.scheduling.rounds import pause_begins, watches_grid
from carbontrack.integrations.kueue import client as kueue
from carbontrack.state import status as st
from carbontrack.state.registry import JobState

log = logging.getLogger("carbontrack.operator")


async def promote(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    name: str,
    namespace: str,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """One round of the job's timer: its judgement, or its carbon-aware start; a round that fails is a
    condition and an Event, and the next round tries again (controller.round_guard)."""
    services = services_of(memo)
    phase = phase_of(status.get("phase"))
    ended = ended_patch(services.ended_jobs, (namespace, name), status, int(meta.get("generation") or 0))
    if ended is not None and phase not in SETTLED:
        patch.status.update(ended[0])
        message = f"phase {status.get('phase')} -> {ended[1]}: the training Job ended"
        kopf.info(body, reason="PhaseChanged", message=message)
        return
    usable = None if phase in SETTLED else _usable(spec)  # a settled job's spec is not read
    step = round_for(phase, (namespace, name) in services.seen_jobs, usable)
    if step is Round.LOAD:
        await services.registry.get(namespace, name)
    if usable is None or step in (Round.LOAD, Round.WAIT):
        return
    queued = queueing_of(meta, services.config)
    effective = kueue_policy.effective_spec(usable, queued)
    generation = int(meta.get("generation") or 0)
    call = JobCall(body, name, namespace, status, patch, effective, queued, generation)
    if step is Round.DEFER:
        await round_guard.guarded(defer(call, services), call, "DeferralFailed")
    else:
        await round_guard.guarded(judge(call, services, meta), call, "JudgementFailed")


async def judge(call: JobCall, services: Services, meta: kopf.Meta) -> None:
    """gather -> evaluate -> apply; with a dirty-grid watch, the workers held and the pause recorded."""
    inputs = await gather(call, services, meta)
    dirty = None
    if watches_grid(call.spec.carbon.schedule, inputs.state.phase):
        carried, dirty = await dirty_grid(call, services)
        inputs = dataclasses.replace(inputs, schedule=carried, grid_hold=dirty is not None and dirty.pause)
    plan = await decisions.logged(call, services, inputs, evaluate(inputs))  # acted on once logged
    if call.queued is not None:
        kueue_conditions = await _kueue_conditions(call, services, call.queued)
        plan = dataclasses.replace(plan, conditions=(*plan.conditions, *kueue_conditions))
    await _apply(call, services, plan)
    if dirty is not None and inputs.schedule is not None and pause_begins(inputs.grid_hold, plan.halt):
        record_pause(call, services, inputs.schedule, dirty)


async def _apply(call: JobCall, services: Services, plan: Plan) -> None:
    """The Job's scale, the judgement's status fields, the Events and the gauges."""
    if plan.scale is not None:
        workload = call.queued if plan.workers_moved else None  # a resize alone leaves the Workload be
        kueue_owns_suspend = call.queued is not None
        await job_writes.scale(
            services.api, call.namespace, call.name, plan.scale, workload, kueue_owns_suspend
        )
    call.patch.status.update(st.plan_update(call.status, call.spec, plan, call.name))
    if state := services.registry.jobs.get(call.key):
        state.stop = halting.stop_requested(plan.halt)  # answered to every sidecar from now on
    if plan.clear_decision:  # recorded in status (its hash): the annotation has done its work
        for key in (APPROVE_ANNOTATION, REJECT_ANNOTATION):
            if key in (call.body.metadata.annotations or {}):
                call.patch.metadata.annotations[key] = None
    call.post(plan.events)
    before, after = call.status.get("phase"), plan.decision.state.phase
    if after != before:
        kopf.info(call.body, reason="PhaseChanged", message=f"phase {before} -> {after}")
    state = services.registry.jobs.get(call.key)
    if state is not None:
        state.gauges = st.merge_gauges(state.gauges, plan.gauges)
        _hand_to_telemetry(state, plan)
        # a MIG or shared GPU, or a pod measuring nothing, is said once (per operator process)
        call.post(measurement_events(state.aggregate, state.announced))


def _hand_to_telemetry(state: JobState, plan: Plan) -> None:
    """What the telemetry side keeps from the judgement: the unmeasured pods (status.telemetry, written by
    the telemetry writer, its one writer) and, for a halt whose workers are stopped, when training ended
    (batches are then taken for the final-flush grace only)."""
    if plan.pod_coverage is not None and plan.pod_coverage.unmeasured != state.unmeasured:
        state.unmeasured = plan.pod_coverage.unmeasured
        if state.writer is not None:
            state.writer.mark()
    stopped = plan.halt.suspended_at if plan.halt is not None else None
    halted = plan.decision.state.phase is Phase.HALTED
    state.ended_at = stopped.timestamp() if halted and stopped is not None else None


async def _kueue_conditions(
    call: JobCall, services: Services, queued: kueue_policy.Queueing
) -> tuple[ConditionUpdate, ...]:
    """CanaryStages, and BudgetAdmission mirrored from the Workload (whose pending budget check this
    round answers too, so a missed Workload event delays an answer by one round at most)."""
    out = [c for c in (kueue_policy.canary_condition(call.spec, queued),) if c is not None]
    if services.config.kueue_admission_check:
        job = job_name_for(call.name)
        try:
            admission = await kueue.judge_job(
                services.api, services.config, call.namespace, job, services.clock()
            )
        except ApiException as exc:
            log.warning("reading the Workload failed: %s", exc.reason, extra={"job": call.name})
            admission = None
        if admission is not None:
            out.append(admission)
    return tuple(out)


def _usable(spec: kopf.Spec) -> CarbonTrackedJobSpec | None:
    """The spec, or None when it cannot be used (the reconcile makes the phase Invalid and says why)."""
    try:
        return CarbonTrackedJobSpec.model_validate(dict(spec))
    except ValidationError:
        return None
