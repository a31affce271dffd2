"""The gates a job must pass before it scales up: pure functions from evidence to verdicts.

Every check returns passed, observed, threshold and a sentence. Missing evidence fails closed in
`staging` and `production` (a gate never passes on data it does not have) and passes with a warning
in `development`. Thresholds come from the context's profile unless the spec overrides a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from carbontrack.api.crd import (
    CarbonTrackedJobSpec,
    Context,
    EfficiencyStatus,
    GateResult,
    GateVerdict,
    QualityGate,
    Thresholds,
)


@dataclass(frozen=True)
class Profile:
    """A context's thresholds: floors for tests and coverage, caps for findings and for worsening vs
    the baseline model, and whether missing evidence fails."""

    min_pass_rate: float
    min_coverage: float
    max_critical: int
    max_high: int
    max_medium: int
    max_regression: float
    """Largest allowed worsening of the quality metric vs baseline, in the metric's units."""
    max_latency_increase: float
    """Largest allowed relative latency increase vs baseline."""
    max_throughput_decrease: float
    """Largest allowed relative drop of samples/s vs baseline."""
    max_memory_increase: float
    """Largest allowed relative peak-memory increase vs baseline."""
    fail_closed: bool
    max_low: int | None = None
    """Low findings allowed. Unlimited by default in every context: scanners report many (bandit flags
    every `assert` and `subprocess` import), so a default cap would fail most codebases on day one for
    findings nobody triages; they are counted and shown, and thresholds.maxLow turns them into a gate."""


PROFILES: dict[str, Profile] = {
    "development": Profile(0.80, 0.60, 0, 5, 20, 0.05, 0.25, 0.25, 0.25, fail_closed=False),
    "staging": Profile(0.95, 0.80, 0, 1, 10, 0.02, 0.15, 0.15, 0.15, fail_closed=True),
    "production": Profile(0.98, 0.90, 0, 0, 5, 0.01, 0.10, 0.10, 0.10, fail_closed=True),
}


def profile_for(context: Context, overrides: Thresholds | None) -> Profile:
    """The context's profile with each threshold the spec sets in its place."""
    base = PROFILES[context]
    if overrides is None:
        return base
    changes = {k: v for k, v in overrides.model_dump().items() if v is not None}
    return replace(base, **changes)


@dataclass(frozen=True)
class CiResults:
    """What CI reports of the tests and the security scan: None where a figure was not reported."""

    pass_rate: float | None = None
    coverage: float | None = None
    critical: int | None = None
    high: int | None = None
    medium: int | None = None
    low: int | None = None


@dataclass(frozen=True)
class Evidence:
    """What the operator knows when it judges: reported metrics, test results, budgets' projections."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    tests: CiResults | None = None
    epsilon_projected: float | None = None
    epsilon_claimed: float | None = None
    emissions_projected_g: float | None = None
    energy_measured: bool = True
    """False when a sidecar could measure no energy (method `unavailable`): its steps carry 0 J, so a
    projection from them would pass any budget; the carbon gate treats it as missing data."""
    emissions_projected_upper_g: float | None = None
    """The projection scaled by the stated measurement uncertainty; production judges this."""
    shared_gpu_energy_j: float = 0.0
    """Board energy of MIG or shared GPUs in the job's energy: not the job's alone."""
    efficiency: EfficiencyStatus | None = None
    """Energy and emissions per unit of the quality metric gained (core.accounting.efficiency)."""
    unmeasured_pods: tuple[str, ...] = ()
    """Running pods no telemetry was accepted from within the grace period (core.rollout.coverage): the
    job's energy misses theirs and is a lower bound, so the carbon gates treat it as missing data."""


@dataclass(frozen=True)
class Report:
    """Every gate's result of one judgement, in order, and the verdict they add up to."""

    results: tuple[GateResult, ...]

    def all_passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failed(self) -> list[GateResult]:
        """Failed or Error: either halts the job."""
        return [r for r in self.results if r.verdict in ("Failed", "Error")]

    def inconclusive(self) -> list[GateResult]:
        return [r for r in self.results if r.verdict == "Inconclusive"]

    def verdict(self) -> GateVerdict:
        """Failed (or Error) if any gate is; else Inconclusive if any gate is; else Passed."""
        if self.failed():
            return "Error" if all(r.verdict == "Error" for r in self.failed()) else "Failed"
        return "Inconclusive" if self.inconclusive() else "Passed"

    def summary(self) -> str:
        """One line for status.gateSummary and the CLI's reports: the first failure or inconclusive gate,
        else the count."""
        failed = self.failed()
        if failed:
            # Error: an unreadable provider, not a bad canary
            what = "error" if failed[0].verdict == "Error" else "failed"
            return f"{failed[0].name} {what}" + (f" (+{len(failed) - 1})" if len(failed) > 1 else "")
        unsure = self.inconclusive()
        if unsure:
            more = f" (+{len(unsure) - 1})" if len(unsure) > 1 else ""
            return f"{unsure[0].name} inconclusive{more}"
        warned = sum(r.warning for r in self.results)
        text = f"{len(self.results)}/{len(self.results)} passed"
        return text + (f", {warned} warned" if warned else "")


def _close(a: float, b: float) -> bool:
    """Equal within float noise: 0.86 - 0.85 is 0.010000000000000009, and a limit of 0.01 must admit it."""
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _missing(
    name: str, what: str, threshold: float | None, prof: Profile, why: str | None = None
) -> GateResult:
    """A gate without its data: fails closed in staging/production, warns in development."""
    text = why or f"no {what} reported"
    if prof.fail_closed:
        return GateResult(name=name, passed=False, threshold=threshold, message=f"{text}: failing closed")
    return GateResult(name=name, passed=True, warning=True, threshold=threshold, message=text)


def _at_most(name: str, observed: float | None, limit: float, what: str, prof: Profile) -> GateResult:
    if observed is None:
        return _missing(name, what, limit, prof)
    ok = observed <= limit or _close(observed, limit)
    message = f"{what} {observed:g} {'<=' if ok else '>'} {limit:g}"
    return GateResult(name=name, passed=ok, observed=observed, threshold=limit, message=message)


def _at_least(name: str, observed: float | None, floor: float, what: str, prof: Profile) -> GateResult:
    if observed is None:
        return _missing(name, what, floor, prof)
    ok = observed >= floor or _close(observed, floor)
    message = f"{what} {observed:g} {'>=' if ok else '<'} {floor:g}"
    return GateResult(name=name, passed=ok, observed=observed, threshold=floor, message=message)


def _score(
    value: float | None, fail_bound: float, pass_bound: float, higher: bool, metric: str
) -> GateResult:
    """Between the fail bound (minScore) and the pass bound (passScore): Inconclusive, a person decides.
    On a bound counts as its side: minScore itself is not a failure, passScore itself passes."""
    name = "quality.score"
    if value is None:
        raise ValueError("judged without a value")  # the caller handles missing data first
    worse_than_fail = value < fail_bound if higher else value > fail_bound
    reaches_pass = value >= pass_bound if higher else value <= pass_bound
    if worse_than_fail and not _close(value, fail_bound):
        message = f"{metric} {value:g} {'<' if higher else '>'} {fail_bound:g}"
        return GateResult(name=name, passed=False, observed=value, threshold=fail_bound, message=message)
    if reaches_pass or _close(value, pass_bound):
        message = f"{metric} {value:g} {'>=' if higher else '<='} {pass_bound:g}"
        return GateResult(name=name, passed=True, observed=value, threshold=pass_bound, message=message)
    low, high = sorted((fail_bound, pass_bound))
    return GateResult(
        name=name,
        passed=False,
        verdict="Inconclusive",
        observed=value,
        threshold=pass_bound,
        message=f"{metric} {value:g} is between {low:g} and {high:g}: inconclusive, a person decides",
    )


def judge(spec: CarbonTrackedJobSpec, evidence: Evidence) -> Report:
    """Every configured gate, in a stable order: quality, tests and security, privacy, carbon."""
    gates = spec.gates
    prof = profile_for(gates.context, gates.thresholds)
    out: list[GateResult] = []
    if gates.quality is not None:
        out += _quality(gates.quality, evidence.metrics, prof)
    if gates.tests is not None:
        out += _ci_results(evidence.tests or CiResults(), prof)
    if gates.privacy is not None:
        out.append(_privacy(gates.privacy.epsilon, spec.total_steps, evidence, prof))
    if spec.carbon.budget_kg is not None:
        out.append(_carbon(spec, evidence, prof))
    if spec.carbon.max_grams_per_metric_point is not None:
        out.append(_per_point(spec.carbon.max_grams_per_metric_point, evidence, prof))
    return Report(tuple(out))


def _quality(q: QualityGate, metrics: Mapping[str, float], prof: Profile) -> list[GateResult]:
    """The score against its bounds, then each comparison with the baseline model the spec sets up."""
    score = _quality_score(q, metrics.get(q.metric), prof)
    versus = [c.judge(prof) for c in _versus_baseline(q, metrics, prof) if c.baseline is not None]
    return versus if score is None else [score, *versus]


def _quality_score(q: QualityGate, value: float | None, prof: Profile) -> GateResult | None:
    """minScore alone is a floor (a ceiling when lower is better); with passScore, a band between."""
    if q.min_score is not None and q.pass_score is not None and value is not None:
        return _score(value, q.min_score, q.pass_score, q.higher_is_better, q.metric)
    if q.min_score is None:
        return None
    if value is None or q.higher_is_better:
        return _at_least("quality.score", value, q.min_score, q.metric, prof)
    return _at_most("quality.score", value, q.min_score, q.metric, prof)


@dataclass(frozen=True)
class _VersusBaseline:
    """One quality gate against the baseline model: how much worse the canary is, and the most allowed."""

    name: str
    what: str
    baseline: float | None
    """None: the spec does not set this baseline, and the gate is off."""
    observed: float | None
    worse_when_higher: bool
    relative: bool
    """The worsening as a fraction of the baseline (else in the metric's units)."""
    limit: float

    def judge(self, prof: Profile) -> GateResult:
        return _at_most(self.name, self.worsening(), self.limit, self.what, prof)

    def worsening(self) -> float | None:
        """How much worse than the baseline the canary is (negative: better); None without a value."""
        if self.observed is None or self.baseline is None:
            return None
        worse = self.observed - self.baseline if self.worse_when_higher else self.baseline - self.observed
        return worse / self.baseline if self.relative else worse


def _limit(override: float | None, profile_limit: float) -> float:
    """The spec's limit where it sets one, else the context profile's."""
    return profile_limit if override is None else override


def _versus_baseline(
    q: QualityGate, metrics: Mapping[str, float], prof: Profile
) -> tuple[_VersusBaseline, ...]:
    """The comparisons with the baseline model, in the order they are reported."""
    return (
        _VersusBaseline(
            "quality.regression",
            f"{q.metric} regression vs baseline",
            q.baseline,
            metrics.get(q.metric),
            worse_when_higher=not q.higher_is_better,
            relative=False,
            limit=_limit(q.max_regression, prof.max_regression),
        ),
        _VersusBaseline(
            "quality.latency",
            "relative latency increase",
            q.baseline_latency_ms,
            metrics.get("latency_ms"),
            worse_when_higher=True,
            relative=True,
            limit=_limit(q.max_latency_increase, prof.max_latency_increase),
        ),
        _VersusBaseline(
            "quality.throughput",
            f"relative {q.throughput_metric} decrease",
            q.baseline_samples_per_second,
            metrics.get(q.throughput_metric),
            worse_when_higher=False,
            relative=True,
            limit=_limit(q.max_throughput_decrease, prof.max_throughput_decrease),
        ),
        _VersusBaseline(
            "quality.memory",
            f"relative {q.memory_metric} increase",
            q.baseline_memory_mb,
            metrics.get(q.memory_metric),
            worse_when_higher=True,
            relative=True,
            limit=_limit(q.max_memory_increase, prof.max_memory_increase),
        ),
    )


def _ci_results(t: CiResults, prof: Profile) -> list[GateResult]:
    """Pass rate and coverage against their floors, findings by severity against their caps. Low findings
    are shown, and gated only where thresholds.maxLow sets a cap."""
    out = [
        _at_least("tests.passRate", t.pass_rate, prof.min_pass_rate, "test pass rate", prof),
        _at_least("tests.coverage", t.coverage, prof.min_coverage, "coverage", prof),
        _at_most("security.critical", t.critical, prof.max_critical, "critical findings", prof),
        _at_most("security.high", t.high, prof.max_high, "high findings", prof),
        _at_most("security.medium", t.medium, prof.max_medium, "medium findings", prof),
    ]
    if prof.max_low is not None:
        out.append(_at_most("security.low", t.low, prof.max_low, "low findings", prof))
    elif t.low is not None:
        message = f"low findings {t.low} (no limit: set thresholds.maxLow to gate them)"
        out.append(GateResult(name="security.low", passed=True, observed=t.low, message=message))
    return out


def _privacy(budget: float, total_steps: int, evidence: Evidence, prof: Profile) -> GateResult:
    """Epsilon projected to totalSteps against the budget; what the job claims is shown beside it."""
    what = f"epsilon projected to step {total_steps}"
    result = _at_most("privacy.epsilon", evidence.epsilon_projected, budget, what, prof)
    if evidence.epsilon_claimed is None:
        return result
    message = f"{result.message} (the job claims {evidence.epsilon_claimed:g})"
    return result.model_copy(update={"message": message})


def _energy_missing(evidence: Evidence) -> str | None:
    """Why the job's energy is not a measurement of the whole job, or None: a sidecar measuring nothing
    (method unavailable), or running pods whose sidecars' telemetry is not counted (none accepted, or a
    sidecar boot held out: core.rollout.coverage)."""
    if not evidence.energy_measured:
        return "energy was not measured (a sidecar reports method unavailable)"
    pods = evidence.unmeasured_pods
    if not pods:
        return None
    shown = ", ".join(pods[:3]) + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")
    return (
        f"{len(pods)} running pod(s) unmeasured ({shown}): no telemetry counted from them, so the "
        "job's energy is a lower bound"
    )


def _per_point(limit: float, evidence: Evidence, prof: Profile) -> GateResult:
    """gCO2e per unit of the quality metric gained since its first report vs the bound. No gain yet is
    not missing data but an infinite cost: it fails (energy went in, nothing came out)."""
    name = "carbon.perMetricPoint"
    e = evidence.efficiency
    if (why := _energy_missing(evidence)) is not None:
        return _missing(name, "energy", limit, prof, why)
    if e is None:
        return _missing(
            name, "quality metric", limit, prof, "the quality metric has not been reported twice yet"
        )
    if e.grams_per_metric_point is None:
        message = (
            f"{e.metric} gained {e.gain:g} since step {e.reference_step}: "
            f"{e.emissions_grams:.3g} gCO2e spent for no gain"
        )
        return GateResult(name=name, passed=False, threshold=limit, message=message)
    what = f"gCO2e per unit of {e.metric} gained since step {e.reference_step}"
    return _at_most(name, e.grams_per_metric_point, limit, what, prof)


def _carbon(spec: CarbonTrackedJobSpec, evidence: Evidence, prof: Profile) -> GateResult:
    """Projected emissions vs the budget. Energy that is not the whole job's (a sidecar measuring
    nothing, an unmeasured pod) is missing data; board energy of a MIG or shared GPU is not the job's
    alone: unmeasured (fail closed) in staging/production unless the spec accepts it; production judges
    the projection's upper bound (the stated uncertainty of the measurement methods)."""
    limit = spec.carbon.budget_kg * 1000 if spec.carbon.budget_kg is not None else 0.0
    what = f"projected gCO2e at step {spec.total_steps}"
    if (why := _energy_missing(evidence)) is not None:
        return _missing("carbon.budget", "energy", limit, prof, why)
    if evidence.shared_gpu_energy_j > 0 and not spec.carbon.accept_shared_gpu_energy:
        why = (
            f"{evidence.shared_gpu_energy_j:.0f} J of the energy is board energy of a MIG or shared GPU, not "
            "this job's alone (set spec.carbon.acceptSharedGpuEnergy: true to accept it as an upper bound)"
        )
        if prof.fail_closed:
            return GateResult(
                name="carbon.budget", passed=False, threshold=limit, message=f"unmeasured: {why}"
            )
        warned = _at_most("carbon.budget", evidence.emissions_projected_g, limit, what, prof)
        return warned.model_copy(update={"warning": True, "message": f"{warned.message}; {why}"})
    if spec.gates.context == "production" and evidence.emissions_projected_upper_g is not None:
        return _at_most(
            "carbon.budget", evidence.emissions_projected_upper_g, limit, f"{what} (upper bound)", prof
        )
    return _at_most("carbon.budget", evidence.emissions_projected_g, limit, what, prof)
