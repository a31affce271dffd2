"""The watch on the training Jobs carbontrack manages: which exist, and how they end.

The judgement waits for a job's Job to exist (Services.seen_jobs); a Job that completes or fails makes
its CarbonTrackedJob's phase Succeeded or Failed, with an Event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import LABEL_JOB, Phase
from carbontrack.api.crd import GROUP, PLURAL, VERSION
from carbontrack.controller.services import Services, services_of
from carbontrack.core.events import ConditionUpdate
from carbontrack.core.rollout.evaluation import job_outcome
from carbontrack.state import status as st
from carbontrack.state.registry import merge_patch_status
from carbontrack.state.status import Patch


async def job_event(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    """Record that the Job exists (or is gone); at its end, its CarbonTrackedJob's final phase."""
    services = services_of(memo)
    name = (body["metadata"].get("labels") or {}).get(LABEL_JOB)
    namespace = body["metadata"]["namespace"]
    if name:
        if type == "DELETED":
            services.seen_jobs.discard((namespace, name))
            services.ended_jobs.pop((namespace, name), None)
        else:
            services.seen_jobs.add((namespace, name))
    outcome = job_outcome((body.get("status") or {}).get("conditions"))
    if type == "DELETED" or outcome is None or not name:
        return
    services.ended_jobs[(namespace, name)] = outcome
    await _finish(services, namespace, name, *outcome)


def ended_patch(
    ended_jobs: Mapping[tuple[str, str], tuple[Phase, str]],
    key: tuple[str, str],
    status: Mapping[str, Any],
    generation: int | None,
) -> tuple[Patch, Phase] | None:
    """The final phase a round writes when the watch saw its job's Job end and status does not say so:
    the watch's own write is made once, and a round that read status before it can write the phase it
    judged over it, so every round checks (None: nothing to write)."""
    outcome = ended_jobs.get(key)
    if outcome is None:
        return None
    update = end_update(status, *outcome, generation)
    return None if update is None else (update, outcome[0])


def end_update(status: Mapping[str, Any], phase: Phase, message: str, generation: int | None) -> Patch | None:
    """The status patch that records the Job's end with its Ready condition; None when status has it."""
    if status.get("phase") == phase.value:
        return None
    return st.phase_update(status, phase, ConditionUpdate("Ready", False, phase.value, message), generation)


async def _finish(services: Services, namespace: str, name: str, phase: Phase, message: str) -> None:
    """The CarbonTrackedJob's phase Succeeded or Failed, read fresh (unchanged if it already has it)."""
    custom = client.CustomObjectsApi(services.api)
    try:
        ctj = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException:
        return
    current = ctj.get("status") or {}
    update = end_update(current, phase, message, ctj["metadata"].get("generation"))
    if update is None:
        return
    await merge_patch_status(custom, namespace, name, {"status": update})
    kopf.info(ctj, reason="PhaseChanged", message=f"phase {current.get('phase')} -> {phase}: {message}")
    state = services.registry.jobs.get((namespace, name))
    if state is not None:
        state.gauges = st.with_phase(state.gauges, phase)
