"""A Job's end reaches its CarbonTrackedJob's phase even when a judgement round writes over the watch's
one write: every round checks what the watch saw (controller.job_watch.ended_patch)."""

from __future__ import annotations

import pytest

from carbontrack.api.contract import Phase
from carbontrack.controller.job_watch import ended_patch

pytestmark = pytest.mark.unit

KEY = ("ml", "llama")
ENDED = {KEY: (Phase.SUCCEEDED, "the training Job completed")}


def test_a_round_that_finds_the_phase_written_over_writes_the_end_again() -> None:
    """The watch wrote Succeeded with its Ready condition; a round that had read status before wrote its
    judged phase over it: the next round writes the end again, condition and all."""
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False", "reason": "Succeeded"}]}
    found = ended_patch(ENDED, KEY, status, 3)
    assert found is not None
    patch, phase = found
    assert phase is Phase.SUCCEEDED and patch["phase"] == "Succeeded"
    (ready,) = patch["conditions"]
    fields = ("type", "status", "reason", "message", "observedGeneration")
    assert [ready[f] for f in fields] == ["Ready", "False", "Succeeded", "the training Job completed", 3]


def test_nothing_is_written_while_the_job_runs_or_once_status_says_it_ended() -> None:
    assert ended_patch({}, KEY, {"phase": "Running"}, 3) is None
    assert ended_patch(ENDED, KEY, {"phase": "Succeeded"}, 3) is None
    assert ended_patch(ENDED, ("ml", "other"), {"phase": "Running"}, 3) is None
