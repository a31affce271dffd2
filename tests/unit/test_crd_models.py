"""The pydantic models accept what the CRD accepts and refuse what it refuses."""

from __future__ import annotations

from pathlib import Path

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
    """Every node has a type, and nothing the apiserver refuses in a structural schema is left."""
    version = crd_manifest()["spec"]["versions"][0]
    banned = {"$ref", "anyOf", "oneOf", "allOf", "additionalProperties", "title", "$defs"}

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert not banned & node.keys(), f"{path}: {banned & node.keys()}"
            if "properties" in node or "items" in node:
                assert "type" in node, path
            for key, sub in node.get("properties", {}).items():
                assert "type" in sub, f"{path}.{key}"
                walk(sub, f"{path}.{key}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

    walk(version["schema"]["openAPIV3Schema"], "")


def test_printer_columns_tell_the_story() -> None:
    columns = [c["name"] for c in crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Replicas", "Steps", "kWh", "kgCO2e", "Epsilon", "Gates", "Age"]


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
