"""Conditions follow the API conventions: one per type, others' kept, transition time only on change."""

from __future__ import annotations

from carbontrack.state.conditions import set_condition

OTHER = {"type": "DataValidated", "status": "True", "reason": "Checked", "message": "ok",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip


def test_other_writers_conditions_are_kept() -> None:
    out = set_condition([OTHER], "Ready", True, "JobRunning", "1 of 2 workers", 3)
    assert [c["type"] for c in out] == ["DataValidated", "Ready"]
    assert out[0] == OTHER and out[1]["observedGeneration"] == 3


def test_transition_time_moves_only_when_status_changes() -> None:
    first = set_condition(None, "Ready", True, "JobRunning", "a", 1)
    first[0]["lastTransitionTime"] = "2026-01-01T00:00:00Z"
    same = set_condition(first, "Ready", True, "GatesPassed", "b", 2)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same[0]["reason"] == "GatesPassed"
    flipped = set_condition(same, "Ready", False, "GateFailed", "c", 2)
    assert flipped[0]["lastTransitionTime"] != "2026-01-01T00:00:00Z" and flipped[0]["status"] == "False"
    assert len(flipped) == 1
