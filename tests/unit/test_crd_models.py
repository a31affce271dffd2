"""The pydantic models accept what the CRD accepts and refuse what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from carbontrack.api.crd import CarbonTrackedJob, CarbonTrackedJobSpec
from carbontrack.api.crdgen import CRD_PATHS, crd_manifest, crd_yaml
from tests.cases.crs import MALFORMED, Malformed, manifest, ungated, valid_spec

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", CRD_PATHS)
def test_committed_crd_matches_models(path: str) -> None:
    committed = (ROOT / path).read_text()
    assert committed == crd_yaml(), f"{path} is stale: run `carbontrack crd` and commit the result"


def test_valid_spec_parses_with_defaults() -> None:
    # allowEmpty: a production job with no gate at all is refused without it (test below)
    spec = CarbonTrackedJobSpec.model_validate(
        {"replicas": 2, "template": {}, "totalSteps": 10, "gates": {"allowEmpty": True}}
    )
    assert spec.canary.replicas == 1
    assert spec.canary.stages == [25, 50, 100]
    assert spec.carbon.pue == 1.2
    assert spec.gates.context == "production"
    assert spec.suspend is False


def test_full_example_round_trips_by_alias() -> None:
    job = CarbonTrackedJob.model_validate(manifest("full", valid_spec()))
    again = CarbonTrackedJob.model_validate(job.to_api())
    assert again == job
    assert job.to_api()["spec"]["canary"]["minSteps"] == 200  # type: ignore[index]


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_malformed_spec_is_refused_naming_the_field(case: Malformed) -> None:
    with pytest.raises(ValidationError) as err:
        CarbonTrackedJobSpec.model_validate(case.spec)
    # pydantic names the field by its alias path (e.g. gates.privacy.epsilon) or in the message
    text = str(err.value)
    leaf = case.field.removeprefix("spec.")
    assert leaf.split(".")[-1] in text, text


def test_schema_is_structural() -> None:
    """Every node has a type, and nothing the apiserver refuses in a structural schema is left.

    The vendored pod template (Kubernetes' own schema) is checked by the structural rules themselves in
    the next test: it needs the maps and int-or-strings that pydantic's models never produce."""
    version = crd_manifest()["spec"]["versions"][0]
    banned = {"$ref", "anyOf", "oneOf", "allOf", "additionalProperties", "title", "$defs"}

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert not banned & node.keys(), f"{path}: {banned & node.keys()}"
            if "properties" in node or "items" in node:
                assert "type" in node, path
            for key, sub in node.get("properties", {}).items():
                assert "type" in sub, f"{path}.{key}"
                if f"{path}.{key}" != ".spec.template":
                    walk(sub, f"{path}.{key}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

    walk(version["schema"]["openAPIV3Schema"], "")


def test_pod_template_schema_is_structural_and_complete() -> None:
    """The structural-schema rules (Kubernetes' apiextensions), over the vendored PodTemplateSpec."""
    version = crd_manifest()["spec"]["versions"][0]
    template = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"]
    banned = {"$ref", "anyOf", "oneOf", "allOf", "not", "title", "$defs", "default", "nullable"}
    seen = 0

    def walk(node: dict[str, Any], path: str) -> None:
        nonlocal seen
        seen += 1
        assert not banned & node.keys(), f"{path}: {banned & node.keys()}"
        assert node.get("description", "x"), path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            return
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if key in node:
                walk(node[key], f"{path}{'[]' if key == 'items' else '.*'}")

    walk(template, "spec.template")
    assert seen > 1000  # the whole PodSpec, not a stub
    containers = template["properties"]["spec"]["properties"]["containers"]
    assert containers["items"]["required"] == ["name"]
    assert "nodeSelector" in template["properties"]["spec"]["properties"]
    labels = template["properties"]["metadata"]["properties"]["labels"]
    assert labels["additionalProperties"] == {"type": "string"}


def test_vendored_pod_template_is_what_the_generator_makes() -> None:
    """podtemplatespec.json is make_podtemplate's output for the pinned Kubernetes' OpenAPI document."""
    from carbontrack.api import make_podtemplate
    from carbontrack.api.podtemplate import pod_template_schema

    source = make_podtemplate.default_input()
    if not source.exists():
        pytest.skip(f"{source} is not downloaded (make setup)")
    generated = make_podtemplate.generate(json.loads(source.read_text()))
    assert generated == pod_template_schema(), "run `python -m carbontrack.api.make_podtemplate`"


def test_the_operator_accepts_what_the_apiserver_accepts_in_a_template() -> None:
    """Maps, quantities as integers or strings, int-or-string ports, nulls: all fine."""
    template = {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}},
        "spec": {
            "nodeSelector": {"gpu": "h100"},
            "containers": [{
                "name": "t", "image": "i", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "500m", "memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}}, "readinessProbe": None,
            }],
        },
    }  # fmt: skip
    assert CarbonTrackedJobSpec.model_validate(valid_spec(template=template)).template == template


def test_printer_columns_tell_the_story() -> None:
    columns = [c["name"] for c in crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Replicas", "Steps", "kWh", "kgCO2e", "Epsilon", "Gates", "Schedule", "Age"]


def test_scale_subresource_points_at_replicas() -> None:
    scale = crd_manifest()["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


@pytest.mark.parametrize(
    "gates", [{"allowEmpty": True}, {"context": "staging"}, {"context": "development"}], ids=str
)
def test_a_job_without_gates_is_accepted_when_allowed_or_not_production(gates: dict[str, object]) -> None:
    spec = CarbonTrackedJobSpec.model_validate(ungated(None, gates))
    assert spec.gates.quality is None and spec.gates.tests is None and spec.carbon.budget_kg is None


def test_a_carbon_budget_alone_is_a_gate_in_production() -> None:
    spec = ungated("production")
    spec["carbon"]["budgetKg"] = 40
    assert CarbonTrackedJobSpec.model_validate(spec).gates.allow_empty is False


def test_a_quality_gate_judged_against_its_baseline_needs_no_min_score() -> None:
    spec = valid_spec()
    spec["gates"]["quality"] = {"metric": "eval_loss", "higherIsBetter": False, "baseline": 1.9}
    assert CarbonTrackedJobSpec.model_validate(spec).gates.quality is not None


def test_a_production_job_without_gates_names_allow_empty() -> None:
    with pytest.raises(ValidationError) as err:
        CarbonTrackedJobSpec.model_validate(ungated("production"))
    assert "gates.allowEmpty: true" in str(err.value)
