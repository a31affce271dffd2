"""`carbontrack report`: the model-card block, CodeCarbon's CSV and JSON, against their schemas."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
import yaml

from carbontrack.api.crd import CarbonTrackedJob
from carbontrack.cli.main import build_parser
from carbontrack.cli.report import render
from carbontrack.core.reports.report import (
    CODECARBON_COLUMNS,
    RunReport,
    codecarbon_csv,
    codecarbon_row,
    hardware_used,
    model_card,
    model_card_yaml,
    run_report,
)
from tests.cases.crs import manifest, valid_spec

# The Hub's documented shape (docs/hub/model-cards-co2): emissions a number in grams, the rest strings.
HUB_CO2_KEYS = {"emissions": (int, float), "source": str, "training_type": str,
                "geographical_location": str, "hardware_used": str}  # fmt: skip


def finished_job(**status: Any) -> dict[str, Any]:
    gpus = [
        {"uuid": f"GPU-{i}", "index": i % 2, "pod": f"p{i // 2}", "sharing": "exclusive",
         "method": "energy-counter", "name": "NVIDIA H100 80GB HBM3"}
        for i in range(4)
    ]  # fmt: skip
    body: dict[str, Any] = {
        "phase": "Succeeded", "steps": 20000, "energyJoules": 36_000_000.0, "emissionsGrams": 3744.0,
        "intensity": {"gramsPerKwh": 312.0, "zone": "DE", "source": "electricitymaps"}, "gpus": gpus,
        "telemetry": {"lastBatchAt": "2026-01-01T02:00:00Z"},
    }  # fmt: skip
    body.update(status)
    metadata = {"namespace": "ml", "uid": "6f1c-uid", "creationTimestamp": "2026-01-01T00:00:00Z"}
    return {**manifest("llama", valid_spec(), **metadata), "status": body}


def test_model_card_block_has_the_hub_shape_and_grams() -> None:
    text = render(finished_job(), "model-card", "fine-tuning")
    doc = yaml.safe_load(text)
    assert list(doc) == ["co2_eq_emissions"]
    block = doc["co2_eq_emissions"]
    assert set(block) == set(HUB_CO2_KEYS)
    for key, kind in HUB_CO2_KEYS.items():
        assert isinstance(block[key], kind), key
    assert block == {
        "emissions": 3744.0,
        "source": "carbontrack",
        "training_type": "fine-tuning",
        "geographical_location": "grid zone DE",
        "hardware_used": "4 x NVIDIA H100 80GB HBM3",
    }


def test_model_card_block_is_accepted_by_huggingface_hub_card_data() -> None:
    hub = pytest.importorskip("huggingface_hub")
    block = yaml.safe_load(render(finished_job(), "model-card", "pre-training"))
    card = hub.ModelCardData(**block)
    again = yaml.safe_load(card.to_yaml())
    assert again["co2_eq_emissions"]["emissions"] == 3744.0
    assert again["co2_eq_emissions"]["training_type"] == "pre-training"


def test_training_type_comes_from_the_annotation_unless_the_flag_names_one() -> None:
    obj = finished_job()
    obj["metadata"]["annotations"] = {"carbontrack.io/training-type": "pre-training"}
    assert (
        yaml.safe_load(render(obj, "model-card", None))["co2_eq_emissions"]["training_type"] == "pre-training"
    )
    assert yaml.safe_load(render(obj, "model-card", "fine-tuning"))["co2_eq_emissions"]["training_type"] == (
        "fine-tuning"
    )
    obj["metadata"]["annotations"] = {"carbontrack.io/training-type": "pretraining"}
    with pytest.raises(ValueError, match=r"training-type='pretraining': must be pre-training or fine-tuning"):
        render(obj, "model-card", None)  # refused, not silently fine-tuning
    assert yaml.safe_load(render(obj, "model-card", "pre-training"))["co2_eq_emissions"]["training_type"] == (
        "pre-training"
    )


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ((), "unknown"),
        (("NVIDIA A100-SXM4-40GB",), "1 x NVIDIA A100-SXM4-40GB"),
        (("B", "A", "A"), "2 x A, 1 x B"),
        (("", "A"), "1 x A, 1 x GPU (model not reported)"),
    ],
)
def test_hardware_used_counts_gpus_by_model(names: tuple[str, ...], expected: str) -> None:
    assert hardware_used(names) == expected


def test_csv_has_codecarbons_header_and_units() -> None:
    rows = list(csv.DictReader(io.StringIO(render(finished_job(), "csv", None))))
    assert len(rows) == 1
    row = rows[0]
    assert tuple(row) == CODECARBON_COLUMNS
    assert row["timestamp"] == "2026-01-01T02:00:00"
    assert row["project_name"] == "ml"
    assert row["run_id"] == "6f1c-uid"
    assert float(row["duration"]) == 7200.0
    assert float(row["emissions"]) == pytest.approx(3.744)  # kg
    assert float(row["emissions_rate"]) == pytest.approx(3.744 / 7200)  # kg/s
    assert float(row["gpu_energy"]) == pytest.approx(10.0)  # kWh
    assert float(row["energy_consumed"]) == pytest.approx(12.0)  # kWh with PUE 1.2
    assert float(row["gpu_power"]) == pytest.approx(5000.0)  # W, average over the run
    assert row["gpu_count"] == "4"
    assert row["gpu_model"] == "4 x NVIDIA H100 80GB HBM3"
    assert row["region"] == "DE"
    assert row["pue"] == "1.2"
    assert row["cpu_power"] == row["ram_energy"] == row["os"] == ""  # not measured: never guessed


def test_csv_of_a_job_without_telemetry_leaves_duration_empty() -> None:
    obj = finished_job(telemetry=None, gpus=[])
    row = next(csv.DictReader(io.StringIO(render(obj, "csv", None))))
    assert row["duration"] == row["emissions_rate"] == row["timestamp"] == ""
    assert row["gpu_count"] == "0"


def test_json_report_carries_totals_in_base_units_and_the_card_block() -> None:
    doc = json.loads(render(finished_job(), "json", "fine-tuning"))
    assert doc["durationSeconds"] == 7200.0
    assert doc["energyKwh"] == 10.0
    assert doc["emissionsGrams"] == 3744.0
    assert doc["startedAt"] == "2026-01-01T00:00:00Z"
    assert doc["endedAt"] == "2026-01-01T02:00:00Z"
    assert doc["intensity"] == {"gramsPerKwh": 312.0, "source": "electricitymaps"}
    assert doc["co2_eq_emissions"]["emissions"] == 3744.0


def test_job_without_status_is_refused_with_a_message() -> None:
    obj = finished_job()
    del obj["status"]
    with pytest.raises(ValueError, match="no status yet"):
        render(obj, "json", None)


def test_cli_parses_report_flags() -> None:
    args = build_parser().parse_args(["report", "llama", "-n", "ml", "--format", "csv"])
    assert (args.name, args.namespace, args.format, args.training_type) == ("llama", "ml", "csv", None)


def test_row_and_block_from_the_dataclass_directly() -> None:
    r = run_report(CarbonTrackedJob.model_validate(finished_job()))
    assert isinstance(r, RunReport)
    assert model_card(r, "fine-tuning")["co2_eq_emissions"]["emissions"] == 3744.0
    assert codecarbon_row(r)["gpu_count"] == 4
    assert codecarbon_csv(r).splitlines()[0] == ",".join(CODECARBON_COLUMNS)
    assert model_card_yaml(r, "fine-tuning").startswith("co2_eq_emissions:\n  emissions: 3744.0\n")
