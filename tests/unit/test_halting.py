"""Halts that checkpoint: when the workers of a halting job are stopped (core.halting), and how the
judgement applies it (core.evaluation): exact values, restart-safe (everything from status)."""

from __future__ import annotations

import datetime as dt

import pytest

from carbontrack.api.contract import Phase
from carbontrack.api.crd import CheckpointStatus, HaltStatus
from carbontrack.core.rollout import halting
from carbontrack.core.rollout.evaluation import JobScale, evaluate
from carbontrack.core.rollout.promotion import State
from tests.cases.evaluation import SPEC, canary_aggregate, inputs

T0 = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)


def at(s: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def ck(step: int, s: int) -> CheckpointStatus:
    return CheckpointStatus(step=step, uri=f"/ckpt/{step}", at=at(s))


PENDING = HaltStatus(requested_at=T0, deadline=at(300), step=120)


@pytest.mark.parametrize(
    ("halt", "checkpoint", "now", "stop", "outcome", "event"),
    [
        # a new halt of a job that reports checkpoints: ask, keep the workers running
        (None, ck(100, -50), 0, False, None, "StopRequested"),
        # a new halt of a job that never reported one: nothing to wait for
        (None, None, 0, True, "NoCheckpointing", None),
        # the old checkpoint (before the request, behind the step reached) does not confirm
        (PENDING, ck(100, -50), 10, False, None, None),
        # a checkpoint reported after the request, from where the job got to: stop now
        (PENDING, ck(121, 12), 12, True, "Checkpointed", "Checkpointed"),
        # reported after the request but of an older step (a late periodic save): not a confirmation
        (PENDING, ck(90, 12), 12, False, None, None),
        # grace over without a checkpoint
        (PENDING, ck(100, -50), 300, True, "GraceExpired", "GraceExpired"),
    ],
)
def test_the_workers_stop_after_a_checkpoint_or_when_the_grace_period_ends(
    halt: HaltStatus | None,
    checkpoint: CheckpointStatus | None,
    now: int,
    stop: bool,
    outcome: str | None,
    event: str | None,
) -> None:
    p = halting.progress(
        wants_stop=True, stopped_before=False, halt=halt, checkpoint=checkpoint, grace_s=300, now=at(now),
        step=120,
    )  # fmt: skip
    assert p.stop_workers is stop
    assert p.halt is not None and p.halt.outcome == outcome
    assert p.halt.requested_at == T0 and p.halt.deadline == at(300)
    assert p.halt.suspended_at == (at(now) if stop else None)
    assert [e.reason for e in p.events] == ([event] if event else [])


def test_a_zero_grace_period_stops_at_once_and_a_resume_clears_the_halt() -> None:
    p = halting.progress(
        wants_stop=True, stopped_before=False, halt=None, checkpoint=ck(1, 0), grace_s=0, now=T0, step=5
    )
    assert p.stop_workers and p.halt is not None and p.halt.outcome == "NoCheckpointing"
    resumed = halting.progress(
        wants_stop=False, stopped_before=True, halt=p.halt, checkpoint=ck(1, 0), grace_s=0, now=at(9), step=5
    )
    assert resumed == halting.HaltProgress(None, False)


def test_a_halt_an_older_operator_made_stays_stopped_without_a_new_request() -> None:
    p = halting.progress(
        wants_stop=True, stopped_before=True, halt=None, checkpoint=None, grace_s=300, now=T0, step=5
    )
    assert p == halting.HaltProgress(None, True)


def test_a_failed_gate_asks_first_then_suspends_after_the_checkpoint_then_resumes_from_it() -> None:
    agg = canary_aggregate(step=12)
    agg.evals = {"eval_accuracy": (12, 0.5)}  # below minScore 0.8: the quality gate fails
    before = ck(10, -20)
    plan = evaluate(inputs(agg, now=T0, checkpoint=before))
    assert plan.decision.state.phase == Phase.HALTED
    assert plan.scale is None  # the workers keep running: they are saving
    assert plan.halt == HaltStatus(requested_at=T0, deadline=at(300), step=12)
    assert "StopRequested" in [e.reason for e in plan.events]
    halted = plan.decision.state
    # a round later, no checkpoint yet: nothing changes
    waiting = evaluate(inputs(agg, state=halted, now=at(5), halt=plan.halt, checkpoint=before))
    assert waiting.scale is None and waiting.halt == plan.halt
    # the trainer reported its checkpoint at step 13: the Job is suspended
    saved = ck(13, 7)
    done = evaluate(inputs(agg, state=halted, now=at(8), halt=plan.halt, checkpoint=saved))
    assert done.scale == JobScale(1, True)
    assert done.halt is not None and (done.halt.outcome, done.halt.suspended_at) == ("Checkpointed", at(8))
    # an edit that passes the gates resumes, and the resumed pods get the checkpoint
    agg.evals = {"eval_accuracy": (13, 0.9)}
    resumed = evaluate(inputs(agg, state=halted, generation=2, now=at(60), halt=done.halt, checkpoint=saved))
    assert resumed.decision.state.phase == Phase.CANARY
    assert resumed.scale == JobScale(1, False, resume=True, resume_from=saved)
    assert resumed.halt is None


def test_a_halt_with_no_checkpointing_trainer_suspends_in_the_same_round_as_before() -> None:
    agg = canary_aggregate(step=12)
    agg.emissions_g = 40_001.0
    plan = evaluate(inputs(agg, state=State(Phase.RUNNING, 1, 0), replicas=8, now=T0))
    assert plan.scale == JobScale(8, True)
    assert plan.halt is not None and plan.halt.outcome == "NoCheckpointing"
    assert SPEC.halt.grace_period_seconds == 300


def test_the_sidecar_answers_each_datagram_while_a_stop_stands_and_a_poll_always() -> None:
    from types import SimpleNamespace
    from typing import Any

    from carbontrack.sidecar.app import GO, STOP, _MarkerProtocol
    from carbontrack.sidecar.markers import parse
    from carbontrack.sidecar.state import SidecarState

    sent: list[tuple[bytes, Any]] = []
    state = SimpleNamespace(stop_requested=False, job_json=b"")
    state.control = lambda: SidecarState.control(state)  # type: ignore[arg-type]
    fake: Any = SimpleNamespace(state=state, on_datagram=parse)
    proto = _MarkerProtocol(fake)
    proto.connection_made(SimpleNamespace(sendto=lambda data, addr: sent.append((data, addr))))  # type: ignore[arg-type]
    step = b'{"v":1,"c":"c","q":1,"t":0,"k":"step","s":3}'
    poll = b'{"v":1,"c":"c","q":2,"t":0,"k":"poll","s":3}'
    proto.datagram_received(step, ("127.0.0.1", 5000))
    proto.datagram_received(poll, ("127.0.0.1", 5000))
    fake.state.stop_requested = True
    proto.datagram_received(step, ("127.0.0.1", 5001))
    assert sent == [(GO, ("127.0.0.1", 5000)), (STOP, ("127.0.0.1", 5001))]


def test_a_dirty_grid_pause_asks_first_and_stops_the_workers_after_the_checkpoint() -> None:
    agg = canary_aggregate(step=12)
    running = State(Phase.RUNNING, 1, 0)
    before = ck(10, -20)
    plan = evaluate(inputs(agg, state=running, replicas=8, now=T0, checkpoint=before, grid_hold=True))
    assert plan.decision.state.phase == Phase.RUNNING  # the handler records the pause once stopped
    assert plan.scale is None and plan.halt == HaltStatus(requested_at=T0, deadline=at(300), step=12)
    assert "StopRequested" in [e.reason for e in plan.events]
    saved = ck(13, 7)
    done = evaluate(
        inputs(agg, state=running, replicas=8, now=at(8), halt=plan.halt, checkpoint=saved, grid_hold=True)
    )
    assert done.scale == JobScale(8, True)
    assert done.halt is not None and (done.halt.outcome, done.halt.suspended_at) == ("Checkpointed", at(8))
    # the grid turned clean before the checkpoint came: the request is withdrawn, nothing stops
    clean = evaluate(inputs(agg, state=running, replicas=8, now=at(5), halt=plan.halt, checkpoint=before))
    assert clean.scale is None and clean.halt is None


def test_only_a_halt_or_a_resume_moves_the_workers_not_a_resize() -> None:
    agg = canary_aggregate(step=12)
    grow = evaluate(inputs(agg, state=State(Phase.PROMOTING, 0, 0), replicas=1, now=T0))
    assert grow.scale is not None and not grow.scale.suspend and grow.workers_moved is False
    agg.emissions_g = 40_001.0  # over budget with no checkpointing trainer: stopped in this round
    stop = evaluate(inputs(agg, state=State(Phase.RUNNING, 1, 0), replicas=8, now=T0))
    assert stop.scale == JobScale(8, True) and stop.workers_moved is True
