"""Which intensity provider a job uses: its spec's, else the operator's default (chart carbon.provider)."""

from __future__ import annotations

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.state.config import OperatorConfig
from carbontrack.state.intensity_resolution import live_provider
from tests.cases.crs import minimal_spec


def spec(intensity: dict[str, str]) -> CarbonTrackedJobSpec:
    return CarbonTrackedJobSpec.model_validate(minimal_spec(carbon={"intensity": intensity}))


def test_unset_provider_takes_the_operators_default() -> None:
    cfg = OperatorConfig(intensity_provider="electricitymaps", intensity_secret="em-key")
    assert live_provider(spec({}), cfg) == ("electricitymaps", "em-key")


def test_an_explicit_static_wins_over_a_live_default() -> None:
    cfg = OperatorConfig(intensity_provider="electricitymaps", intensity_secret="em-key")
    assert live_provider(spec({"provider": "static"}), cfg) == (None, None)


def test_the_specs_provider_and_secret_win() -> None:
    cfg = OperatorConfig(intensity_provider="electricitymaps", intensity_secret="em-key")
    assert live_provider(spec({"provider": "watttime", "secretName": "wt"}), cfg) == ("watttime", "wt")


def test_no_key_means_the_static_table() -> None:
    assert live_provider(spec({"provider": "watttime"}), OperatorConfig()) == (None, None)
    assert live_provider(spec({}), OperatorConfig()) == (None, None)
