"""The handlers' writes to the training Job and, for a job Kueue queues, to its Workload.

A Job Kueue queues keeps its `spec.suspend` for Kueue: its workers stop and start through the Workload's
`spec.active` (integrations.kueue.client), never through the Job's suspend.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import RESUME_ANNOTATION, WORLD_SIZE_ANNOTATION, job_name_for
from carbontrack.controller.round_guard import RoundFailed
from carbontrack.core.rollout.evaluation import JobScale
from carbontrack.core.scheduling import kueue as kueue_policy
from carbontrack.integrations.kueue import client as kueue
from carbontrack.state.kube_writes import write

log = logging.getLogger("carbontrack.operator")


def api_message(exc: ApiException) -> str:
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


async def create_or_scale(
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


async def set_workload_active(api: client.ApiClient, namespace: str, name: str, suspend: bool) -> None:
    """A queued job halts and resumes through its Workload's spec.active (integrations.kueue)."""
    if not await kueue.set_active(api, namespace, job_name_for(name), not suspend) and suspend:
        raise kopf.TemporaryError("waiting for Kueue to create the Job's Workload", delay=2)


async def hold(
    api: client.ApiClient, namespace: str, name: str, held: bool, queued: kueue_policy.Queueing | None
) -> None:
    """Hold the workers stopped (or let them run) for a carbon-aware start or pause: the Job's suspend,
    or, for a job Kueue queues, its Workload's spec.active."""
    if queued is not None:
        await set_workload_active(api, namespace, name, held)
        return
    batch_api = client.BatchV1Api(api)
    await write(batch_api.patch_namespaced_job, job_name_for(name), namespace, {"spec": {"suspend": held}})


async def scale(
    api: client.ApiClient,
    namespace: str,
    name: str,
    target: JobScale,
    workload: kueue_policy.Queueing | None,
    kueue_owns_suspend: bool,
) -> None:
    """Patch the Job's scale and suspend; a resume also writes the stage's world size and the checkpoint
    to start from on the pod template (its annotations may change only while the Job is suspended). A
    job Kueue queues halts and resumes through its Workload's spec.active, moved only when `workload` is
    given (the workers stop or start this round)."""
    patch: dict[str, Any] = {"spec": {"parallelism": target.replicas, "completions": target.replicas}}
    if not kueue_owns_suspend:
        patch["spec"]["suspend"] = target.suspend
    if target.resume:
        resumed = await _resume(api, namespace, name, target, patch, workload)
        patch = {} if resumed else patch
    try:
        if patch:
            await write(client.BatchV1Api(api).patch_namespaced_job, job_name_for(name), namespace, patch)
        if workload is not None:
            await set_workload_active(api, namespace, name, target.suspend)
    except (ApiException, kopf.TemporaryError) as exc:
        raise not_applied(target, job_name_for(name), exc) from exc


def not_applied(target: JobScale, job: str, exc: Exception) -> RoundFailed:
    """The judgement's write to the workers failed: a condition and an Event say so (controller.round_guard)
    and the next round writes it again. A halt that cannot be applied is never only a log line."""
    cause = api_message(exc) if isinstance(exc, ApiException) else str(exc)
    if target.suspend:
        return RoundFailed("HaltNotApplied", f"halting the Job {job} failed, its workers still run: {cause}")
    verb = "resuming" if target.resume else "scaling"
    message = f"{verb} the Job {job} to {target.replicas} workers failed: {cause}"
    return RoundFailed("ScaleNotApplied", message)


async def _resume(
    api: client.ApiClient,
    namespace: str,
    name: str,
    target: JobScale,
    patch: dict[str, Any],
    workload: kueue_policy.Queueing | None,
) -> bool:
    """Write the scale patch with the resume point on the pod template, and say whether the Job took it
    (a Job whose template the apiserver will not let change, a 422, resumes from the scale alone)."""
    ck = target.resume_from
    annotations = {
        WORLD_SIZE_ANNOTATION: str(target.replicas),
        RESUME_ANNOTATION: f"{ck.step} {ck.uri}" if ck else None,
    }
    resumed = {"spec": {**patch["spec"], "template": {"metadata": {"annotations": annotations}}}}
    written = False
    try:
        if workload is not None:  # Kueue restores the Job's template from its Workload's copy
            await _resume_workloads(api, namespace, job_name_for(name), annotations)
        await write(client.BatchV1Api(api).patch_namespaced_job, job_name_for(name), namespace, resumed)
        written = True
    except ApiException as exc:
        if exc.status != 422:
            raise not_applied(target, job_name_for(name), exc) from exc
        await _unless_workers_stopping(api, namespace, job_name_for(name), target)
        log.warning("resume point not written to the pod template: %s", api_message(exc))
    return written


async def _resume_workloads(
    api: client.ApiClient, namespace: str, job: str, annotations: dict[str, str | None]
) -> None:
    """Write the resume's annotations on the halted Job's Workloads before its template, and raise (the
    next round resumes again) while Kueue still evicts one: it would put that copy back on the Job."""
    releasing = await kueue.set_workload_annotations(api, namespace, job, annotations)
    if releasing is not None:
        message = (
            f"resuming the Job {job} waits for Kueue to release the quota of its halted Workload {releasing}"
        )
        raise RoundFailed("ScaleNotApplied", message)


async def _unless_workers_stopping(api: client.ApiClient, namespace: str, job: str, target: JobScale) -> None:
    """Raise (the next round resumes again) while the suspended Job still has active workers: the
    apiserver lets a suspended Job's pod template change only once none is active, so a resume that
    comes while the halt's workers are still stopping is refused for a moment, and resuming without
    its world size and checkpoint would start the workers with the wrong ones."""
    status = (await client.BatchV1Api(api).read_namespaced_job_status(job, namespace)).status
    active = (status.active or 0) if status is not None else 0
    if active:
        message = f"resuming the Job {job} waits for its {active} stopping workers to be gone"
        raise RoundFailed("ScaleNotApplied", message)
