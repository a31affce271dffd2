"""Kueue's side of a queued CarbonTrackedJob: the Workload's `spec.active`, and the budget AdmissionCheck.

The rules are in core/scheduling/kueue.py; this module reads and writes Kueue's objects (API
kueue.x-k8s.io/v1beta2; tested with Kueue v0.19.2). The operator never writes a queued Job's `spec.suspend`:
Kueue's webhook suspends the Job at creation, and its manager suspends and unsuspends it as it
deactivates, evicts and admits the Workload, so halting is `active: false` on every unfinished
Workload of the Job, resuming `active: true` (the resume first writes its pod-template annotations on
the inactive Workload's copy of the template, which Kueue puts back on the Job: set_workload_annotations).

The AdmissionCheck controller answers the checks whose AdmissionCheck names controllerName
`carbontrack.io/budget`: it sets their state on each Workload (server-side apply of its own entry of
`status.admissionChecks`, field manager carbontrack-budget) and the AdmissionCheck's `Active` condition.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import LABEL_JOB, LABEL_MANAGED
from carbontrack.api.crd import GROUP as CT_GROUP
from carbontrack.api.crd import PLURAL as CT_PLURAL
from carbontrack.api.crd import VERSION as CT_VERSION
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.scheduling import kueue as kp
from carbontrack.intensity import static
from carbontrack.state import status as st
from carbontrack.state.config import OperatorConfig

log = logging.getLogger("carbontrack.kueue")

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
FIELD_MANAGER = "carbontrack-budget"


def _stamp(now: dt.datetime) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes condition times."""
    return now.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def view(wl: dict[str, Any]) -> kp.WorkloadView:
    s = wl.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in s.get("conditions") or []}
    return kp.WorkloadView(
        name=wl["metadata"]["name"],
        active=(wl.get("spec") or {}).get("active", True) is not False,
        admitted=conditions.get("Admitted") == "True",
        finished=conditions.get("Finished") == "True",
        holds_quota=conditions.get("QuotaReserved") == "True",
        checks=tuple(
            kp.CheckState(c.get("name", ""), c.get("state", ""), c.get("message", ""))
            for c in s.get("admissionChecks") or []
        ),
    )


async def job_uid(api: client.ApiClient, namespace: str, job: str) -> str | None:
    try:
        found = await client.BatchV1Api(api).read_namespaced_job(job, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return str(found.metadata.uid)


async def workloads(api: client.ApiClient, namespace: str, uid: str) -> list[dict[str, Any]]:
    """The Job's Workloads (several while an elastic Job moves to a new slice), by Kueue's job-uid label."""
    out = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloads", label_selector=f"{kp.JOB_UID_LABEL}={uid}"
    )
    return list(out.get("items") or [])


async def set_active(api: client.ApiClient, namespace: str, job: str, active: bool) -> bool:
    """Every unfinished Workload of the Job gets `spec.active`; False when there is none yet."""
    uid = await job_uid(api, namespace, job)
    if uid is None:
        return False
    found = [wl for wl in await workloads(api, namespace, uid) if not view(wl).finished]
    custom = client.CustomObjectsApi(api)
    for wl in found:
        if view(wl).active == active:
            continue
        await custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "workloads",
            wl["metadata"]["name"],
            {"spec": {"active": active}},
            _content_type="application/merge-patch+json",
        )  # type: ignore[call-arg]
        log.info("workload %s/%s active=%s", namespace, wl["metadata"]["name"], active)
    return bool(found)


async def set_workload_annotations(
    api: client.ApiClient, namespace: str, job: str, changes: dict[str, str | None]
) -> str | None:
    """Write a resume's pod-template annotations on the Job's unfinished Workloads that hold no quota
    (Kueue restores a halted Job's template from its Workload's copy, see kueue_policy.workload_annotations).
    Kueue refuses a change of a Workload holding quota: while a halted one still holds it, nothing is
    written and its name comes back (kueue_policy.workload_releasing_quota)."""
    uid = await job_uid(api, namespace, job)
    if uid is None:
        return None
    found = [(wl, view(wl)) for wl in await workloads(api, namespace, uid)]
    releasing = kp.workload_releasing_quota(tuple(seen for _, seen in found))
    if releasing is not None:
        return releasing
    custom = client.CustomObjectsApi(api)
    for wl, seen in found:
        if seen.finished or seen.holds_quota:
            continue
        pod_sets = wl["spec"]["podSets"]
        for ps in pod_sets:
            meta = ps.setdefault("template", {}).setdefault("metadata", {})
            meta["annotations"] = kp.workload_annotations(meta.get("annotations"), changes)
        body = {
            "metadata": {"resourceVersion": wl["metadata"]["resourceVersion"]},
            "spec": {"podSets": pod_sets},
        }
        await custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "workloads",
            wl["metadata"]["name"],
            body,
            _content_type="application/merge-patch+json",
        )  # type: ignore[call-arg]
        log.info("workload %s/%s: resume annotations on its pod template", namespace, wl["metadata"]["name"])
    return None


async def our_checks(api: client.ApiClient) -> frozenset[str]:
    """Names of the AdmissionChecks that carbontrack answers."""
    out = await client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, "admissionchecks")
    return frozenset(
        ac["metadata"]["name"]
        for ac in out.get("items") or []
        if (ac.get("spec") or {}).get("controllerName") == kp.ADMISSION_CHECK_CONTROLLER
    )


async def judge_job(
    api: client.ApiClient, cfg: OperatorConfig, namespace: str, job: str, now: dt.datetime
) -> Any:
    """Answer the Job's pending budget checks, and BudgetAdmission for its CarbonTrackedJob (or None)."""
    uid = await job_uid(api, namespace, job)
    if uid is None:
        return None
    found = await workloads(api, namespace, uid)
    for wl in found:
        await answer_workload(api, cfg, wl, now)
    views = tuple(view(wl) for wl in await workloads(api, namespace, uid)) if found else ()
    return kp.admission_condition(views, await our_checks(api))


def pre_admission_intensity(spec: CarbonTrackedJobSpec, cfg: OperatorConfig) -> tuple[float, str]:
    """The intensity a job will meet, known before its pods are placed: the spec's override, else the
    static figure of its zone (or the operator's default zone), else the world average, said so."""
    if spec.carbon.intensity.grams_per_kwh is not None:
        return spec.carbon.intensity.grams_per_kwh, "override"
    zone = spec.carbon.zone or cfg.default_zone
    if not zone:
        return static.WORLD_AVERAGE_G_PER_KWH, "world average: no zone before the pods are placed"
    found = static.lookup(zone)
    return found.g_per_kwh, found.source


async def _verdict(api: client.ApiClient, cfg: OperatorConfig, wl: dict[str, Any]) -> kp.Verdict:
    namespace = wl["metadata"]["namespace"]
    owner = next((o for o in wl["metadata"].get("ownerReferences") or [] if o.get("kind") == "Job"), None)
    if owner is None:
        return kp.Verdict(True, "not a CarbonTrackedJob's Job: no budget to check")
    try:
        job = await client.BatchV1Api(api).read_namespaced_job(owner["name"], namespace)
    except ApiException as exc:
        if exc.status == 404:
            return kp.Verdict(True, "not a CarbonTrackedJob's Job: no budget to check")
        raise
    labels = job.metadata.labels or {}
    if labels.get(LABEL_MANAGED) != "true" or not labels.get(LABEL_JOB):
        return kp.Verdict(True, "not a CarbonTrackedJob's Job: no budget to check")
    ctj = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        CT_GROUP, CT_VERSION, namespace, CT_PLURAL, labels[LABEL_JOB]
    )
    spec = CarbonTrackedJobSpec.model_validate(ctj["spec"])
    g_per_kwh, source = pre_admission_intensity(spec, cfg)
    return kp.admission_verdict(spec, st.parse(ctj.get("status")), g_per_kwh, source)


async def answer_workload(
    api: client.ApiClient, cfg: OperatorConfig, wl: dict[str, Any], now: dt.datetime
) -> None:
    """Set our Pending checks on this Workload to Ready or Rejected (Kueue resets them to Pending when
    it requeues the Workload, so a reactivated job is judged again on its edited spec)."""
    pending = [c for c in view(wl).checks if c.state == "Pending"]
    if not pending:
        return
    ours = await our_checks(api)
    mine = [c for c in pending if c.name in ours]
    if not mine:
        return
    verdict = await _verdict(api, cfg, wl)
    state = "Ready" if verdict.ready else "Rejected"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workload",
        "metadata": {"name": wl["metadata"]["name"], "namespace": wl["metadata"]["namespace"]},
        "status": {
            "admissionChecks": [
                {
                    "name": c.name,
                    "state": state,
                    "message": verdict.message[:32768],
                    "lastTransitionTime": _stamp(now),
                }
                for c in mine
            ]
        },
    }
    await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        wl["metadata"]["namespace"],
        "workloads",
        wl["metadata"]["name"],
        body,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )  # type: ignore[call-arg]
    meta = wl["metadata"]
    log.info("workload %s/%s: budget check %s: %s", meta["namespace"], meta["name"], state, verdict.message)


async def mark_active(api: client.ApiClient, ac: dict[str, Any], now: dt.datetime) -> None:
    """The AdmissionCheck's Active condition: Kueue uses a check only while its controller says so."""
    conditions = (ac.get("status") or {}).get("conditions") or []
    generation = ac["metadata"].get("generation")
    if any(
        c.get("type") == "Active" and c.get("status") == "True" and c.get("observedGeneration") == generation
        for c in conditions
    ):
        return
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AdmissionCheck",
        "metadata": {"name": ac["metadata"]["name"]},
        "status": {
            "conditions": [
                {
                    "type": "Active",
                    "status": "True",
                    "reason": "Active",
                    "message": "carbontrack answers this check: projected emissions and epsilon vs budget",
                    "lastTransitionTime": _stamp(now),
                    "observedGeneration": generation,
                }
            ]
        },
    }
    await client.CustomObjectsApi(api).patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        "admissionchecks",
        ac["metadata"]["name"],
        body,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )  # type: ignore[call-arg]
