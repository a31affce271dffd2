"""Annual average grid carbon intensity per zone: the embedded default.

Source: Ember, Yearly Electricity Data, lifecycle carbon intensity of electricity generation, year
2023, in gCO2e/kWh, as republished by Our World in Data ("Carbon intensity of electricity
generation", grapher `carbon-intensity-electricity`) and, for PL, SE and NO, Ember's 2023 EU and
global figures. Only values that were checked against that source are listed; a zone that is not
listed falls back to the 2023 world average (481 g/kWh, Ember) and says so in the status, rather
than borrowing a neighbour's figure. Live providers (Electricity Maps, WattTime) cover sub-national
grids such as US balancing authorities, which an annual country table cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "static:ember-2023"
WORLD_AVERAGE_G_PER_KWH = 481.0

COUNTRY_G_PER_KWH: dict[str, float] = {
    "AR": 354, "AT": 111, "AU": 549, "BA": 600, "BD": 691, "BE": 138, "BG": 335, "BO": 532, "BR": 98,
    "CA": 170, "CL": 291, "CN": 582, "CO": 260, "CR": 53, "CY": 534, "CZ": 450, "DE": 381, "DK": 152,
    "EC": 150, "EE": 417, "EG": 570, "FI": 79, "FR": 56, "GE": 168, "GR": 337, "HR": 205, "HU": 204,
    "IE": 291, "IN": 713, "IR": 655, "NO": 30, "PL": 662, "SE": 41, "SV": 271,
}  # fmt: skip

# Cloud regions (the node label topology.kubernetes.io/region) -> the grid they draw from.
REGION_ZONE: dict[str, str] = {
    # AWS
    "eu-central-1": "DE", "eu-west-1": "IE", "eu-west-3": "FR", "eu-north-1": "SE", "ca-central-1": "CA",
    "sa-east-1": "BR", "ap-south-1": "IN", "ap-southeast-2": "AU", "cn-north-1": "CN", "cn-northwest-1": "CN",
    # Google Cloud
    "europe-west1": "BE", "europe-west3": "DE", "europe-west9": "FR", "europe-north1": "FI",
    "europe-central2": "PL", "northamerica-northeast1": "CA", "southamerica-east1": "BR", "asia-south1": "IN",
    "australia-southeast1": "AU",
    # Azure
    "germanywestcentral": "DE", "francecentral": "FR", "swedencentral": "SE", "northeurope": "IE",
    "norwayeast": "NO", "polandcentral": "PL", "canadacentral": "CA", "brazilsouth": "BR",
    "centralindia": "IN", "australiaeast": "AU",
}  # fmt: skip


@dataclass(frozen=True)
class Intensity:
    g_per_kwh: float
    zone: str
    source: str


def zone_for(zone: str | None, region: str | None) -> str:
    """The grid zone: the spec's, else the node region's grid, else the region name itself."""
    if zone:
        return zone
    if region:
        return REGION_ZONE.get(region, region)
    return "unknown"


def lookup(zone: str) -> Intensity:
    key = zone.upper()
    if key in COUNTRY_G_PER_KWH:
        return Intensity(COUNTRY_G_PER_KWH[key], key, SOURCE)
    mapped = REGION_ZONE.get(zone)
    if mapped:
        return Intensity(COUNTRY_G_PER_KWH[mapped], mapped, SOURCE)
    return Intensity(WORLD_AVERAGE_G_PER_KWH, zone, f"{SOURCE}:world-average (zone {zone} not in table)")
