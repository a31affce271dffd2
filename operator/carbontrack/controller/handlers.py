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
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from carbontrack.api.contract import APPROVE_ANNOTATION, LABEL_JOB, LABEL_MANAGED, REJECT_ANNOTATION, Phase
from carbontrack.api.crd import (
    GROUP,
    PLURAL,
    VERSION,
    CarbonTrackedJobSpec,
    CarbonTrackedJobStatus,
    MetricHistory,
    TestsEvidence,
)  # fmt: skip
from carbontrack.controller import kueue, metrics, prometheus
from carbontrack.controller import status as st
from carbontrack.controller.auth import Authenticator
from carbontrack.controller.config import OperatorConfig
from carbontrack.controller.jobbuilder import InjectionError, build_job, job_name_for
from carbontrack.controller.leadership import PeeringMonitor
from carbontrack.controller.peering import PeeringArgs
from carbontrack.controller.registry import Registry, merge_patch_status
from carbontrack.controller.server import TelemetryServer
from carbontrack.controller.tls_handlers import start_tls
from carbontrack.core import analysis, kueue_policy
from carbontrack.core.aggregation import JobAggregate
from carbontrack.core.approvals import person_decision
from carbontrack.core.evaluation import (
    ConditionUpdate,
    Inputs,
    Plan,
    epsilon_query,
    evaluate,
    job_outcome,
    suspended,
)  # fmt: skip
from carbontrack.core.gates import TestResults
from carbontrack.core.test_evidence import tests_from

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
    metrics.jobs.jobs = lambda: memo.registry.jobs.values()
    memo.server = TelemetryServer(
        memo.registry, Authenticator(api, cfg.token_cache_s), cfg.max_body_bytes, cfg.client_timeout_s
    )
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
        await batch_api.create_namespaced_job(job["metadata"]["namespace"], job)
        return True, None
    except ApiException as exc:
        if exc.status == 429:  # the apiserver sheds load: retry when it says, without adding to it
            raise kopf.TemporaryError("the apiserver is busy (429)", delay=retry_after(exc)) from exc
        if exc.status != 409:
            return False, exc
    scale: dict[str, Any] = {"parallelism": replicas, "completions": replicas}
    if suspend is not None:
        scale["suspend"] = suspend
    await batch_api.patch_namespaced_job(
        job["metadata"]["name"], job["metadata"]["namespace"], {"spec": scale}
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
    suspend = parsed.suspend or suspended(parsed, phase)  # only the judgement lifts a gate's halt
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
        patch.status.update(st.phase_update(status, Phase.PENDING, ready, generation))
        kopf.info(body, reason="PhaseChanged", message=f"phase {phase or 'none'} -> {Phase.PENDING}")
    elif phase not in (Phase.HALTED, Phase.PAUSED):  # their condition names the gate; the judgement lifts it
        patch.status.update(st.ready_update(status, ready, generation))
    memo.registry.update_spec(namespace, name, parsed)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def deleted(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.registry.forget(namespace, name)  # the Job goes by garbage collection (owner reference)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED: "true"})
async def job_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    outcome = job_outcome((body.get("status") or {}).get("conditions"))
    name = (body["metadata"].get("labels") or {}).get(LABEL_JOB)
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
) -> tuple[TestResults | None, TestsEvidence | None]:
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
    return Inputs(
        spec=spec, generation=generation, state=st.promotion_state(stored), replicas=status.get("replicas"),
        aggregate=agg, intensity_g_per_kwh=intensity.g_per_kwh if intensity else 0.0,
        tests=tests, tests_evidence=evidence, epsilons=epsilons,
        zone=intensity.zone if intensity else "",
        zone_known=pending or intensity is None or intensity.known_zone, zone_warned=warned, person=person,
        metrics=measured,
    )  # fmt: skip


async def _apply(
    body: kopf.Body, memo: kopf.Memo, name: str, namespace: str, status: kopf.Status, patch: kopf.Patch,
    spec: CarbonTrackedJobSpec, plan: Plan, queued: kueue_policy.Queueing | None = None,
) -> None:  # fmt: skip
    if plan.scale is not None:
        s = plan.scale
        scale: dict[str, Any] = {"parallelism": s.replicas, "completions": s.replicas}
        if queued is None:
            scale["suspend"] = s.suspend
        try:
            await client.BatchV1Api(memo.api).patch_namespaced_job(
                job_name_for(name), namespace, {"spec": scale}
            )
            # only a halt or a resume moves the Workload: the first scale of a job must not reactivate
            # a Workload that Kueue deactivated on the budget check's rejection
            if queued is not None and s.suspend != suspended(spec, status.get("phase")):
                await _kueue_active(memo.api, namespace, name, s.suspend)
        except ApiException as exc:
            raise kopf.TemporaryError(f"scaling the Job failed: {exc.reason}", delay=5) from exc
    patch.status.update(st.plan_update(status, spec, plan, name))
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


async def promote(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, meta: kopf.Meta,
    patch: kopf.Patch, memo: kopf.Memo, **_: Any,
) -> None:  # fmt: skip
    """One judgement: gather -> evaluate -> apply. Finished jobs are only loaded, for their metrics.

    No phase yet is Pending: the reconcile's own status patch can be lost (kopf drops a patch that
    meets a 404 while a new CRD's storage initialises); the judgement cannot move past Pending
    before the Job exists, because applying its first decision scales the Job."""
    if status.get("phase") in (Phase.INVALID, Phase.SUCCEEDED, Phase.FAILED):
        await memo.registry.get(namespace, name)
        return
    try:
        parsed = CarbonTrackedJobSpec.model_validate(dict(spec))
    except ValidationError:
        return
    generation = int(meta.get("generation") or 0)
    queued = _queueing(meta, memo.cfg)
    parsed = kueue_policy.effective_spec(parsed, queued)
    inputs = await _gather(memo, namespace, name, parsed, status, generation, meta)
    plan = evaluate(inputs)
    if queued is not None:
        plan = dataclasses.replace(plan, conditions=(*plan.conditions, *await _kueue_conditions(
            memo, namespace, name, parsed, queued)))  # fmt: skip
    await _apply(body, memo, name, namespace, status, patch, parsed, plan, queued)


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
