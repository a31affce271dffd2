"""The conditions a judgement round reports beside its decision, each with the Event posted once.

Each function returns (conditions, events): the condition while its problem lasts and True once it is
fixed, nothing for a job it never concerned; the Event only the first time (`warned`: the False
condition is already in status, so its Event was posted).
"""

from __future__ import annotations

from carbontrack.api.contract import SIDECAR_NAME
from carbontrack.core.accounting.aggregation import JobAggregate, Verdict
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.rollout.coverage import Coverage, named

Signals = tuple[tuple[ConditionUpdate, ...], tuple[Event, ...]]
"""(conditions to set, Events to post)."""


def zone_resolved(zone: str, known: bool, warned: bool, intensity_g_per_kwh: float) -> Signals:
    """ZoneResolved: a misspelt zone must not bill the world average with only a hint in a source."""
    if known:
        if not warned:
            return (), ()
        return (ConditionUpdate("ZoneResolved", True, "ZoneKnown", f"grid zone {zone}"),), ()
    message = (
        f"grid zone {zone!r} is in no intensity table: emissions use the world average, "
        f"{intensity_g_per_kwh:g} gCO2e/kWh; set spec.carbon.zone to a known zone"
    )
    condition = ConditionUpdate("ZoneResolved", False, "UnknownZone", message)
    return (condition,), () if warned else (Event("Warning", "UnknownZone", message),)


def intensity_resolved(problem: str | None, warned: bool) -> Signals:
    """IntensityResolved: a live provider whose key cannot be read (a 403 on the job's Secret) leaves the
    job on the static table's figure, and the condition and one Event say so, not only a log line."""
    if problem is None:
        if not warned:
            return (), ()
        ok = ConditionUpdate(
            "IntensityResolved", True, "ProviderKeyRead", "the intensity provider's key was read"
        )
        return (ok,), ()
    condition = ConditionUpdate("IntensityResolved", False, "SecretUnreadable", problem)
    if warned:
        return (condition,), ()
    return (condition,), (Event("Warning", "IntensitySecretUnreadable", problem),)


def telemetry_accepted(aggregate: JobAggregate, warned: bool) -> Signals:
    """TelemetryAccepted: status had no room for a pod or a source (core.accounting.folding), so the
    totals may miss its energy; said in a condition and once in an Event, not only in a counter. The
    message carries no count (status.telemetry.refused has them), so an ongoing refusal does not rewrite
    it every round."""
    refusals = aggregate.capacity_refusals()
    limits = aggregate.limits
    if not refusals:
        if not warned:
            return (), ()
        return (
            ConditionUpdate("TelemetryAccepted", True, "AllAccepted", "status has room for telemetry"),
        ), ()
    parts = []
    if Verdict.TOO_MANY_PODS in refusals:
        parts.append(f"batches from pods beyond the {limits.pods_per_job} a job's status holds")
    if Verdict.STATUS_FULL in refusals:
        parts.append(
            f"new sources that would take status.telemetry past {limits.status_budget_bytes} bytes "
            "(of etcd's 1.5 MiB per object)"
        )
    reason = "PodLimit" if refusals.keys() == {Verdict.TOO_MANY_PODS} else "StatusSizeLimit"
    if len(refusals) > 1:
        reason = "StatusLimits"
    message = (
        f"telemetry refused for room: {' and '.join(parts)}; their energy is not in the totals "
        "(status.telemetry.refused counts the batches; their sidecars keep sending cumulative counters)"
    )
    condition = ConditionUpdate("TelemetryAccepted", False, reason, message)
    return (condition,), () if warned else (Event("Warning", "TelemetryRefused", message),)


def pods_measured(cov: Coverage | None, fails_closed: bool, shown: str | None) -> Signals:
    """PodsMeasured: a running pod no telemetry was accepted from within the grace period, or one whose
    sidecar boot is held out of its places (core.rollout.coverage), makes the job's energy a lower bound.
    The condition names the pods; its Event is posted whenever the message changes (`shown`: the message
    of the False condition already in status), so a newly unmeasured pod is said. Pods not listed this
    round (`cov` None) leave the condition as it is."""
    if cov is None:
        return (), ()
    if not cov.unmeasured:
        if shown is None:
            return (), ()
        ok = ConditionUpdate("PodsMeasured", True, "AllPodsReporting", "every running pod sends telemetry")
        return (ok,), ()
    consequence = (
        "the carbon gates and the budget watch fail closed"
        if fails_closed
        else "development context: the carbon gates pass with a warning"
    )
    silent = [name for name in cov.unmeasured_names() if name not in cov.held_out]
    why = (
        [f"{named(silent)}: no telemetry batch accepted within {cov.grace_s:g} s of their start"]
        if silent
        else []
    )
    if cov.held_out:
        why.append(
            f"{named(cov.held_out)}: a sidecar boot refused a place (429 live-boots) for two live windows "
            "while other boots of the pod stay live"
        )
    message = (
        f"{len(cov.unmeasured)} running pod(s) unmeasured: {'; '.join(why)}, so the job's energy is a lower "
        f"bound and {consequence}; check the pods' {SIDECAR_NAME} container (its logs) and that it can reach "
        "the operator"
        + (", and who holds the pod's token (status.telemetry.refused.liveBoots)" if cov.held_out else "")
    )
    condition = ConditionUpdate("PodsMeasured", False, "PodsUnmeasured", message)
    if message == shown:
        return (condition,), ()
    return (condition,), (Event("Warning", "PodsUnmeasured", message),)
