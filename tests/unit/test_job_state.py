"""The job state both ingestion and judgement use: a finished job's totals stop moving, and the
exported totals are the ones status holds (state.registry, state.status)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import time
from typing import Any

import pytest
from kubernetes_asyncio import client

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt, Verdict
from carbontrack.core.accounting.emissions import emissions_g
from carbontrack.core.rollout.coverage import RunningPod
from carbontrack.core.rollout.evaluation import Gauges
from carbontrack.intensity.static import lookup
from carbontrack.state import status as st
from carbontrack.state.config import OperatorConfig
from carbontrack.state.registry import JobState, Registry
from tests.cases.batches import telemetry_batch
from tests.cases.crs import minimal_spec

SPEC = CarbonTrackedJobSpec.model_validate(minimal_spec())
CONFIG = OperatorConfig(status_interval_s=10.0)


def job(phase: Phase, spec: CarbonTrackedJobSpec = SPEC, **fields: Any) -> JobState:
    state = JobState("ml", "llama", spec, JobAggregate(), lookup("DE"), Gauges(phase=phase), **fields)
    state.intensity_at = time.monotonic()  # resolved just now: no provider is asked
    return state


def send(state: JobState, seq: int, joules: float, at: float) -> Applied:
    async def run() -> Applied:
        registry = Registry(client.ApiClient(), CONFIG)
        receipt = Receipt(received_at=at, pod_started_at=0.0, gpus=1)
        return await registry.apply(state, telemetry_batch(seq=seq, joules=[joules]), receipt)

    return asyncio.run(run())


def test_a_succeeded_job_takes_final_flushes_for_two_status_intervals_then_refuses() -> None:
    state = job(Phase.SUCCEEDED, ended_at=1000.0)
    assert send(state, 1, 100.0, at=1019.0).verdict is Verdict.ACCEPTED
    assert send(state, 2, 150.0, at=1020.0).verdict is Verdict.ACCEPTED  # the grace's last instant
    refused = send(state, 3, 900.0, at=1020.5)
    assert refused.verdict is Verdict.FINISHED and refused.energy_j == 0.0
    assert (
        refused.message
        == "the job is Succeeded and its final-flush grace period is over: its totals are final"
    )
    assert send(state, 4, 950.0, at=5000.0).verdict is Verdict.FINISHED
    assert state.aggregate.energy_j == 150.0 and state.aggregate.refused == {"finished": 2}


def test_the_end_counts_from_when_the_phase_is_first_seen() -> None:
    state = job(Phase.FAILED)
    assert state.training_ended_at(1500.0) == 1500.0 and state.training_ended_at(1600.0) == 1500.0
    assert send(state, 1, 10.0, at=1521.0).verdict is Verdict.FINISHED


def test_a_halted_job_takes_batches_until_its_workers_stop_and_their_termination_grace() -> None:
    """The halt's trainers checkpoint while still running; once suspended, each pod's sidecar flushes
    within the pods' terminationGracePeriodSeconds (the halt's grace period, 300 s by default)."""
    state = job(Phase.HALTED)
    assert send(state, 1, 10.0, at=10_000.0).verdict is Verdict.ACCEPTED  # not stopped yet
    state.ended_at = 10_000.0  # the judgement saw the workers stopped
    assert state.flush_grace_s(10.0) == 320.0
    assert send(state, 2, 20.0, at=10_320.0).verdict is Verdict.ACCEPTED
    assert send(state, 3, 30.0, at=10_320.5).verdict is Verdict.FINISHED


def test_a_pod_template_with_a_longer_termination_grace_gets_it() -> None:
    raw = minimal_spec(template=copy.deepcopy(minimal_spec()["template"]))
    raw["template"]["spec"]["terminationGracePeriodSeconds"] = 600
    state = job(Phase.HALTED, CarbonTrackedJobSpec.model_validate(raw))
    assert state.flush_grace_s(10.0) == 620.0
    assert job(Phase.SUCCEEDED).flush_grace_s(10.0) == 20.0


def test_a_resumed_job_takes_batches_again() -> None:
    state = job(Phase.HALTED, ended_at=1000.0)
    state.gauges = Gauges(phase=Phase.CANARY)
    assert state.training_ended_at(9000.0) is None
    assert send(state, 1, 10.0, at=9000.0).verdict is Verdict.ACCEPTED


HALT = {"requestedAt": "2025-01-01T00:00:00Z", "deadline": "2025-01-01T00:05:00Z"}
READY = {
    "type": "Ready",
    "status": "False",
    "reason": "Succeeded",
    "lastTransitionTime": "2025-01-01T00:00:10Z",
}


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"phase": "Running"}, None),
        ({"phase": "Halted", "halt": HALT}, None),  # the workers are still checkpointing
        ({"phase": "Halted", "halt": {**HALT, "suspendedAt": "2025-01-01T00:01:40Z"}}, 1735689700.0),
        ({"phase": "Succeeded", "conditions": [READY]}, 1735689610.0),
    ],
)
def test_a_restarted_operator_restores_when_the_job_ended(raw: dict[str, Any], want: float | None) -> None:
    assert st.ended_at(st.parse(raw)) == want


def test_exported_totals_follow_the_status_writes_the_apiserver_took() -> None:
    async def run() -> tuple[st.Totals, st.Totals]:
        registry = Registry(client.ApiClient(), CONFIG)
        state = job(Phase.CANARY, persisted=st.Totals(5.0, 0.5, 1))
        writer = registry._writer(state)
        send_at = Receipt(received_at=1000.0, pod_started_at=0.0, gpus=1)
        await registry.apply(state, telemetry_batch(seq=1, joules=[3600.0], global_step=7), send_at)
        before = state.persisted  # accepted, not written yet: the counters still show status
        writer.on_written(writer.build())
        return before, state.persisted

    before, after = asyncio.run(run())
    assert before == st.Totals(5.0, 0.5, 1)
    assert after == st.Totals(3600.0, emissions_g(3600.0, SPEC.carbon.pue, lookup("DE").g_per_kwh), 7)


def test_restored_totals_and_unmeasured_pods_are_what_status_holds() -> None:
    agg = JobAggregate()
    agg.apply(telemetry_batch(seq=1, joules=[42.0], global_step=3), Receipt(1000.0, 0.0, 1), pue=1.0,
              intensity_g_per_kwh=100.0)  # fmt: skip
    pods = (RunningPod("p1", 1735689600.0),)
    stored = st.parse(st.telemetry_update(agg, lookup("DE"), 1000.0, pods)["status"])
    assert st.totals(stored) == st.Totals(42.0, agg.emissions_g, 3)
    assert st.unmeasured_pods(stored) == pods
    assert stored.telemetry is not None and stored.telemetry.unmeasured_pod_count == 1
    assert stored.telemetry.unmeasured_pods[0].started_at == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_status_lists_at_most_32_unmeasured_pods_and_counts_them_all() -> None:
    pods = tuple(RunningPod(f"p{i}", 1000.0 + i) for i in range(40))
    stored = st.parse(st.telemetry_update(JobAggregate(), lookup("DE"), 1000.0, pods)["status"])
    assert stored.telemetry is not None and stored.telemetry.unmeasured_pod_count == 40
    assert [p.pod for p in stored.telemetry.unmeasured_pods] == [f"p{i}" for i in range(32)]
