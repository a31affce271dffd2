"""A finished (or running) job's carbon figures in the shapes other tools read; pure, no I/O.

- `model_card`: the `co2_eq_emissions` block of a Hugging Face model card's metadata, as the Hub
  documents it (docs/hub/model-cards-co2): `emissions` in grams of CO2e, `source`, `training_type`
  (pre-training | fine-tuning), `geographical_location`, `hardware_used`.
- `codecarbon_row`: one row with the columns of CodeCarbon's emissions.csv (version 2.x), in its units
  (duration s, emissions kg, emissions_rate kg/s, power W, energy kWh), so a notebook or dashboard that
  reads emissions.csv reads ours. carbontrack measures the job's GPUs only: the CPU and RAM columns and
  what it cannot know (the OS, the trainer's Python) stay empty rather than guessed.
- `as_json`: everything above in one object, camelCase like the status it comes from.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import yaml

from carbontrack.api.crd import CarbonTrackedJob
from carbontrack.api.model_card import TrainingType, co2_eq_emissions, gpu_models
from carbontrack.api.model_card import hardware_used as _hardware_used
from carbontrack.core.accounting.emissions import kwh

# CodeCarbon's emissions.csv header (2.x), in its order.
CODECARBON_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "project_name",
    "run_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "on_cloud",
    "pue",
)


@dataclass(frozen=True)
class RunReport:
    """The figures a report needs, read from one CarbonTrackedJob."""

    namespace: str
    name: str
    uid: str
    phase: str
    started_at: dt.datetime | None
    """When the job's resource was created."""
    ended_at: dt.datetime | None
    """When the last telemetry batch arrived (the last moment energy was measured)."""
    steps: int
    energy_j: float
    """GPU energy measured (before PUE)."""
    emissions_g: float
    """Including PUE, with the grid intensity in force during each interval."""
    pue: float
    zone: str
    intensity_g_per_kwh: float | None
    intensity_source: str
    gpu_names: tuple[str, ...]
    """One entry per GPU seen (newest sidecar boot of each pod); empty names where none was reported."""

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max((self.ended_at - self.started_at).total_seconds(), 0.0)


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def run_report(job: CarbonTrackedJob) -> RunReport:
    """The figures of one job, from its metadata, spec and status; a job without status is an error."""
    status = job.status
    meta = job.metadata
    if status is None:
        raise ValueError(f"{meta.get('name', '?')} has no status yet: nothing was measured")
    intensity = status.intensity
    return RunReport(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        phase=str(status.phase or ""),
        started_at=_time(meta.get("creationTimestamp")),
        ended_at=status.telemetry.last_batch_at if status.telemetry else None,
        steps=status.steps,
        energy_j=status.energy_joules,
        emissions_g=status.emissions_grams,
        pue=job.spec.carbon.pue,
        zone=intensity.zone if intensity else (job.spec.carbon.zone or "unknown"),
        intensity_g_per_kwh=intensity.grams_per_kwh if intensity else None,
        intensity_source=intensity.source if intensity else "",
        gpu_names=tuple(g.name for g in status.gpus),
    )


def hardware_used(gpu_names: tuple[str, ...]) -> str:
    """`8 x NVIDIA H100 80GB HBM3` (api.model_card.hardware_used), from one name per GPU seen."""
    return _hardware_used(gpu_models(gpu_names))


def model_card(r: RunReport, training_type: TrainingType) -> dict[str, Any]:
    """The `co2_eq_emissions` metadata block (a dict with that one key)."""
    return {
        "co2_eq_emissions": co2_eq_emissions(r.emissions_g, r.zone, gpu_models(r.gpu_names), training_type)
    }


def model_card_yaml(r: RunReport, training_type: TrainingType) -> str:
    """The block as YAML, ready to paste into a model card's front matter (between the `---` lines)."""
    return yaml.safe_dump(model_card(r, training_type), sort_keys=False, allow_unicode=True)


def _iso(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") if moment else ""


def _rfc3339(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


def codecarbon_row(r: RunReport) -> dict[str, str | float | int]:
    """One emissions.csv row; unknown columns are empty strings."""
    duration = r.duration_s
    emissions_kg = r.emissions_g / 1000
    gpu_kwh = kwh(r.energy_j)
    models = hardware_used(r.gpu_names) if r.gpu_names else ""
    row: dict[str, str | float | int] = dict.fromkeys(CODECARBON_COLUMNS, "")
    row.update(
        timestamp=_iso(r.ended_at),
        project_name=r.namespace,
        run_id=r.uid or f"{r.namespace}/{r.name}",
        emissions=emissions_kg,
        gpu_energy=gpu_kwh,
        energy_consumed=gpu_kwh * r.pue,  # facility energy: emissions = energy_consumed x intensity
        region=r.zone,
        gpu_count=len(r.gpu_names),
        gpu_model=models,
        tracking_mode="process",  # the job's own GPUs, not the whole machine
        pue=r.pue,
    )
    if duration:
        row.update(duration=duration, emissions_rate=emissions_kg / duration, gpu_power=r.energy_j / duration)
    elif duration is not None:
        row.update(duration=duration)
    return row


def codecarbon_csv(r: RunReport) -> str:
    """Header and one row, as CodeCarbon writes emissions.csv."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CODECARBON_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerow(codecarbon_row(r))
    return out.getvalue()


def as_json(r: RunReport, training_type: TrainingType) -> dict[str, Any]:
    """The report as one JSON object: the job, its totals in base units, and the model-card block."""
    return {
        "namespace": r.namespace,
        "name": r.name,
        "uid": r.uid,
        "phase": r.phase,
        "startedAt": _rfc3339(r.started_at),
        "endedAt": _rfc3339(r.ended_at),
        "durationSeconds": r.duration_s,
        "steps": r.steps,
        "energyJoules": r.energy_j,
        "energyKwh": kwh(r.energy_j),
        "emissionsGrams": r.emissions_g,
        "pue": r.pue,
        "zone": r.zone,
        "intensity": {"gramsPerKwh": r.intensity_g_per_kwh, "source": r.intensity_source},
        "gpuCount": len(r.gpu_names),
        "hardwareUsed": hardware_used(r.gpu_names),
        **model_card(r, training_type),
    }
