"""One judgement's inputs for the unit tests of evaluation, halting, approvals, analysis and deferral:
a canary that has stepped and reported its evidence, and the Inputs of one evaluation of it."""

from __future__ import annotations

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.api.wire import DPParams, Method, StepRecord, TelemetryBatch
from carbontrack.core.accounting.aggregation import JobAggregate, Receipt
from carbontrack.core.gates.judgement import CiResults
from carbontrack.core.rollout.accountant import epsilon_query
from carbontrack.core.rollout.evaluation import Inputs
from carbontrack.core.rollout.promotion import State
from tests.cases.batches import telemetry_batch
from tests.cases.crs import valid_spec

SPEC = CarbonTrackedJobSpec.model_validate(
    valid_spec(canary={"replicas": 1, "minSteps": 10, "stages": [50, 100]})
)
TESTS = CiResults(pass_rate=0.99, coverage=0.95, critical=0, high=0, medium=0)


def batch(step: int, joules: float, method: Method = "simulated", seq: int = 1) -> TelemetryBatch:
    """Pod p0's batch at `step`: every step so far recorded at 300 J over 1 s."""
    return telemetry_batch(
        namespace="ns", job="j", seq=seq, method=method, joules=[joules] if method != "unavailable" else [],
        steps_seen=step, global_step=step,
        steps=[StepRecord(step=s, first_step=s - 1, energy_joules=300.0, duration_s=1.0, ended_at=1000.0 + s)
               for s in range(1, step + 1)],
    )  # fmt: skip


def canary_aggregate(step: int = 12, method: Method = "simulated") -> JobAggregate:
    """A one-GPU canary at `step` (3.6 kJ at PUE 1.2 and 300 g/kWh) with eval_accuracy 0.86 and its
    DP-SGD parameters reported."""
    agg = JobAggregate()
    receipt = Receipt(received_at=1000.0 + step, pod_started_at=0.0, gpus=1)
    agg.apply(batch(step, 3600.0, method), receipt, pue=1.2, intensity_g_per_kwh=300.0)
    agg.evals = {"eval_accuracy": (step, 0.86)}
    agg.dp = DPParams(step=step, noise_multiplier=1.1, sample_rate=0.001, delta=1e-5, accountant_epsilon=0.9)
    return agg


def inputs(agg: JobAggregate, spec: CarbonTrackedJobSpec = SPEC, **kw: object) -> Inputs:
    """The canary's first judgement (generation 1, one replica, CI results TESTS); `kw` replaces any."""
    query = epsilon_query(spec, agg)
    base: dict[str, object] = {
        "spec": spec, "generation": 1, "state": State(Phase.CANARY, -1, 0), "replicas": 1,
        "aggregate": agg, "intensity_g_per_kwh": 300.0, "tests": TESTS,
        "epsilons": query.compute() if query else None,
    }  # fmt: skip
    base.update(kw)
    return Inputs(**base)  # type: ignore[arg-type]
