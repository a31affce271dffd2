"""kopf handlers: glue only. Each one gathers what it needs, calls a pure decision, and applies it.

- reconcile (create/update/resume): the Job as `jobbuilder.build_job` says, created or re-scaled;
  a spec or template that cannot run makes the phase `Invalid`, with the reason in a condition.
- promote (a timer per job): gather (status, the live aggregate, test evidence, epsilon computed off
  the event loop) -> `core.evaluation.evaluate` -> apply (Job scale, status, Events, gauges).
- job_event: the Job's own end makes the phase Succeeded or Failed.
Telemetry does not pass through kopf: it arrives on the operator's HTTP server and the registry's
writer patches its fields of status (see controller.status for who writes what).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from dataclasses import replace
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from carbontrack.api.contract import (
    APPROVE_ANNOTATION,
    LABEL_JOB,
    LABEL_MANAGED,
    REJECT_ANNOTATION,
    RESUME_ANNOTATION,
    WORLD_SIZE_ANNOTATION,
    Phase,
    job_name_for,
)
from carbontrack.api.crd import (
    GROUP,
    PLURAL,
    VERSION,
    CarbonTrackedJobSpec,
    CarbonTrackedJobStatus,
    MetricHistory,
    ScheduleStatus,
    TestsEvidence,
)  # fmt: skip
from carbontrack.controller.tls import start_tls
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.events import ConditionUpdate
from carbontrack.core.gates import metric_gates as analysis
from carbontrack.core.gates.evidence import tests_from
from carbontrack.core.gates.judgement import CiResults
from carbontrack.core.rollout import halting
from carbontrack.core.rollout.approvals import person_decision
from carbontrack.core.rollout.evaluation import (
    Inputs,
    JobScale,
    Plan,
    epsilon_query,
    evaluate,
    job_outcome,
    suspended,
)  # fmt: skip
from carbontrack.core.scheduling import kueue as kueue_policy
from carbontrack.core.scheduling.deferral import (
    DirtyGrid,
    decide,
    dirty_check,
    paused_status,
    resume_schedule,
    resumed_status,
    schedule_status,
)
from carbontrack.ha.leadership import PeeringMonitor
from carbontrack.ha.peering import PeeringArgs
from carbontrack.integrations import prometheus
from carbontrack.integrations.kueue import client as kueue
from carbontrack.state import metrics
from carbontrack.state import status as st
from carbontrack.state.config import OperatorConfig
from carbontrack.state.kube_writes import write
from carbontrack.state.registry import Registry, merge_patch_status
from carbontrack.telemetry import gc_tuning as heap
from carbontrack.telemetry.server import TelemetryServer
from carbontrack.workload.jobbuilder import InjectionError, build_job, build_service
from carbontrack.workload.service import ServiceConflict, ensure_service

log = logging.getLogger("carbontrack.operator")


def _api_message(exc: ApiException) -> str:
    """The apiserver's own words (its Status message names the field), else the HTTP reason."""
    try:
        return str(json.loads(exc.body)["message"])[:1000]
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"


def retry_after(exc: ApiException, default: float = 1.0) -> float:
    """The apiserver's Retry-After (seconds, 1 when it sheds load), bounded; `default` without one."""
    headers: Any = exc.headers or {}
    try:
        return min(max(float(headers.get("Retry-After", default)), 0.1), 30.0)
    except (TypeError, ValueError):
        return default


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="carbontrack.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="carbontrack.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    cfg: OperatorConfig = memo.cfg  # set by `register`'s caller, the CLI
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    api = client.ApiClient()
    # kubernetes_asyncio builds its aiohttp session with trust_env=True, so every request hops to a
    # thread to look for a ~/.netrc (measured: the largest cost after kopf's own under 1000 jobs).
    # kopf's own client does not trust the environment either; in-cluster, nothing there applies.
    api.rest_client.pool_manager._trust_env = False
    memo.api = api
    memo.registry = Registry(api, cfg)
    memo.batch_jobs = set()  # (namespace, CR name) of the Jobs the watch has seen (job_event)
    metrics.jobs.jobs = lambda: memo.registry.jobs.values()
    memo.server = TelemetryServer.from_config(memo.registry, api, cfg)
    peer: PeeringArgs | None = memo.get("peering")
    memo.monitor = None
    if peer is not None:
        settings.peering.lifetime = cfg.peering_lifetime_s
        memo.server.active = False  # a standby until the peering object says otherwise

        async def switch(active: bool) -> None:
            memo.server.active = active
            if not active:
                await memo.registry.release()

        memo.monitor = PeeringMonitor(
            api, peer.name, peer.namespaces, peer.identity, peer.priority, switch, cfg.peering_poll_s
        )
        memo.monitor.start()
    # TLS for telemetry (controller.tls_handlers): None only with the plain-HTTP opt-out
    memo.tls = await start_tls(api, cfg)
    await memo.server.start("0.0.0.0", cfg.telemetry_port, memo.tls.context if memo.tls else None)
    # everything allocated so far lives as long as the process: frozen out of the collector's sight, and
    # the first generation's threshold raised (controller.heap)
    heap.settle()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.monitor is not None:
        await memo.monitor.stop()
    await memo.server.stop()
    await memo.registry.close()
    await memo.api.close()


def _invalid(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, reason: str, message: str, generation: Any
) -> kopf.PermanentError:
    """Phase Invalid with the reason, a Warning Event; the error for kopf (an edit retries)."""
    ready = ConditionUpdate("Ready", False, reason, message)
    patch.status.update(st.phase_update(status, Phase.INVALID, ready, generation))
    kopf.warn(body, reason=reason, message=message)
    return kopf.PermanentError(message)


async def _create_or_scale(
    api: client.ApiClient, job: dict[str, Any], replicas: int, suspend: bool | None
) -> tuple[bool, ApiException | None]:
    """(created, the apiserver's refusal if any). A Job that exists gets the scale and suspend
    (None: a Job Kueue queues, whose suspend is Kueue's alone)."""
    batch_api = client.BatchV1Api(api)
    try:
        await write(batch_api.create_namespaced_job, job["metadata"]["namespace"], job)
        return True, None
    except ApiException as exc:
        if exc.status == 429:  # the apiserver sheds load: retry when it says, without adding to it
            raise kopf.TemporaryError("the apiserver is busy (429)", delay=retry_after(exc)) from exc
        if exc.status != 409:
            return False, exc
    scale: dict[str, Any] = {"parallelism": replicas, "completions": replicas}
    if suspend is not None:
        scale["suspend"] = suspend
    await write(
        batch_api.patch_namespaced_job, job["metadata"]["name"], job["metadata"]["namespace"], {"spec": scale}
    )
    return False, None


async def _kueue_active(api: client.ApiClient, namespace: str, name: str, suspend: bool) -> None:
    """A queued job halts and resumes through its Workload's spec.active (see controller.kueue)."""
    if not await kueue.set_active(api, namespace, job_name_for(name), not suspend) and suspend:
        raise kopf.TemporaryError("waiting for Kueue to create the Job's Workload", delay=2)


def _queueing(meta: kopf.Meta, cfg: OperatorConfig) -> kueue_policy.Queueing | None:
    return kueue_policy.queueing(meta.get("labels"), meta.get("annotations"), cfg.kueue_elastic_jobs)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
    meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, **_: Any,
) -> None:  # fmt: skip
    generation = meta.get("generation")
    try:
        parsed = CarbonTrackedJobSpec.model_validate(dict(spec))
    except ValidationError as exc:
        message = f"the spec cannot be used: {exc.errors(include_url=False)[0]['msg']}"
        raise _invalid(body, status, patch, "SpecInvalid", message, generation) from exc
    phase = status.get("phase")
    if phase in (Phase.SUCCEEDED, Phase.FAILED):
        return
    queued = _queueing(meta, memo.cfg)
    parsed = kueue_policy.effective_spec(parsed, queued)  # without elastic Jobs: full size from the start
    replicas = int(status.get("replicas") or parsed.canary.replicas)
    # only the judgement lifts a gate's halt, and only it stops running workers (after their checkpoint);
    # a carbon-aware start: the Job is created suspended, and only the judgement's deferral starts it
    halt = st.parse(status).halt
    deferring = parsed.carbon.schedule is not None and phase in (None, Phase.INVALID)
    suspend = (
        (parsed.suspend and phase in (None, Phase.INVALID))
        or deferring
        or halting.workers_stopped(suspended(parsed, phase), halt)
    )
    try:
        job = build_job(name, namespace, uid, parsed, replicas, memo.cfg)
        job["spec"]["suspend"] = suspend
        if queued is not None:  # Kueue's webhook suspends it; carbontrack never writes its suspend
            del job["spec"]["suspend"]
            labels, annotations = kueue_policy.job_metadata(meta.get("labels"), meta.get("annotations"))
            job["metadata"]["labels"].update(labels)
            job["metadata"].setdefault("annotations", {}).update(annotations)
    except InjectionError as exc:
        raise _invalid(body, status, patch, "InjectionRefused", str(exc), generation) from exc
    if parsed.distributed.enabled:  # the workers' DNS names (issue 16); before the pods that need them
        try:
            await ensure_service(memo.api, build_service(name, namespace, uid), uid)
        except ServiceConflict as exc:
            raise _invalid(body, status, patch, "ServiceConflict", str(exc), generation) from exc
        except ApiException as exc:
            raise kopf.TemporaryError(f"the headless Service: {_api_message(exc)}", delay=5) from exc
    created, refused = await _create_or_scale(memo.api, job, replicas, None if queued else suspend)
    if refused is not None:
        message = f"the apiserver refused the Job: {_api_message(refused)}"
        if refused.status in (400, 422):  # the template is invalid: retrying cannot help
            raise _invalid(body, status, patch, "JobRejected", message, generation) from refused
        patch.status.update(
            st.ready_update(status, ConditionUpdate("Ready", False, "JobCreateFailed", message), generation)
        )
        kopf.warn(body, reason="JobCreateFailed", message=message)
        raise kopf.TemporaryError(message, delay=5) from refused
    if queued is not None:
        await _kueue_active(memo.api, namespace, name, suspend)
    if created:
        kopf.info(
            body, reason="JobCreated", message=f"Indexed Job {job_name_for(name)} with {replicas} workers"
        )
    ready = ConditionUpdate("Ready", True, "JobRunning", f"{replicas} of {parsed.replicas} workers")
    if phase in (None, Phase.INVALID):  # the Job exists now: the judgement takes it from Pending
        first = Phase.DEFERRED if deferring else Phase.PENDING
        if deferring:
            ready = ConditionUpdate(
                "Ready", False, "Deferred", "waiting for a clean grid (spec.carbon.schedule)"
            )
        patch.status.update(st.phase_update(status, first, ready, generation))
        kopf.info(body, reason="PhaseChanged", message=f"phase {phase or 'none'} -> {first}")
    elif phase not in (Phase.HALTED, Phase.PAUSED, Phase.DEFERRED):  # the judgement lifts these
        patch.status.update(st.ready_update(status, ready, generation))
    memo.registry.update_spec(namespace, name, parsed)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def deleted(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.registry.forget(namespace, name)  # the Job goes by garbage collection (owner reference)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED: "true"})
async def job_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    outcome = job_outcome((body.get("status") or {}).get("conditions"))
    name = (body["metadata"].get("labels") or {}).get(LABEL_JOB)
    if name and (created := memo.get("batch_jobs")) is not None:
        key = (body["metadata"]["namespace"], name)
        if type == "DELETED":
            created.discard(key)
        else:
            created.add(key)
    if type == "DELETED" or outcome is None or not name:
        return
    namespace, (phase, message) = body["metadata"]["namespace"], outcome
    custom = client.CustomObjectsApi(memo.api)
    try:
        ctj = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException:
        return
    current = ctj.get("status") or {}
    if current.get("phase") == phase:
        return
    done = ConditionUpdate("Ready", False, phase.value, message)
    update = st.phase_update(current, phase, done, ctj["metadata"].get("generation"))
    await merge_patch_status(custom, namespace, name, {"status": update})
    kopf.info(ctj, reason="PhaseChanged", message=f"phase {current.get('phase')} -> {phase}: {message}")
    state = memo.registry.jobs.get((namespace, name))
    if state is not None:
        state.gauges = st.with_phase(state.gauges, phase)


async def _tests_evidence(
    memo: kopf.Memo, namespace: str, spec: CarbonTrackedJobSpec, last: TestsEvidence | None
) -> tuple[CiResults | None, TestsEvidence | None]:
    """The spec's test evidence, overlaid with the ConfigMap CI writes. When the apiserver cannot
    give the ConfigMap now, the evidence the last judgement used stands: a restart or a busy
    apiserver changes no verdict. A ConfigMap that is gone (404) is not evidence any more."""
    t = spec.gates.tests
    if t is None:
        return None, None
    doc: dict[str, Any] = {"passRate": t.pass_rate, "coverage": t.coverage}
    if t.security is not None:
        doc["security"] = t.security.model_dump()
    source = "spec"
    if t.from_config_map:
        source = f"configmap/{t.from_config_map}"
        try:
            cm = await client.CoreV1Api(memo.api).read_namespaced_config_map(t.from_config_map, namespace)
            written = json.loads((cm.data or {}).get("results.json", "{}"))
            doc.update({k: v for k, v in written.items() if v is not None})
        except (ApiException, ValueError) as exc:
            log.warning("test results ConfigMap unreadable: %s", exc, extra={"configMap": t.from_config_map})
            if last is not None and last.source == source and getattr(exc, "status", 0) != 404:
                return st.tests_results(last), last
    results = tests_from(doc)
    return results, st.tests_evidence(results, source)


async def _measure(
    spec: CarbonTrackedJobSpec, stored: CarbonTrackedJobStatus, global_step: int, now: dt.datetime
) -> tuple[MetricHistory, ...]:
    """One measurement of each metric gate that is due (canary and promotion stages only)."""
    state = st.promotion_state(stored)
    histories = analysis.by_name(stored.measurements)
    out = []
    for gate in spec.gates.metrics:
        h = analysis.current(histories.get(gate.name), gate.name, state.stage, state.stage_start_step)
        if state.phase in (Phase.CANARY, Phase.PROMOTING) and analysis.due(gate, h, global_step):
            try:
                h = analysis.record(gate, h, global_step, now, value=await prometheus.query(gate.prometheus))
            except analysis.MeasurementError as exc:
                h = analysis.record(gate, h, global_step, now, error=str(exc))
        out.append(h)
    return tuple(out)


async def _gather(
    memo: kopf.Memo,
    namespace: str,
    name: str,
    spec: CarbonTrackedJobSpec,
    status: kopf.Status,
    generation: int,
    meta: kopf.Meta,
) -> Inputs:
    stored = st.parse(status)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    person = person_decision(meta.get("annotations"), meta.get("managedFields"), now)
    job_state = await memo.registry.get(namespace, name)
    agg = job_state.aggregate if job_state else JobAggregate()
    measured = await _measure(spec, stored, agg.global_step, now) if spec.gates.metrics else ()
    tests, evidence = await _tests_evidence(memo, namespace, spec, stored.tests_evidence)
    query = epsilon_query(spec, agg)
    epsilons = await asyncio.to_thread(query.compute) if query else None  # PLD: up to a second
    intensity = job_state.intensity if job_state else None
    # a zone left to the node's region is resolved by the first batch: not judged before it
    pending = not spec.carbon.zone and not agg.sources
    warned = any(c.type == "ZoneResolved" and c.status == "False" for c in stored.conditions)
    refusing = any(c.type == "TelemetryAccepted" and c.status == "False" for c in stored.conditions)
    unreadable = any(c.type == "IntensityResolved" and c.status == "False" for c in stored.conditions)
    return Inputs(
        spec=spec, generation=generation, state=st.promotion_state(stored), replicas=status.get("replicas"),
        aggregate=agg, intensity_g_per_kwh=intensity.g_per_kwh if intensity else 0.0,
        tests=tests, tests_evidence=evidence, epsilons=epsilons,
        zone=intensity.zone if intensity else "",
        zone_known=pending or intensity is None or intensity.known_zone, zone_warned=warned, person=person,
        telemetry_warned=refusing, intensity_warned=unreadable,
        intensity_problem=memo.registry.intensity.problem(namespace, spec),
        metrics=measured, now=now, halt=stored.halt, checkpoint=st.checkpoint_status(agg),
        schedule=stored.schedule, shown_energy_j=stored.energy_joules,
    )  # fmt: skip


async def _apply(
    body: kopf.Body, memo: kopf.Memo, name: str, namespace: str, status: kopf.Status, patch: kopf.Patch,
    spec: CarbonTrackedJobSpec, plan: Plan, queued: kueue_policy.Queueing | None = None,
) -> None:  # fmt: skip
    if plan.scale is not None:
        workload = queued if plan.workers_moved else None  # a resize alone leaves the Workload be
        await _scale(memo, name, namespace, plan.scale, workload, queued is not None)
    patch.status.update(st.plan_update(status, spec, plan, name))
    if state := memo.registry.jobs.get((namespace, name)):
        state.stop = halting.stop_requested(plan.halt)  # answered to every sidecar from now on
    if plan.clear_decision:  # recorded in status (its hash): the annotation has done its work
        for key in (APPROVE_ANNOTATION, REJECT_ANNOTATION):
            if key in (body.metadata.annotations or {}):
                patch.metadata.annotations[key] = None
    for event in plan.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    before, after = status.get("phase"), plan.decision.state.phase
    if after != before:
        kopf.info(body, reason="PhaseChanged", message=f"phase {before} -> {after}")
    state = memo.registry.jobs.get((namespace, name))
    if state is not None:
        state.gauges = st.merge_gauges(state.gauges, plan.gauges)
        # a MIG or shared GPU, or a pod measuring nothing, is said once (per operator process)
        for event in state.aggregate.measurement_events(state.announced):
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)


async def _scale(
    memo: kopf.Memo, name: str, namespace: str, s: JobScale, workload: kueue_policy.Queueing | None,
    kueue_owns_suspend: bool,
) -> None:  # fmt: skip
    """Patch the Job's scale and suspend; a resume also writes the stage's world size and the checkpoint
    to start from on the pod template (its annotations may change while the Job is suspended). A job
    Kueue queues keeps its suspend for Kueue: it halts and resumes through its Workload's spec.active,
    moved only when `workload` is given (the workers stop or start this round)."""
    batch_api = client.BatchV1Api(memo.api)
    scale: dict[str, Any] = {"spec": {"parallelism": s.replicas, "completions": s.replicas}}
    if not kueue_owns_suspend:
        scale["spec"]["suspend"] = s.suspend
    if s.resume:
        ck = s.resume_from
        annotations = {
            WORLD_SIZE_ANNOTATION: str(s.replicas),
            RESUME_ANNOTATION: f"{ck.step} {ck.uri}" if ck else None,
            **kueue_policy.resume_template_annotations(workload),  # a stale slice name (Kueue v0.17)
        }
        resumed = {"spec": {**scale["spec"], "template": {"metadata": {"annotations": annotations}}}}
        try:
            await write(batch_api.patch_namespaced_job, job_name_for(name), namespace, resumed)
            scale = {}
            if workload is not None and workload.elastic:  # Kueue restores the template from the slice
                await kueue.set_slice_annotations(memo.api, namespace, job_name_for(name), annotations)
        except ApiException as exc:  # a Job the apiserver will not let change its template: resume anyway
            if exc.status != 422:
                raise kopf.TemporaryError(f"resuming the Job failed: {exc.reason}", delay=5) from exc
            log.warning("resume point not written to the pod template: %s", _api_message(exc))
    try:
        if scale:
            await write(batch_api.patch_namespaced_job, job_name_for(name), namespace, scale)
        if workload is not None:
            await _kueue_active(memo.api, namespace, name, s.suspend)
    except ApiException as exc:
        raise kopf.TemporaryError(f"scaling the Job failed: {exc.reason}", delay=5) from exc


async def _defer(
    body: kopf.Body, memo: kopf.Memo, name: str, namespace: str, status: kopf.Status, patch: kopf.Patch,
    spec: CarbonTrackedJobSpec, generation: int, queued: kueue_policy.Queueing | None,
) -> None:  # fmt: skip
    """One round of the carbon-aware start: read the grid, `core.deferral.decide`, and start the Job
    (phase Pending: the judgement takes it to Canary) or record why it waits and until when."""
    stored = st.parse(status)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    before = stored.schedule
    since = before.deferred_since if before and before.deferred_since else now
    job_state = memo.registry.jobs.get((namespace, name))
    known_zone = job_state.intensity.zone if job_state and job_state.aggregate.sources else None
    grid = await memo.registry.intensity.grid(namespace, spec, known_zone)
    if before is not None and before.paused_from:  # a dirty-grid pause: resume by the pause's limit
        verdict = decide(
            resume_schedule(spec.carbon.schedule), now, before.paused_at or now, grid, spec.suspend
        )
        schedule = resumed_status(before, verdict, now)
        resume_to = Phase(before.paused_from)
    else:
        verdict = decide(spec.carbon.schedule, now, since, grid, suspended=spec.suspend)
        schedule = schedule_status(before, verdict, grid, now, since)
        resume_to = Phase.PENDING
    try:
        if verdict.start and before is not None and before.paused_from:
            # back from a dirty-grid pause: from the newest checkpoint, as any resumed halt
            replicas = int(status.get("replicas") or spec.canary.replicas)
            resume = JobScale(replicas, False, resume=True, resume_from=stored.checkpoint)
            await _scale(memo, name, namespace, resume, queued, queued is not None)
        elif verdict.start or queued is not None:  # a queued job's Workload is made inactive once made
            await _hold(memo, name, namespace, not verdict.start, queued)
    except ApiException as exc:
        raise kopf.TemporaryError(f"starting the deferred Job failed: {exc.reason}", delay=5) from exc
    phase = resume_to if verdict.start else Phase.DEFERRED
    condition = ConditionUpdate("Deferred", not verdict.start, verdict.reason, verdict.message)
    patch.status.update(st.deferral_update(status, schedule, phase, condition, generation))
    if verdict.start and stored.halt is not None:  # the pause's halt is over: trainers may run again
        patch.status.update(st.halt_cleared())
        if job_state is not None:
            job_state.stop = False
    if verdict.start or (before is None or before.reason != verdict.reason):
        kind = "Warning" if verdict.warning else "Normal"
        reason = f"Start{verdict.reason}" if verdict.start else f"Deferred{verdict.reason}"
        kopf.event(body, type=kind, reason=reason, message=verdict.message)
    if verdict.start:
        kopf.info(body, reason="PhaseChanged", message=f"phase {Phase.DEFERRED} -> {phase}")
    state = memo.registry.jobs.get((namespace, name)) or await memo.registry.get(namespace, name)
    if state is not None:
        state.gauges = replace(
            state.gauges, phase=phase, deferred_s=schedule.deferred_seconds,
            emissions_avoided_g=schedule.emissions_avoided_grams_estimate,
        )  # fmt: skip


async def _hold(
    memo: kopf.Memo, name: str, namespace: str, hold: bool, queued: kueue_policy.Queueing | None
) -> None:
    """Hold the workers stopped (or let them run) for a carbon-aware start or pause: the Job's suspend,
    or, for a job Kueue queues, its Workload's spec.active (Kueue owns the Job's suspend)."""
    if queued is not None:
        await _kueue_active(memo.api, namespace, name, hold)
        return
    batch_api = client.BatchV1Api(memo.api)
    await write(batch_api.patch_namespaced_job, job_name_for(name), namespace, {"spec": {"suspend": hold}})


async def _dirty_grid(
    memo: kopf.Memo, name: str, namespace: str, status: kopf.Status, spec: CarbonTrackedJobSpec
) -> tuple[ScheduleStatus | None, DirtyGrid | None]:
    """spec.carbon.schedule.pauseAbove while Running: whether the live intensity stayed above the limit
    long enough to pause (`core.deferral.dirty_check`), and the schedule status to carry on with."""
    schedule = spec.carbon.schedule
    stored = st.parse(status)
    before = stored.schedule or ScheduleStatus()
    job_state = await memo.registry.get(namespace, name)
    if schedule is None or schedule.pause_above is None or job_state is None:
        return stored.schedule, None
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # the provider's reading now (its own cache), as the deferral reads it: the batch path refreshes the
    # job's figure only once a minute, and a pause that needs `after` of dirt should not wait on that
    zone = job_state.intensity.zone if job_state.aggregate.sources else None
    grid = await memo.registry.intensity.grid(namespace, spec, zone)
    live = grid.live and grid.reachable
    dirty = dirty_check(schedule.pause_above, now, grid.g_per_kwh, live, before.above_since, before.pauses)
    return before.model_copy(update={"above_since": dirty.above_since}), dirty


async def _paused_for_grid(
    body: kopf.Body, memo: kopf.Memo, name: str, namespace: str, status: kopf.Status, patch: kopf.Patch,
    carried: ScheduleStatus, dirty: DirtyGrid, generation: int,
) -> None:  # fmt: skip
    """The workers stopped after their checkpoint (or the grace period): the pause is recorded as phase
    Deferred, which resumes by the pause's limit (`_defer`)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    paused = paused_status(carried, dirty, now, Phase.RUNNING.value)
    condition = ConditionUpdate("Deferred", True, "DirtyGrid", dirty.message)
    patch.status.update(st.deferral_update(status, paused, Phase.DEFERRED, condition, generation))
    kopf.event(body, type="Normal", reason="PausedDirtyGrid", message=dirty.message)
    kopf.info(body, reason="PhaseChanged", message=f"phase {Phase.RUNNING} -> {Phase.DEFERRED}")
    job_state = memo.registry.jobs.get((namespace, name))
    if job_state is not None:
        job_state.gauges = replace(job_state.gauges, phase=Phase.DEFERRED)


async def promote(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, meta: kopf.Meta,
    patch: kopf.Patch, memo: kopf.Memo, **_: Any,
) -> None:  # fmt: skip
    """One judgement: gather -> evaluate -> apply. Finished jobs are only loaded, for their metrics.

    No phase yet is Pending: the reconcile's own status patch can be lost (kopf drops a patch that
    meets a 404 while a new CRD's storage initialises); the judgement cannot move past Pending
    before the Job exists, because applying its first decision scales the Job. So a job with no phase
    whose Job the watch has not shown yet is left for the next round: at 1000 jobs created at once the
    first round came before the reconcile for 538 of them, each a failed PATCH and a retry
    (benchmarks/scale.py --suspended)."""
    if status.get("phase") in (Phase.INVALID, Phase.SUCCEEDED, Phase.FAILED):
        await memo.registry.get(namespace, name)
        return
    created = memo.get("batch_jobs")
    if not status.get("phase") and created is not None and (namespace, name) not in created:
        return  # the reconcile has not created the Job yet (a busy apiserver): the next round judges
    try:
        parsed = CarbonTrackedJobSpec.model_validate(dict(spec))
    except ValidationError:
        return
    generation = int(meta.get("generation") or 0)
    queued = _queueing(meta, memo.cfg)
    parsed = kueue_policy.effective_spec(parsed, queued)
    # no phase yet with a schedule: the reconcile's Deferred may have been lost; never start past it
    if status.get("phase") == Phase.DEFERRED or (not status.get("phase") and parsed.carbon.schedule):
        await _defer(body, memo, name, namespace, status, patch, parsed, generation, queued)
        return
    inputs = await _gather(memo, namespace, name, parsed, status, generation, meta)
    dirty = None
    if status.get("phase") == Phase.RUNNING and parsed.carbon.schedule and parsed.carbon.schedule.pause_above:
        carried, dirty = await _dirty_grid(memo, name, namespace, status, parsed)
        inputs = dataclasses.replace(inputs, schedule=carried, grid_hold=dirty is not None and dirty.pause)
    plan = evaluate(inputs)
    if queued is not None:
        plan = dataclasses.replace(plan, conditions=(*plan.conditions, *await _kueue_conditions(
            memo, namespace, name, parsed, queued)))  # fmt: skip
    await _apply(body, memo, name, namespace, status, patch, parsed, plan, queued)
    stopped = plan.halt is not None and plan.halt.suspended_at is not None
    if inputs.grid_hold and stopped and dirty is not None and inputs.schedule is not None:
        # the trainers checkpointed (or ran out of grace) and the workers stopped: the pause begins
        await _paused_for_grid(body, memo, name, namespace, status, patch, inputs.schedule, dirty, generation)


async def _kueue_conditions(
    memo: kopf.Memo, namespace: str, name: str, spec: CarbonTrackedJobSpec, queued: kueue_policy.Queueing
) -> tuple[ConditionUpdate, ...]:
    """CanaryStages, and BudgetAdmission mirrored from the Workload (whose pending budget check this
    round answers too, so a missed Workload event delays an answer by one round at most)."""
    out = [c for c in (kueue_policy.canary_condition(spec, queued),) if c is not None]
    if memo.cfg.kueue_admission_check:
        try:
            admission = await kueue.judge_job(memo.api, memo.cfg, namespace, job_name_for(name))
        except ApiException as exc:
            log.warning("reading the Workload failed: %s", exc.reason, extra={"job": name})
            admission = None
        if admission is not None:
            out.append(admission)
    return tuple(out)


def register(cfg: OperatorConfig) -> None:
    """Declare the judgement timer at the configured interval (kopf needs it before the operator runs).

    backoff: a round that fails on a transient error (the apiserver hanging up under load) runs again
    after one interval, not kopf's default 60 s.
    """
    kopf.timer(
        GROUP, VERSION, PLURAL, interval=cfg.judge_interval_s, initial_delay=1.0, backoff=cfg.judge_interval_s
    )(promote)
    if cfg.kueue_admission_check:
        kueue.register()
