"""The judgement's gather step: what is known about a job now, as `core.rollout.evaluation.Inputs`.

Status (the promotion state, the halt, the evidence the last round used), the live aggregate, the test
evidence (from the spec, overlaid with the ConfigMap CI writes), the metric gates' measurements due this
round, the job's running pods (one list per round, from the apiserver's cache), and epsilon computed off
the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import LABEL_JOB, Phase
from carbontrack.api.crd import (
    CarbonTrackedJobSpec,
    CarbonTrackedJobStatus,
    Condition,
    MetricHistory,
    TestsEvidence,
)
from carbontrack.controller.context import JobCall
from carbontrack.controller.services import Services
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.gates import metric_gates as analysis
from carbontrack.core.gates.evidence import tests_from
from carbontrack.core.gates.judgement import CiResults
from carbontrack.core.rollout import coverage
from carbontrack.core.rollout.accountant import epsilon_query
from carbontrack.core.rollout.approvals import person_decision
from carbontrack.core.rollout.evaluation import Inputs
from carbontrack.integrations import prometheus
from carbontrack.state import status as st
from carbontrack.state.config import PrometheusSettings

log = logging.getLogger("carbontrack.operator")


async def gather(call: JobCall, services: Services, meta: kopf.Meta) -> Inputs:
    """Everything one judgement of the job decides on."""
    spec, stored = call.spec, st.parse(call.status)
    now = services.clock()
    person = person_decision(meta.get("annotations"), meta.get("managedFields"), now, spec.gates.approval)
    job_state = await services.registry.get(*call.key)
    agg = job_state.aggregate if job_state else JobAggregate()
    prom = services.config.prometheus
    measured = await _measure(spec, stored, agg.global_step, now, prom) if spec.gates.metrics else ()
    tests, evidence = await _tests_evidence(services, call.namespace, spec, stored.tests_evidence)
    query = epsilon_query(spec, agg)
    epsilons = await asyncio.to_thread(query.compute) if query else None  # PLD: up to a second
    intensity = job_state.intensity if job_state else None
    # a zone left to the node's region is resolved by the first batch: not judged before it
    pending = not spec.carbon.zone and not agg.sources
    state = st.promotion_state(stored)
    return Inputs(
        spec=spec,
        generation=call.generation or 0,
        state=state,
        replicas=call.status.get("replicas"),
        aggregate=agg,
        intensity_g_per_kwh=intensity.g_per_kwh if intensity else 0.0,
        tests=tests,
        tests_evidence=evidence,
        epsilons=epsilons,
        zone=intensity.zone if intensity else "",
        zone_known=pending or intensity is None or intensity.known_zone,
        zone_warned=_warned(stored.conditions, "ZoneResolved"),
        person=person,
        telemetry_warned=_warned(stored.conditions, "TelemetryAccepted"),
        intensity_warned=_warned(stored.conditions, "IntensityResolved"),
        intensity_problem=services.registry.intensity.problem(call.namespace, spec),
        metrics=measured,
        now=now,
        halt=stored.halt,
        checkpoint=st.checkpoint_status(agg),
        schedule=stored.schedule,
        shown_energy_j=stored.energy_joules,
        pods=await _running_pods(services, call, state.phase),
        measurement_grace_s=coverage.grace_s(services.config.status_interval_s),
        watched_since=job_state.loaded_at if job_state else now.timestamp(),
        pods_warned=_false_message(stored.conditions, "PodsMeasured"),
    )


def _warned(conditions: Sequence[Condition], kind: str) -> bool:
    """The condition is False in status: the Event that goes with it was posted already."""
    return any(c.type == kind and c.status == "False" for c in conditions)


def _false_message(conditions: Sequence[Condition], kind: str) -> str | None:
    """The message of the condition when it is False in status (its Event was posted), else None."""
    return next((c.message for c in conditions if c.type == kind and c.status == "False"), None)


WORKING = (Phase.CANARY, Phase.PROMOTING, Phase.RUNNING, Phase.PAUSED)
"""Phases whose pods may run: the only ones a round lists pods in."""


async def _running_pods(
    services: Services, call: JobCall, phase: Phase
) -> tuple[coverage.RunningPod, ...] | None:
    """The job's running pods, listed from the apiserver's watch cache (resourceVersion 0: no etcd
    read), once per round; None in a phase without workers, or when the list fails (no pod is then
    judged unmeasured: a busy apiserver must not halt a job)."""
    if phase not in WORKING:
        return None
    response: Any = await client.CoreV1Api(services.api).list_namespaced_pod(
        call.namespace,
        label_selector=f"{LABEL_JOB}={call.name}",
        resource_version="0",
        _preload_content=False,  # names, phases and times only: no model objects built per pod
    )
    try:
        raw = await response.read()
    finally:
        response.release()
    try:
        if not 200 <= response.status <= 299:
            raise ValueError(f"HTTP {response.status} {response.reason}")
        items = json.loads(raw).get("items") or []
    except (ValueError, AttributeError) as exc:
        log.warning("listing the job's pods failed: %s", exc, extra={"job": call.name})
        return None
    return tuple(p for item in items if (p := coverage.running_pod(item)) is not None)


async def _tests_evidence(
    services: Services, namespace: str, spec: CarbonTrackedJobSpec, last: TestsEvidence | None
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
            cm = await client.CoreV1Api(services.api).read_namespaced_config_map(t.from_config_map, namespace)
            written = json.loads((cm.data or {}).get("results.json", "{}"))
            doc.update({k: v for k, v in written.items() if v is not None})
        except (ApiException, ValueError) as exc:
            log.warning("test results ConfigMap unreadable: %s", exc, extra={"configMap": t.from_config_map})
            if last is not None and last.source == source and getattr(exc, "status", 0) != 404:
                return st.tests_results(last), last
    results = tests_from(doc)
    return results, st.tests_evidence(results, source)


async def _measure(
    spec: CarbonTrackedJobSpec,
    stored: CarbonTrackedJobStatus,
    global_step: int,
    now: dt.datetime,
    endpoints: PrometheusSettings,
) -> tuple[MetricHistory, ...]:
    """One measurement of each metric gate that is due (canary and promotion stages only)."""
    state = st.promotion_state(stored)
    histories = analysis.by_name(stored.measurements)
    out = []
    for gate in spec.gates.metrics:
        h = analysis.current(histories.get(gate.name), gate.name, state.stage, state.stage_start_step)
        if state.phase in (Phase.CANARY, Phase.PROMOTING) and analysis.due(gate, h, global_step):
            try:
                value = await prometheus.query(gate.prometheus, endpoints)
                h = analysis.record(gate, h, global_step, now, value=value)
            except analysis.MeasurementError as exc:
                h = analysis.record(gate, h, global_step, now, error=str(exc))
        out.append(h)
    return tuple(out)
