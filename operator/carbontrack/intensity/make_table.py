"""Regenerate grid_intensity.json from the public datasets CodeCarbon 3.3.2 redistributes.

    pip install -e '.[bench]' && python -m carbontrack.intensity.make_table

Sources, each recorded per zone in the JSON:
- countries: Ember / Energy Institute lifecycle carbon intensity of electricity generation, as
  republished by Our World in Data, year per country (2023 for most, 2022 where 2023 is missing);
  codecarbon/data/private_infra/global_energy_mix.json.
- US states: EPA eGRID2023, annual CO2-equivalent total output emission rate (field STC2ERTA),
  lbs/MWh converted to g/kWh; codecarbon/data/private_infra/2023/usa_emissions.json.
- Nordic bidding zones (SE1-SE4, NO1-NO5): ENTSO-E actual generation per production type, 2025,
  production-based, as derived by CodeCarbon (see that file's metadata); a lower bound where its
  coverage is below 100 %.
A sample of countries agrees with Our World in Data's own table (DE 381, FR 56, PL 662, SE 41, IN 713,
CN 582, BR 98, CA 170).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
OUT = Path(__file__).with_name("grid_intensity.json")


def main() -> None:
    import pycountry

    data = resources.files("codecarbon") / "data" / "private_infra"
    zones: dict[str, dict[str, object]] = {}
    mix = json.loads((data / "global_energy_mix.json").read_text())
    for iso3, row in sorted(mix.items()):
        country = pycountry.countries.get(alpha_3=iso3)
        value = row.get("carbon_intensity")
        if country is None or not value or row.get("year", 0) < 2022:
            continue
        zones[country.alpha_2] = {
            "gPerKwh": round(float(value), 1),
            "year": row["year"],
            "source": "ember-owid",
        }
    usa = json.loads((data / "2023" / "usa_emissions.json").read_text())
    for state, row in sorted(usa.items()):
        if state.startswith("_"):
            continue
        zones[f"US-{row['regionCode']}"] = {
            "gPerKwh": round(row["emissions"] * LBS_PER_MWH_TO_G_PER_KWH, 1),
            "year": 2023,
            "source": "epa-egrid2023",
        }
    nordic = json.loads((data / "nordic_emissions.json").read_text())["data"]
    for zone, row in sorted(nordic.items()):
        if zone[:2] in ("SE", "NO") and zone[2:].isdigit():
            zones[f"{zone[:2]}-{zone}"] = {
                "gPerKwh": row["emission_factor"],
                "year": row["year"],
                "source": "entsoe-codecarbon",
            }
    OUT.write_text(json.dumps({"zones": zones}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(zones)} zones to {OUT}")


if __name__ == "__main__":
    main()
