"""What the sidecar does with the operator's answer to a batch: a pure function, tested as a table.

Delivered (2xx): forget what the batch carried. 413: the batch was too large, send half the records
per batch from now on. 400/422: the operator will never take this batch (malformed, or counters it
refuses): drop its step records and keep the cumulative counters, which the next batch carries again.
Anything else (0 = unreachable, 401/403 while a token rotates, 409, 429, 5xx, 503 from a standby) is
kept and sent again after a backoff; counters are cumulative, so a retry never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    DELIVERED = "delivered"
    SHRINK = "shrink"
    DROP_RECORDS = "drop-records"
    RETRY = "retry"


@dataclass(frozen=True)
class Reaction:
    """What the sidecar does after the operator's answer to a batch."""

    action: Action
    max_records: int
    """Step records per batch from now on."""
    back_off: bool
    """Wait the backoff delay (not just the interval) before the next send."""


def reaction_to(status: int, max_records: int) -> Reaction:
    """The reaction to an answer with HTTP `status` (0: unreachable), by the table in the module docstring."""
    if 200 <= status < 300:
        return Reaction(Action.DELIVERED, max_records, back_off=False)
    if status == 413 and max_records > 1:
        return Reaction(Action.SHRINK, max_records // 2, back_off=False)
    if status in (400, 422):
        return Reaction(Action.DROP_RECORDS, max_records, back_off=False)
    return Reaction(Action.RETRY, max_records, back_off=status != 413)
