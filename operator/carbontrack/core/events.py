"""What the pure core asks the edges to tell people: Kubernetes Events and condition updates, as data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on the CarbonTrackedJob."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ConditionUpdate:
    """A condition to set on the CarbonTrackedJob's status."""

    type: str
    status: bool
    reason: str
    message: str
