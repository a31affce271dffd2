"""The sidecar's answer to each operator response, as a table."""

from __future__ import annotations

import pytest

from carbontrack.sidecar.policy import Action, Reaction, reaction_to


@pytest.mark.parametrize(
    ("status", "max_records", "want"),
    [
        (200, 5000, Reaction(Action.DELIVERED, 5000, back_off=False)),
        (413, 5000, Reaction(Action.SHRINK, 2500, back_off=False)),
        (413, 1, Reaction(Action.RETRY, 1, back_off=False)),  # cannot shrink further: resend later
        (400, 5000, Reaction(Action.DROP_RECORDS, 5000, back_off=False)),
        (422, 100, Reaction(Action.DROP_RECORDS, 100, back_off=False)),
        (0, 5000, Reaction(Action.RETRY, 5000, back_off=True)),  # unreachable
        (401, 5000, Reaction(Action.RETRY, 5000, back_off=True)),  # a token rotating
        (409, 5000, Reaction(Action.RETRY, 5000, back_off=True)),
        (429, 5000, Reaction(Action.RETRY, 5000, back_off=True)),
        (503, 5000, Reaction(Action.RETRY, 5000, back_off=True)),  # a standby replica
        (500, 5000, Reaction(Action.RETRY, 5000, back_off=True)),
    ],
)
def test_response_policy(status: int, max_records: int, want: Reaction) -> None:
    assert reaction_to(status, max_records) == want
