"""Halts that checkpoint: when a job that must stop is actually suspended, as a pure function.

A halt (a failed gate, a budget, a rejection, spec.suspend, a pause that suspends) first asks the
trainers to save: the stop request rides on the operator's answer to each telemetry batch, the sidecar
relays it to the client (`should_stop()`), and the trainer reports the checkpoint it saved
(`report_checkpoint`). The workers are stopped (the Job suspended, or, under a queue controller, its
workload deactivated: the caller decides how) as soon as one of these holds:

- a checkpoint was reported after the request, at or past the step the job had reached (Checkpointed);
- the grace period (spec.halt.gracePeriodSeconds) is over (GraceExpired);
- the job never reported a checkpoint, or the grace period is 0: no trainer of it speaks the
  checkpoint protocol, so there is nothing to wait for (NoCheckpointing).

The halt lives in status (`HaltStatus`), so an operator restarted half-way keeps the same deadline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from carbontrack.api.crd import CheckpointStatus, HaltStatus
from carbontrack.core.events import Event


@dataclass(frozen=True)
class HaltProgress:
    """Where a halt stands after this round, and whether the workers stop now."""

    halt: HaltStatus | None
    """status.halt after this round (None: no halt, or the job resumed)."""
    stop_workers: bool
    """Stop the workers now (or keep them stopped)."""
    events: tuple[Event, ...] = ()


def confirmed(halt: HaltStatus, checkpoint: CheckpointStatus | None) -> bool:
    """A checkpoint reported after the stop request, from where the job had got to."""
    return checkpoint is not None and checkpoint.at >= halt.requested_at and checkpoint.step >= halt.step


def progress(
    *,
    wants_stop: bool,
    stopped_before: bool,
    halt: HaltStatus | None,
    checkpoint: CheckpointStatus | None,
    grace_s: int,
    now: dt.datetime,
    step: int,
) -> HaltProgress:
    """One round of a halt. `wants_stop`: the judgement says the job is held stopped; `stopped_before`:
    it was held stopped before this round with no halt recorded (an older operator's halt)."""
    if not wants_stop:
        return HaltProgress(None, False)
    if halt is None:
        if stopped_before:
            return HaltProgress(None, True)
        deadline = now + dt.timedelta(seconds=grace_s)
        halt = HaltStatus(requested_at=now, deadline=deadline, step=step)
        if checkpoint is None or grace_s == 0:
            done = replace_halt(halt, now, "NoCheckpointing")
            return HaltProgress(done, True)
        message = (
            f"asked the trainers to checkpoint at step {step}; the workers stop after a checkpoint is "
            f"reported, or in {grace_s} s"
        )
        return HaltProgress(halt, False, (Event("Normal", "StopRequested", message),))
    if halt.suspended_at is not None:
        return HaltProgress(halt, True)
    if confirmed(halt, checkpoint):
        assert checkpoint is not None
        message = f"checkpoint at step {checkpoint.step} saved ({checkpoint.uri}): stopping the workers"
        return HaltProgress(
            replace_halt(halt, now, "Checkpointed"), True, (Event("Normal", "Checkpointed", message),)
        )
    if now >= halt.deadline:
        grace = int((halt.deadline - halt.requested_at).total_seconds())
        message = f"no checkpoint reported within {grace} s of the stop request: stopping the workers"
        return HaltProgress(
            replace_halt(halt, now, "GraceExpired"), True, (Event("Warning", "GraceExpired", message),)
        )
    return HaltProgress(halt, False)


def replace_halt(halt: HaltStatus, now: dt.datetime, outcome: str) -> HaltStatus:
    return halt.model_copy(update={"suspended_at": now, "outcome": outcome})


def workers_stopped(held: bool, halt: HaltStatus | None) -> bool:
    """Whether the workers are stopped now: held stopped, and the halt (if one is recorded) done."""
    return held and (halt is None or halt.suspended_at is not None)


def stop_requested(halt: HaltStatus | None) -> bool:
    """What the operator answers sidecars: a halt is recorded (asking, or already stopped)."""
    return halt is not None


__all__ = ["HaltProgress", "confirmed", "progress", "stop_requested", "workers_stopped"]
