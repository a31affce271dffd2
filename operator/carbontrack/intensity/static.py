"""Annual average grid carbon intensity per zone: the embedded default.

The figures live in grid_intensity.json beside this file, each with its source and year:
- countries (ISO 3166 alpha-2): Ember / Energy Institute lifecycle carbon intensity of electricity
  generation as republished by Our World in Data, 2023 (2022 where 2023 is missing), gCO2e/kWh;
- US states (`US-VA`, ...): EPA eGRID2023 CO2-equivalent total output emission rate;
- Nordic bidding zones (`SE-SE3`, `NO-NO4`, ...): ENTSO-E generation per type, 2025, production-based.
make_table.py regenerates the file and says where each dataset comes from. A zone that is not
listed falls back to the 2023 world average (481 g/kWh, Ember) and says so in the status.
Live providers (Electricity Maps, WattTime) give hourly, consumption-based figures instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

WORLD_AVERAGE_G_PER_KWH = 481.0
_SOURCES = {"ember-owid": "ember", "epa-egrid2023": "epa-egrid", "entsoe-codecarbon": "entsoe"}

# Cloud regions (the node label topology.kubernetes.io/region) -> the grid they draw from.
REGION_ZONE: dict[str, str] = {
    # AWS
    "us-east-1": "US-VA",
    "us-east-2": "US-OH",
    "us-west-1": "US-CA",
    "us-west-2": "US-OR",
    "ca-central-1": "CA",
    "sa-east-1": "BR",
    "eu-central-1": "DE",
    "eu-west-1": "IE",
    "eu-west-2": "GB",
    "eu-west-3": "FR",
    "eu-north-1": "SE-SE3",
    "eu-south-1": "IT",
    "eu-south-2": "ES",
    "ap-south-1": "IN",
    "ap-northeast-1": "JP",
    "ap-northeast-2": "KR",
    "ap-southeast-1": "SG",
    "ap-southeast-2": "AU",
    "cn-north-1": "CN",
    "cn-northwest-1": "CN",
    # Google Cloud
    "us-central1": "US-IA",
    "us-east1": "US-SC",
    "us-east4": "US-VA",
    "us-east5": "US-OH",
    "us-south1": "US-TX",
    "us-west1": "US-OR",
    "us-west2": "US-CA",
    "us-west3": "US-UT",
    "us-west4": "US-NV",
    "northamerica-northeast1": "CA",
    "southamerica-east1": "BR",
    "europe-west1": "BE",
    "europe-west2": "GB",
    "europe-west3": "DE",
    "europe-west4": "NL",
    "europe-west9": "FR",
    "europe-north1": "FI",
    "europe-central2": "PL",
    "asia-south1": "IN",
    "asia-northeast1": "JP",
    "asia-southeast1": "SG",
    "australia-southeast1": "AU",
    # Azure
    "eastus": "US-VA",
    "eastus2": "US-VA",
    "westus": "US-CA",
    "westus2": "US-WA",
    "westus3": "US-AZ",
    "centralus": "US-IA",
    "southcentralus": "US-TX",
    "northcentralus": "US-IL",
    "canadacentral": "CA",
    "brazilsouth": "BR",
    "northeurope": "IE",
    "westeurope": "NL",
    "uksouth": "GB",
    "francecentral": "FR",
    "germanywestcentral": "DE",
    "swedencentral": "SE-SE3",
    "norwayeast": "NO-NO1",
    "polandcentral": "PL",
    "italynorth": "IT",
    "spaincentral": "ES",
    "centralindia": "IN",
    "japaneast": "JP",
    "koreacentral": "KR",
    "southeastasia": "SG",
    "australiaeast": "AU",
}


@dataclass(frozen=True)
class Intensity:
    g_per_kwh: float
    zone: str
    source: str
    known_zone: bool = True
    """False when the zone is in no table and the figure is the world average (a misspelt zone)."""


@cache
def zone_table() -> dict[str, tuple[float, str]]:
    """zone -> (gCO2e/kWh, source label with year)."""
    raw = json.loads(Path(__file__).with_name("grid_intensity.json").read_text())["zones"]
    return {
        zone: (float(row["gPerKwh"]), f"static:{_SOURCES.get(row['source'], row['source'])}-{row['year']}")
        for zone, row in raw.items()
    }


def zone_for(zone: str | None, region: str | None) -> str:
    """The grid zone: the spec's, else the node region's grid, else the region name itself."""
    if zone:
        return zone
    if region:
        return REGION_ZONE.get(region, region)
    return "unknown"


def lookup(zone: str) -> Intensity:
    rows = zone_table()
    key = REGION_ZONE.get(zone, zone)
    key = key if key in rows else key.upper()
    if key in rows:
        value, source = rows[key]
        return Intensity(value, key, source)
    return Intensity(
        WORLD_AVERAGE_G_PER_KWH, zone, f"static:ember-2023:world-average (zone {zone} not in table)", False
    )
