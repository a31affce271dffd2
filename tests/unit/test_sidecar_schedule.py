"""When the sidecar sends: the jittered interval, sooner for the first batch with a record and
for an urgent report, never sooner while backing off. A table over Sidecar._next_send (no sockets)."""

from __future__ import annotations

import pytest

from carbontrack.api.wire import StepRecord
from carbontrack.sidecar.app import JITTER, URGENT_GAP_S, Sidecar
from carbontrack.sidecar.config import SidecarConfig

NOW, DUE = 100.0, 108.0


def sidecar(*, first_sent: bool, pending: bool, urgent: bool, back_off: bool) -> Sidecar:
    s = Sidecar(SidecarConfig(operator_url="", job_namespace="ns", job_name="j", pod_namespace="ns",
                              pod_name="p", backend="none"))  # fmt: skip
    s._first_sent, s._urgent, s.back_off = first_sent, urgent, back_off
    if pending:
        s.state.outbox.add_record(
            StepRecord(step=1, first_step=0, energy_joules=1.0, duration_s=0.1, ended_at=1.0)
        )
    return s


@pytest.mark.parametrize(
    ("first_sent", "pending", "urgent", "back_off", "last_sent", "expected"),
    [
        (True, True, False, False, 95.0, DUE),  # steps wait for the interval
        (False, True, False, False, -float("inf"), NOW),  # the first batch with a record goes at once
        (False, False, False, False, -float("inf"), DUE),  # nothing to say yet
        (True, False, True, False, 95.0, NOW),  # an eval/DP/end report goes at once
        (True, False, True, False, 99.5, 99.5 + URGENT_GAP_S),  # but not closer than the gap
        (False, True, True, True, -float("inf"), DUE),  # backing off: nothing jumps the backoff
    ],
)
def test_when_the_next_batch_goes(
    first_sent: bool, pending: bool, urgent: bool, back_off: bool, last_sent: float, expected: float
) -> None:
    s = sidecar(first_sent=first_sent, pending=pending, urgent=urgent, back_off=back_off)
    assert s._next_send(NOW, DUE, last_sent) == expected


def test_the_interval_is_jittered_within_ten_percent_and_defaults_to_10s() -> None:
    s = sidecar(first_sent=True, pending=False, urgent=False, back_off=False)
    assert s.config.interval_s == 10.0
    draws = [s._jittered_interval() for _ in range(2000)]
    assert min(draws) >= 10.0 * (1 - JITTER) and max(draws) <= 10.0 * (1 + JITTER)
    assert max(draws) - min(draws) > 1.5  # spread, not a constant
