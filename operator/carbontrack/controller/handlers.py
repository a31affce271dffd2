"""kopf handlers: thin translations from events to the pure decisions in jobbuilder and core.

Reconcile builds the desired Job (jobbuilder.build_job) and creates or patches it; the Job's own
completion moves the CarbonTrackedJob to Succeeded or Failed. Telemetry does not pass through kopf:
it arrives on the operator's HTTP server and is written to status by the registry's writer, which
owns the telemetry fields of status (kopf's patches own phase, replicas and conditions).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from carbontrack.api.crd import GROUP, PLURAL, VERSION, CarbonTrackedJobSpec
from carbontrack.controller import metrics
from carbontrack.controller.auth import Authenticator
from carbontrack.controller.config import OperatorConfig
from carbontrack.controller.jobbuilder import (
    LABEL_JOB,
    LABEL_MANAGED,
    InjectionError,
    build_job,
    job_name_for,
)
from carbontrack.controller.registry import Registry
from carbontrack.controller.server import TelemetryServer

log = logging.getLogger("carbontrack.operator")
PHASES = ("Pending", "Canary", "Promoting", "Running", "Halted", "Succeeded", "Failed")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def condition(type_: str, status: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
        "observedGeneration": generation,
    }


def set_phase_metric(namespace: str, name: str, phase: str) -> None:
    for p in PHASES:
        metrics.phase.labels(namespace, name, p).set(1 if p == phase else 0)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="carbontrack.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="carbontrack.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    cfg = OperatorConfig.from_env()
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    api = client.ApiClient()
    memo.cfg, memo.api = cfg, api
    memo.registry = Registry(api, cfg)
    memo.server = TelemetryServer(memo.registry, Authenticator(api, cfg.token_cache_s), cfg.max_body_bytes)
    await memo.server.start("0.0.0.0", cfg.telemetry_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.server.stop()
    await memo.registry.flush()
    await memo.api.close()


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
        patch.status["conditions"] = [condition("Ready", False, "SpecInvalid", message, generation)]
        kopf.warn(body, reason="SpecInvalid", message=message)
        raise kopf.PermanentError(message) from exc
    cfg: OperatorConfig = memo.cfg
    replicas = int(status.get("replicas") or parsed.canary.replicas)
    phase = status.get("phase") or ("Canary" if parsed.canary.replicas < parsed.replicas else "Running")
    if phase in ("Succeeded", "Failed"):
        return
    try:
        job = build_job(name, namespace, uid, parsed, replicas, cfg)
    except InjectionError as exc:
        patch.status["conditions"] = [condition("Ready", False, "InjectionRefused", str(exc), generation)]
        kopf.warn(body, reason="InjectionRefused", message=str(exc))
        raise kopf.PermanentError(str(exc)) from exc
    batch_api = client.BatchV1Api(memo.api)
    try:
        await batch_api.create_namespaced_job(namespace, job)
        kopf.info(
            body,
            reason="JobCreated",
            message=f"Indexed Job {job['metadata']['name']} with {replicas} workers",
        )
    except ApiException as exc:
        if exc.status != 409:
            raise kopf.TemporaryError(f"creating the Job failed: {exc.reason}", delay=5) from exc
        scale = {"spec": {"parallelism": replicas, "completions": replicas, "suspend": parsed.suspend}}
        await batch_api.patch_namespaced_job(job_name_for(name), namespace, scale)
    if status.get("phase") != phase:
        kopf.info(body, reason="PhaseChanged", message=f"phase {status.get('phase') or 'none'} -> {phase}")
    patch.status.update(
        {
            "phase": phase,
            "replicas": replicas,
            "targetReplicas": parsed.replicas,
            "replicaSummary": f"{replicas}/{parsed.replicas}",
            "selector": f"{LABEL_JOB}={name}",
            "observedGeneration": generation,
            "conditions": [
                condition("Ready", True, "JobRunning", f"{replicas} of {parsed.replicas} workers", generation)
            ],
        }
    )
    set_phase_metric(namespace, name, phase)
    memo.registry.update_spec(namespace, name, parsed)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def deleted(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    memo.registry.forget(namespace, name)  # the Job goes by garbage collection (owner reference)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED: "true"})
async def job_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    conditions = {c.get("type"): c for c in (body.get("status", {}).get("conditions") or [])}
    phase = None
    if conditions.get("Complete", {}).get("status") == "True":
        phase, message = "Succeeded", "the training Job completed"
    elif conditions.get("Failed", {}).get("status") == "True":
        phase = "Failed"
        message = f"the training Job failed: {conditions['Failed'].get('message', '')}".strip()
    if phase is None:
        return
    namespace = body["metadata"]["namespace"]
    name = body["metadata"].get("labels", {}).get(LABEL_JOB)
    if not name:
        return
    custom = client.CustomObjectsApi(memo.api)
    try:
        ctj = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException:
        return
    if (ctj.get("status") or {}).get("phase") == phase:
        return
    generation = ctj["metadata"].get("generation")
    await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name,
        {"status": {"phase": phase, "conditions": [condition("Ready", False, phase, message, generation)]}},
        _content_type="application/merge-patch+json",
    )  # type: ignore[call-arg]  # fmt: skip
    kopf.info(
        ctj,
        reason="PhaseChanged",
        message=f"phase {(ctj.get('status') or {}).get('phase')} -> {phase}: {message}",
    )
    set_phase_metric(namespace, name, phase)
