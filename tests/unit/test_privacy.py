"""Privacy accounting: epsilon from DP-SGD parameters by the accountant, over global steps."""

from __future__ import annotations

import pytest

from carbontrack.core.gates.privacy import epsilon


def test_no_steps_no_privacy_loss() -> None:
    assert epsilon(1.1, 0.01, 0, 1e-5) == 0.0


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta", "accountant", "expected"),
    [
        (1.1, 0.01, 1000, 1e-5, "rdp", 1.7117701662429),
        (1.1, 0.01, 20000, 1e-5, "rdp", 8.370305515608674),
        (1.1, 0.01, 1000, 1e-5, "pld", 1.5153702481094293),
    ],
)
def test_epsilon_matches_the_accountant(
    sigma: float, q: float, steps: int, delta: float, accountant: str, expected: float
) -> None:
    assert epsilon(sigma, q, steps, delta, accountant) == pytest.approx(expected, rel=1e-9)  # type: ignore[arg-type]


def test_epsilon_grows_with_steps_and_pld_is_tighter_than_rdp() -> None:
    assert epsilon(1.1, 0.01, 500, 1e-5) < epsilon(1.1, 0.01, 1000, 1e-5)
    assert epsilon(1.1, 0.01, 1000, 1e-5, "pld") < epsilon(1.1, 0.01, 1000, 1e-5, "rdp")
