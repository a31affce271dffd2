"""Emissions arithmetic: energy (J) x PUE x grid intensity (gCO2e/kWh) -> grams CO2e."""

from __future__ import annotations

J_PER_KWH = 3_600_000.0


def emissions_g(energy_j: float, pue: float, intensity_g_per_kwh: float) -> float:
    """Grams CO2e for GPU energy measured at the device: the facility draws pue times as much."""
    return energy_j * pue * intensity_g_per_kwh / J_PER_KWH


def kwh(energy_j: float) -> float:
    return energy_j / J_PER_KWH
