"""The reconcile (create, spec update, resume): the Job as `core.rollout.lifecycle.plan_reconcile` says.

The Job is created or re-scaled, suspended or not; once it exists, a job with no phase yet gets its
first one. A spec or template that cannot run makes the phase `Invalid`, with the reason in the Ready
condition and a Warning Event. Deleting the CarbonTrackedJob forgets its state; the Job goes by
garbage collection (its owner reference).
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from carbontrack.api.contract import Phase, job_name_for
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.controller.context import JobCall, queueing_of
from carbontrack.controller.job_writes import api_message, create_or_scale, set_workload_active
from carbontrack.controller.services import Services, services_of
from carbontrack.core.events import ConditionUpdate
from carbontrack.core.rollout.lifecycle import ReconcilePlan, plan_reconcile
from carbontrack.core.scheduling import kueue as kueue_policy
from carbontrack.state import status as st
from carbontrack.state.config import OperatorConfig
from carbontrack.workload.jobbuilder import InjectionError, build_job, build_service
from carbontrack.workload.service import ServiceConflict, ensure_service


async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    name: str,
    namespace: str,
    uid: str,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Create or re-scale the Job, then record the first phase or the Ready condition."""
    services = services_of(memo)
    generation = meta.get("generation")
    try:
        parsed = CarbonTrackedJobSpec.model_validate(dict(spec))
    except ValidationError as exc:
        message = f"the spec cannot be used: {exc.errors(include_url=False)[0]['msg']}"
        raise _invalid(body, status, patch, "SpecInvalid", message, generation) from exc
    queued = queueing_of(meta, services.config)
    _require_kueue(body, status, patch, queued, services, generation)
    parsed = kueue_policy.effective_spec(parsed, queued)  # without elastic Jobs: full size from the start
    stored = st.parse(status)
    plan = plan_reconcile(parsed, stored.phase, stored.halt, stored.replicas)
    if plan is None:  # the job has finished
        return
    call = JobCall(body, name, namespace, status, patch, parsed, queued, generation)
    job = _job(call, uid, plan, meta, services.config)
    if parsed.distributed.enabled:  # the workers' DNS names, before the pods that need them
        await _headless_service(call, uid, services)
    await _write_job(call, services, job, plan)
    _record(call, plan)
    services.registry.update_spec(namespace, name, parsed)


async def deleted(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Forget the job's state; its Job goes by garbage collection (owner reference)."""
    await services_of(memo).registry.forget(namespace, name)


def _require_kueue(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    queued: kueue_policy.Queueing | None,
    services: Services,
    generation: Any,
) -> None:
    """A queue-labelled job runs only where Kueue's API is served: else Invalid, saying why
    (core.scheduling.kueue.kueue_missing); until the first check has answered, a retry."""
    served = services.cluster.facts.kueue_served if services.cluster is not None else None
    if queued is None or served:
        return
    if served is None:
        raise kopf.TemporaryError("cannot tell yet whether Kueue's API is served", delay=5)
    message = kueue_policy.kueue_missing(queued, served) or ""
    raise _invalid(body, status, patch, "KueueNotInstalled", message, generation)


def _job(
    call: JobCall, uid: str, plan: ReconcilePlan, meta: kopf.Meta, config: OperatorConfig
) -> dict[str, Any]:
    """The Job's manifest: suspended as planned, or, for a job Kueue queues, with Kueue's labels and no
    suspend (Kueue's webhook suspends it; carbontrack never writes its suspend)."""
    try:
        job = build_job(call.name, call.namespace, uid, call.spec, plan.replicas, config)
    except InjectionError as exc:
        raise _invalid(
            call.body, call.status, call.patch, "InjectionRefused", str(exc), call.generation
        ) from exc
    job["spec"]["suspend"] = plan.suspend
    if call.queued is not None:
        del job["spec"]["suspend"]
        labels, annotations = kueue_policy.job_metadata(meta.get("labels"), meta.get("annotations"))
        job["metadata"]["labels"].update(labels)
        job["metadata"].setdefault("annotations", {}).update(annotations)
    return job


async def _headless_service(call: JobCall, uid: str, services: Services) -> None:
    """The headless Service that gives distributed workers their DNS names."""
    try:
        await ensure_service(services.api, build_service(call.name, call.namespace, uid), uid)
    except ServiceConflict as exc:
        raise _invalid(
            call.body, call.status, call.patch, "ServiceConflict", str(exc), call.generation
        ) from exc
    except ApiException as exc:
        raise kopf.TemporaryError(f"the headless Service: {api_message(exc)}", delay=5) from exc


async def _write_job(call: JobCall, services: Services, job: dict[str, Any], plan: ReconcilePlan) -> None:
    """Create the Job, or give the one that exists the planned scale and suspend (a queued job's
    workers move through its Workload instead)."""
    suspend = None if call.queued else plan.suspend
    try:
        created, refused = await create_or_scale(services.api, job, plan.replicas, suspend)
    except ApiException as exc:  # the Job exists and would not take the scale or suspend
        raise _not_updated(call, exc) from exc
    if refused is not None:
        raise _refused(call, refused) from refused
    if call.queued is not None:
        await set_workload_active(services.api, call.namespace, call.name, plan.suspend)
    if created:
        message = f"Indexed Job {job_name_for(call.name)} with {plan.replicas} workers"
        kopf.info(call.body, reason="JobCreated", message=message)


def _refused(call: JobCall, refused: ApiException) -> kopf.PermanentError | kopf.TemporaryError:
    """The apiserver refused the Job: an invalid template is Invalid (a retry cannot help); anything
    else is retried, with Ready false and a Warning Event."""
    message = f"the apiserver refused the Job: {api_message(refused)}"
    if refused.status in (400, 422):
        return _invalid(call.body, call.status, call.patch, "JobRejected", message, call.generation)
    failed = ConditionUpdate("Ready", False, "JobCreateFailed", message)
    call.patch.status.update(st.ready_update(call.status, failed, call.generation))
    kopf.warn(call.body, reason="JobCreateFailed", message=message)
    return kopf.TemporaryError(message, delay=5)


def _not_updated(call: JobCall, exc: ApiException) -> kopf.TemporaryError:
    """The Job would not take the planned scale or suspend (a halt among them): Ready false with the
    apiserver's words, a Warning Event when that is news, and a retry."""
    message = f"the Job {job_name_for(call.name)} would not take its scale or suspend: {api_message(exc)}"
    ready: dict[str, Any] = next(
        (c for c in call.status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    failed = ConditionUpdate("Ready", False, "JobUpdateFailed", message)
    call.patch.status.update(st.ready_update(call.status, failed, call.generation))
    if ready.get("reason") != "JobUpdateFailed":
        kopf.warn(call.body, reason="JobUpdateFailed", message=message)
    return kopf.TemporaryError(message, delay=5)


def _record(call: JobCall, plan: ReconcilePlan) -> None:
    """The first phase with its Ready condition, or the Ready condition alone, and their Events."""
    if plan.first_phase is not None and plan.ready is not None:
        call.patch.status.update(st.phase_update(call.status, plan.first_phase, plan.ready, call.generation))
    elif plan.ready is not None:
        call.patch.status.update(st.ready_update(call.status, plan.ready, call.generation))
    call.post(plan.events)


def _invalid(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, reason: str, message: str, generation: Any
) -> kopf.PermanentError:
    """Phase Invalid with the reason, a Warning Event; the error for kopf (an edit retries)."""
    ready = ConditionUpdate("Ready", False, reason, message)
    patch.status.update(st.phase_update(status, Phase.INVALID, ready, generation))
    kopf.warn(body, reason=reason, message=message)
    return kopf.PermanentError(message)
