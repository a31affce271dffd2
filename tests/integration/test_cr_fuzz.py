"""CarbonTrackedJobs drawn from the CRD schema (generated from the pydantic models), applied to the real
apiserver and reconciled by the session's operator: whatever the spec, the operator stays up, handles
it without an unexpected exception, and says what became of it (a phase, or a condition saying why not).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml
from hack.controlplane import ControlPlane
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cases.crs import TEMPLATE, manifest
from tests.cases.schema_strategy import TEXT, from_schema
from tests.integration.harness import Operator, apply, wait

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 40


def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "carbontrackedjobs.carbontrack.io.yaml").read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def _with(path: list[str], value: Any) -> dict[str, Any]:
    t = copy.deepcopy(TEMPLATE)
    node: Any = t
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return t


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(TEXT, max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=8), inner, max_size=3),
    max_leaves=12,
)
templates = st.one_of(
    st.just(TEMPLATE),  # well-formed, weighted up: the PodTemplateSpec schema refuses most invented ones
    st.just(TEMPLATE),
    st.just(TEMPLATE),
    st.just(_with(["spec", "containers"], [])),  # no containers: the apiserver refuses the Job
    st.just(_with(["spec", "containers"], [{"name": "trainer"}])),  # no image
    st.just(_with(["spec", "containers", 0, "name"], "carbontrack-sidecar")),  # collides with the sidecar
    st.just(_with(["spec", "restartPolicy"], "Always")),  # a Job's pods may not restart Always
    st.just(_with(["metadata"], {"labels": {"carbontrack.io/job": "someone-else"}})),
    st.dictionaries(st.text(TEXT, max_size=10), json_values, max_size=4),  # anything at all
)

# durations as a user writes them: the longest allowed in each unit, just past it, and far past it (the
# CEL limit refuses those), besides any the pattern admits
durations = st.one_of(
    st.sampled_from(["8760h", "525600m", "31536000s", "8761h", "99999999999h", "90m", "1h30m"]),
    st.from_regex(r"\A([0-9]{1,11}[smh]){1,2}\Z"),
)
DURATIONS = {f"carbon.schedule.{field}": durations for field in ("maxDelay", "window", "pauseAbove.after")}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(from_schema(spec_schema(), {"template": templates, **DURATIONS}))
    canary = spec.get("canary")
    if canary and "stages" in canary:  # mostly well-formed stages, so most CRs get past the CEL rules
        canary["stages"] = sorted(set(canary["stages"]) | {100}) if draw(st.booleans()) else canary["stages"]
    # mostly past the "a production job needs a gate" rule too (the schema's defaults make every drawn
    # job production, and few draws carry a gate), so most CRs reach the operator
    gates = spec.setdefault("gates", {})
    if gates.get("allowEmpty") is not True and draw(st.integers(0, 7)) > 0:
        gates["allowEmpty"] = True
    if draw(st.integers(0, 3)) > 0:  # drawn gate blocks mostly break a CEL rule: keep them in one in four
        spec["gates"] = {k: v for k, v in gates.items() if k in ("allowEmpty", "context")}
    # keep the test's cluster small: only tiny jobs may run pods, every other one starts suspended
    workers = (canary or {}).get("replicas", 1)
    if workers > 2 or spec["replicas"] > 4:
        spec["suspend"] = True
    return spec


def _bare(spec: dict[str, Any]) -> dict[str, Any]:
    """The drawn template, sizes and suspend with no optional block: past every cross-field rule."""
    bare = {k: spec[k] for k in ("template", "replicas", "totalSteps", "suspend") if k in spec}
    bare["gates"] = {"allowEmpty": True}
    bare["canary"] = {"replicas": 1}
    return bare


def _outcome(obj: dict[str, Any]) -> str | None:
    """What became of a CR: the Ready=False condition's reason and message, else its phase."""
    st_ = obj.get("status") or {}
    for c in st_.get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "False" and c.get("message"):
            return f"{c['reason']}: {c['message']}"
    return st_.get("phase")


def _every_outcome(cluster: ControlPlane, namespace: str, accepted: set[str]) -> dict[str, str]:
    """Each accepted CR's outcome, once every one has one (2 min at most; the stuck ones named if not)."""

    def items() -> list[dict[str, Any]]:
        return list(json.loads(cluster.kubectl("get", "ctj", "-n", namespace, "-o", "json").stdout)["items"])

    def all_settled() -> dict[str, str] | None:
        seen = {i["metadata"]["name"]: _outcome(i) for i in items() if i["metadata"]["name"] in accepted}
        if len(seen) == len(accepted) and all(seen.values()):
            return {name: str(outcome) for name, outcome in seen.items()}
        return None

    try:
        return dict(wait(all_settled, timeout=120, what="every fuzzed CR has a phase or a condition"))
    except AssertionError:
        stuck = {i["metadata"]["name"]: i.get("spec") for i in items() if not _outcome(i)}
        raise AssertionError(f"no outcome for: {json.dumps(stuck)[:3000]}") from None


def test_schema_valid_crs_never_crash_the_operator_and_each_says_what_became_of_it(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    log_offset = operator.logs.stat().st_size
    accepted: dict[str, dict[str, Any]] = {}
    refused: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(specs())
    def create(spec: dict[str, Any]) -> None:
        name = f"fz-{len(accepted) + len(refused)}"
        obj = manifest(name, spec)
        result = apply(cluster, namespace, obj)
        if result.returncode == 0:
            accepted[name] = spec
            return
        # CEL rules: a clear message naming the field
        assert "spec." in result.stderr or "spec" in result.stderr, result.stderr
        refused.append(result.stderr.strip().splitlines()[-1])
        # and the same draw without its optional blocks, so most draws still reach the operator however
        # many cross-field rules the schema grows (each new one refused more of the raw draws)
        bare = _bare(spec)
        result = apply(cluster, namespace, {**obj, "metadata": {"name": f"{name}-b"}, "spec": bare})
        if result.returncode == 0:
            accepted[f"{name}-b"] = bare

    create()
    assert len(accepted) >= EXAMPLES // 2, refused
    outcomes = _every_outcome(cluster, namespace, set(accepted))
    time.sleep(2)  # a few promotion-timer rounds over all of them
    assert operator.proc is not None and operator.proc.poll() is None, "the operator died"
    log = operator.logs.read_bytes()[log_offset:].decode(errors="replace")
    unexpected = [
        line for line in log.splitlines() if "Traceback" in line or "failed with an exception" in line
    ]
    assert not unexpected, "\n".join(unexpected[:5]) + "\n" + json.dumps(outcomes, indent=1)[:3000]
    print(f"{len(accepted)} accepted, {len(refused)} refused by CEL; outcomes: "
          f"{sorted({o.split(':')[0] for o in outcomes.values()})}")  # fmt: skip
